"""``POST /inbound/<provider>``: a contact calls back one of our Twilio / Telnyx / Plivo numbers.

The provider POSTs its inbound-call webhook (the number's voice URL / the TeXML application's voice
URL / the Plivo application's answer URL) and plays the XML we answer. We route the caller exactly as
the SIP fallback handler does (``workers/callback_routing.py``: DNC, unknown caller, campaign window),
create the Ultravox call ourselves with the provider medium (``{"twilio": {}}`` ...; Ultravox answers
with a ``joinUrl``) and answer with the provider's stream XML for that ``joinUrl``. The inbound call
is then tracked like a SIP call-back (``workers/callback_tracking.py``) and billed with the provider
rules (no SIP minutes: ``dialer/billing.py``).

What this relies on:
- Seed "phone integration" and Ultravox's "Inbound Calls" guide (fixie-ai/ultradox
  ``telephony/inbound-calls.mdx``): the provider calls our webhook, we create a call with
  ``medium.<provider>: {}`` and the agent speaking first, and connect the provider's call to its
  ``joinUrl``.
- Twilio voice webhook: form post with ``CallSid``, ``From``, ``To`` (E.164), signed with
  ``X-Twilio-Signature`` over the URL configured in the console plus the sorted form fields
  (``dialer/providers/twilio.py``). Answer TwiML ``<Response><Connect><Stream url=…/></Connect></Response>``;
  refuse with ``<Reject reason="rejected"/>``.
- Telnyx TeXML application voice URL: the same Twilio-compatible form fields (``CallSid``, ``From``,
  ``To``), signed with Ed25519 (``telnyx-signature-ed25519`` + ``telnyx-timestamp``,
  ``dialer/providers/telnyx.py``). TeXML ``<Connect><Stream url=… bidirectionalMode="rtp"/>``: the
  ``<Stream>`` noun's ``bidirectionalMode`` is ``mp3`` (default) or ``rtp`` (developers.telnyx.com
  "TeXML verbs: Stream"); Ultravox's seed example shows no attribute, RTP is what a media stream to
  an agent needs both ways. ``<Reject>`` is supported (TeXML/TwiML compatibility table).
- Plivo answer URL: form post with ``CallUUID``, ``From``, ``To`` (numbers often without ``+``),
  signed with ``X-Plivo-Signature-V3`` + ``X-Plivo-Signature-V3-Nonce`` (``dialer/providers/plivo.py``).
  Plivo XML ``<Stream bidirectional="true" keepCallAlive="true" contentType="audio/x-mulaw;rate=8000">
  joinUrl</Stream>`` (Plivo "Audio streaming: Stream XML"); refuse with ``<Hangup reason="rejected"/>``.

Which trunk: the provider trunk whose ``from`` is the called number (``To``); its verification
credential (Twilio ``auth_token``, Telnyx ``public_key``, Plivo ``auth_token``) checks the signature,
over ``<trunk callback_url>/inbound/<provider>`` (the URL pasted into the console, printed by ``dialer
trunks check``), or the URL the request reached when the trunk has no ``callback_url``.

| request                                              | answer                                        |
|------------------------------------------------------|-----------------------------------------------|
| no ``To`` / ``From`` / call id, not a form            | 400                                           |
| ``To`` is no number of a trunk of that provider      | 404                                           |
| unsigned or badly signed                             | 401 (nothing created)                         |
| the same call id again (a provider retry, a replay)  | the first answer again (nothing created)      |
| routed to an agent, call created                     | 200 stream XML for its ``joinUrl``            |
| refused by the policy (DNC, unknown, ended campaign) | 200 reject XML                                |
| Ultravox refused or failed the create                | 200 apology + hang-up XML (logged, counted)   |
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape, quoteattr

import structlog
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.routing import Route

from dialer import constants as k
from dialer import metrics
from dialer.callback_scripts import CallbackScripts, inbound_member
from dialer.callbacks import normalise_number
from dialer.provider_trunks import PROVIDER_KINDS, ProviderTrunk
from dialer.providers import verify_callback
from dialer.trunks import TrunkConfigError
from dialer.ultravox import CreateCallRequest, TransientError, UltravoxError
from workers.callback_routing import Decision, Replayed, decide
from workers.inbound import BadDelivery, read_body


if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.requests import Request

    from workers.runtime import Runtime


log = structlog.get_logger(__name__)

PATH = '/inbound/{provider}'
#: A call id answered once is answered the same way for this long (providers sign no timestamp for
#: Twilio and Plivo, so a captured request stays valid: a day covers any provider retry by far).
ANSWER_TTL_MS = 86_400_000
#: How long a retry waits for the first request of the same call to be answered before giving up (503).
PENDING_WAIT = 3.0
PENDING = '1'
#: A provider's call id: Twilio ``CA…``, Telnyx TeXML ``v3:…``, Plivo a UUID (also part of a Redis key).
PROVIDER_CALL_ID = re.compile(r'[A-Za-z0-9_.:-]{1,128}')
XML = 'application/xml'
_SORRY = 'Sorry, we cannot take your call right now. Please try again later.'


@dataclass(frozen=True, slots=True)
class Dialect:
    """One provider's inbound webhook: its call id field and the XML it plays."""

    call_field: str
    stream: Callable[[str], str]
    reject: str
    sorry: str


def _twiml_stream(join_url: str) -> str:
    return f'<Response><Connect><Stream url={quoteattr(join_url)}/></Connect></Response>'


def _texml_stream(join_url: str) -> str:
    return f'<Response><Connect><Stream url={quoteattr(join_url)} bidirectionalMode="rtp"/></Connect></Response>'


def _plivo_stream(join_url: str) -> str:
    return (
        '<Response><Stream bidirectional="true" keepCallAlive="true" contentType="audio/x-mulaw;rate=8000">'
        f'{escape(join_url)}</Stream></Response>'
    )


DIALECTS: dict[str, Dialect] = {
    'twilio': Dialect(
        'CallSid',
        _twiml_stream,
        '<Response><Reject reason="rejected"/></Response>',
        f'<Response><Say>{_SORRY}</Say><Hangup/></Response>',
    ),
    'telnyx': Dialect(
        'CallSid',
        _texml_stream,
        '<Response><Reject reason="rejected"/></Response>',
        f'<Response><Say>{_SORRY}</Say><Hangup/></Response>',
    ),
    'plivo': Dialect(
        'CallUUID',
        _plivo_stream,
        '<Response><Hangup reason="rejected"/></Response>',
        f'<Response><Speak>{_SORRY}</Speak><Hangup/></Response>',
    ),
}


def inbound_path(provider: str) -> str:
    return PATH.replace('{provider}', provider)


def inbound_url(trunk: ProviderTrunk) -> str | None:
    """The URL to paste into the provider's console for ``trunk``'s number (None: no public base URL)."""
    return f'{trunk.callback_url}{inbound_path(trunk.provider)}' if trunk.callback_url else None


def answered_key(provider: str, call_id: str) -> str:
    """STRING ``1`` while the first request of a provider call is being answered, then its XML answer.
    TTL ``ANSWER_TTL_MS``: a retry or replay of the same call id gets that answer, never a second call."""
    return f'{k.PREFIX}:inbound:{provider}:{call_id}'


def provider_inbound_route(rt: Runtime) -> Route:
    scripts = CallbackScripts(rt.redis, rt.scripts.outbox)

    async def receive(request: Request) -> Response:
        return await receive_provider_inbound(rt, scripts, request, request.path_params['provider'])

    return Route(PATH, receive, methods=['POST'])


def _trunks_for(rt: Runtime, provider: str, number: str | None) -> list[ProviderTrunk]:
    try:
        rt.reload_trunks()  # one stat; a number added to the trunks file is answered without a restart
    except TrunkConfigError as exc:
        log.warning('trunks_reload_failed', error=str(exc))
    return [
        trunk
        for _, trunk in sorted(rt.trunks.trunks.items())
        if isinstance(trunk, ProviderTrunk) and trunk.provider == provider and trunk.caller_id == number
    ]


@dataclass(frozen=True, slots=True)
class Inbound:
    """A verified inbound-call webhook: whose number, which call, who calls."""

    dialect: Dialect
    trunk: ProviderTrunk
    call_id: str
    caller: str | None


async def _verified(rt: Runtime, request: Request, provider: str) -> Inbound:
    """The webhook's form, checked and verified; ``BadDelivery`` otherwise."""
    settings = rt.settings
    dialect = DIALECTS.get(provider)
    if dialect is None:
        raise BadDelivery(404, 'unknown_provider')
    body = await read_body(request, settings.webhook_max_body, settings.webhook_body_timeout)
    form = dict(parse_qsl(body.decode('utf-8', 'replace'), keep_blank_values=True))
    call_id, called = form.get(dialect.call_field, ''), form.get('To')
    if not PROVIDER_CALL_ID.fullmatch(call_id) or not called:
        raise BadDelivery(400, 'malformed')
    trunks = _trunks_for(rt, provider, normalise_number(called, settings.callback_region))
    if not trunks:
        raise BadDelivery(404, 'not_our_number')
    now = time.time()
    for trunk in trunks:  # several trunks may show the same number (other limits): any of their accounts
        if verify_callback(trunk, inbound_url(trunk) or str(request.url), request.headers, body, now):
            return Inbound(dialect, trunk, call_id, normalise_number(form.get('From'), settings.callback_region))
    raise BadDelivery(401, 'bad_signature')


async def receive_provider_inbound(rt: Runtime, scripts: CallbackScripts, request: Request, provider: str) -> Response:
    started = time.perf_counter()
    try:
        inbound = await _verified(rt, request, provider)
    except BadDelivery as exc:
        metrics.CALLBACKS.labels(source=provider if provider in PROVIDER_KINDS else 'other', verdict=exc.reason).inc()
        log.warning('provider_inbound_refused', provider=provider, reason=exc.reason, status=exc.status)
        return Response(status_code=exc.status)
    key = answered_key(provider, inbound.call_id)
    try:
        decision = await decide(rt, scripts, inbound.caller, seen=key, seen_ms=ANSWER_TTL_MS)
    except Replayed:
        return await _answer_again(rt, provider, key)
    response = await _follow(rt, scripts, provider, inbound, decision, key)
    metrics.CALLBACK_ROUTE_SECONDS.observe(time.perf_counter() - started)
    return response


async def _answer_again(rt: Runtime, provider: str, key: str) -> Response:
    """A request for a call already answered (or being answered): the same XML, no second call."""
    deadline = time.monotonic() + PENDING_WAIT
    while True:
        stored = await rt.redis.get(key)
        if stored is not None and stored != PENDING:
            metrics.CALLBACKS.labels(source=provider, verdict='repeated').inc()
            return Response(stored, media_type=XML)
        if stored is None or time.monotonic() > deadline:
            metrics.CALLBACKS.labels(source=provider, verdict='repeat_unanswered').inc()
            return Response(status_code=503, headers={'Retry-After': '1'})
        await asyncio.sleep(0.05)


def _create_request(provider: str, answer: dict[str, Any]) -> CreateCallRequest:
    """The Create Call request an answer of the fallback handler stands for, on the provider medium."""
    if 'startAgentCall' in answer:
        body = dict(answer['startAgentCall'])
        agent_id = str(body.pop('agentId'))
        path = f'/api/agents/{quote(agent_id, safe="")}/calls'
    else:
        body, path = dict(answer['startCall']), '/api/calls'
    body['medium'] = {provider: {}}
    return CreateCallRequest(path=path, params={}, body=body)


async def _follow(
    rt: Runtime, scripts: CallbackScripts, provider: str, inbound: Inbound, decision: Decision, key: str
) -> Response:
    """Create the call the decision asks for and answer with the provider's XML."""
    dialect, trunk = inbound.dialect, inbound.trunk
    config, callback_id = decision.config, decision.callback_id
    member = inbound_member(config.name, callback_id) if config is not None and callback_id is not None else None
    if 'reject' in decision.answer:
        metrics.CALLBACKS.labels(source=provider, verdict=decision.verdict).inc()
        return _xml(rt, key, dialect.reject)
    try:
        call, join_url = await _create_in_time(rt, provider, decision.answer)
    except UltravoxError as exc:
        maybe = isinstance(exc, TransientError) and exc.maybe_created
        metrics.CALLBACKS.labels(source=provider, verdict='create_failed').inc()
        log.warning('provider_inbound_create_failed', provider=provider, trunk=trunk.name, error=str(exc), maybe=maybe)
        after = None
        if member is not None and config is not None and not maybe:
            # surely not created: recorded now (one that may exist is left to the tracker to find)
            after = _missing(scripts, member, config.trunk)
        return _xml(rt, key, dialect.sorry, after)
    metrics.CALLBACKS.labels(source=provider, verdict=decision.verdict).inc()
    log.info('provider_inbound_answered', provider=provider, trunk=trunk.name, verdict=decision.verdict)
    live = None
    if member is not None and config is not None:
        live = _live(scripts, member, str(call.get('callId')), config.trunk, rt.live_poll_ms)
    return _xml(rt, key, dialect.stream(join_url), live)


async def _create_in_time(rt: Runtime, provider: str, answer: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The call and its ``joinUrl``, within ``DIALER_PROVIDER_ANSWER_DEADLINE``: the provider stops
    waiting for our answer at its own timeout, and the caller should hear our apology, not its error."""
    deadline = rt.settings.provider_answer_deadline
    try:
        async with asyncio.timeout(deadline):
            call = await rt.ultravox.create_call(_create_request(provider, answer))
    except TimeoutError:
        raise TransientError(f'Ultravox did not answer the create within {deadline:g} s', maybe_created=True) from None
    join_url = call.get('joinUrl')
    if not isinstance(join_url, str) or not join_url:
        raise TransientError('the created call has no joinUrl', maybe_created=True)
    return call, join_url


def _missing(scripts: CallbackScripts, member: str, trunk: str) -> Callable[[], Any]:
    async def run() -> None:
        await scripts.missing(member, trunk)

    return run


def _live(scripts: CallbackScripts, member: str, call_id: str, trunk: str, poll_ms: int) -> Callable[[], Any]:
    async def run() -> None:
        # the tracker follows the call by its id at once, without looking it up by metadata
        await scripts.live(member, call_id, trunk, poll_ms)

    return run


def _xml(rt: Runtime, key: str, xml: str, after: Callable[[], Any] | None = None) -> Response:
    """Answer now; remember the answer for retries (and record the call) once it has been sent."""

    async def remember() -> None:
        await rt.redis.set(key, xml, xx=True, keepttl=True)
        if after is not None:
            await after()

    return Response(xml, media_type=XML, background=BackgroundTask(remember))
