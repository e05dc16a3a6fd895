"""Incoming calls to a provider number (Twilio, Telnyx, Plivo), played by the simulator.

``POST /_sim/provider_incoming {"provider": "twilio", "from": "+1555…", "to": "+1415…", "url": "http://…"}``
plays a caller ringing one of our numbers at the provider: the simulator POSTs the provider's inbound
webhook to ``url`` (the URL pasted into the provider's console), form-encoded with the provider's own
fields and signed with the account's credential from ``provider_accounts[<provider>]``:

- twilio: ``CallSid``, ``AccountSid``, ``From``, ``To``, ``CallStatus``, ``Direction``; signed with
  ``X-Twilio-Signature`` (``auth_token``);
- telnyx (TeXML): the same fields; signed with ``telnyx-signature-ed25519`` + ``telnyx-timestamp``
  (``private_key``, as ``simulator/telnyx_api.py`` keeps it);
- plivo: ``CallUUID``, ``From``, ``To`` (without ``+``), ``Direction``, ``CallStatus``, ``Event``;
  signed with ``X-Plivo-Signature-V3`` + ``X-Plivo-Signature-V3-Nonce`` (``auth_token``);

and plays the XML answer as the provider would: malformed XML or an unknown verb fails the call
(``result: failed``, the provider's "application error"); ``<Reject>`` / ``<Hangup>`` end it
(``rejected`` / ``hung_up``); the stream (TwiML/TeXML ``<Connect><Stream url>``, Plivo ``<Stream>``
with ``bidirectional="true"``) joins the Ultravox call whose ``joinUrl`` it names (a provider-medium
call, ``simulator/providers.py``), which is then answered at once and played like any call.

``"forge": true`` signs with a wrong credential; ``"replay": "<call id>"`` sends the exact request
(body and headers) of an earlier call again. ``GET /_sim/provider_incoming`` lists what each led to.
"""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator import providers
from simulator.config import SimOutcome


if TYPE_CHECKING:
    from starlette.requests import Request

    from simulator.app import Simulator

#: Seconds the provider waits for the webhook's answer (Twilio's default; Telnyx and Plivo are close).
ANSWER_DEADLINE = 15.0
#: How soon (simulated seconds) the agent is on the line once the stream is connected.
JOIN_AFTER = 0.5


def _form(provider: str, call_id: str, caller: str, called: str, account: dict[str, str]) -> list[tuple[str, str]]:
    if provider == 'plivo':
        return [
            ('CallUUID', call_id), ('From', caller.lstrip('+')), ('To', called.lstrip('+')),
            ('Direction', 'inbound'), ('CallStatus', 'ringing'), ('Event', 'StartApp'),
        ]  # fmt: skip
    return [
        ('CallSid', call_id), ('AccountSid', account.get('account_sid', 'AC' + '0' * 32)), ('From', caller),
        ('To', called), ('CallStatus', 'ringing'), ('Direction', 'inbound'),
    ]  # fmt: skip


def _call_id(provider: str) -> str:
    if provider == 'plivo':
        return str(uuid.uuid4())
    if provider == 'telnyx':
        return 'v3:' + uuid.uuid4().hex
    return 'CA' + uuid.uuid4().hex


def _headers(
    provider: str, account: dict[str, str], url: str, form: list[tuple[str, str]], body: bytes
) -> dict[str, str]:
    """The provider's signature headers of a form POST to ``url``."""
    from dialer.providers import plivo, telnyx, twilio  # noqa: PLC0415  only when a call is played

    headers = {'Content-Type': 'application/x-www-form-urlencoded'}
    if provider == 'twilio':
        headers['X-Twilio-Signature'] = twilio.signature(account.get('auth_token', ''), url, form)
    elif provider == 'telnyx':
        timestamp = str(int(time.time()))
        headers['telnyx-signature-ed25519'] = telnyx.sign(account['private_key'], timestamp, body)
        headers['telnyx-timestamp'] = timestamp
    else:
        nonce = uuid.uuid4().hex
        headers['X-Plivo-Signature-V3'] = plivo.signature(account.get('auth_token', ''), url, form, nonce)
        headers['X-Plivo-Signature-V3-Nonce'] = nonce
    return headers


def _forged(provider: str, account: dict[str, str]) -> dict[str, str]:
    if provider == 'telnyx':
        from dialer.providers import telnyx  # noqa: PLC0415

        return {**account, 'private_key': telnyx.new_private_key()}
    return {**account, 'auth_token': 'not-the-account-token'}


class ProviderIncoming:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.played: list[dict[str, Any]] = []
        #: call id -> (url, body, headers) as sent, for replays
        self.sent: dict[str, tuple[str, bytes, dict[str, str]]] = {}

    async def records(self, _request: Request) -> Response:
        return JSONResponse(self.played)

    async def incoming(self, request: Request) -> Response:
        """Play one incoming provider call (control endpoint: no API key)."""
        try:
            ring = await request.json()
            provider = str(ring['provider'])
            replay = ring.get('replay')
            caller, called, url = (str(ring[key]) for key in ('from', 'to', 'url')) if not replay else ('', '', '')
        except (ValueError, KeyError, TypeError):
            return JSONResponse({'detail': 'expected {"provider", "from", "to", "url"} or {"provider", "replay"}'}, 400)
        if provider not in providers.PROVIDERS:
            return JSONResponse({'detail': f'provider must be one of {", ".join(providers.PROVIDERS)}'}, 400)
        if replay:
            if replay not in self.sent:
                return JSONResponse({'detail': f'no call {replay!r} was played'}, 404)
            call_id = str(replay)
            url, body, headers = self.sent[call_id]
        else:
            account = dict(self.sim.config.provider_accounts.get(provider) or {})
            if ring.get('forge'):
                account = _forged(provider, account)
            call_id = _call_id(provider)
            form = _form(provider, call_id, caller, called, account)
            body = urlencode(form).encode()
            headers = _headers(provider, account, url, form, body)
            self.sent[call_id] = (url, body, headers)
        played = {'provider': provider, 'callSid': call_id, **await self._post(provider, url, body, headers)}
        self.played.append(played)
        return JSONResponse(played)

    async def _post(self, provider: str, url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=ANSWER_DEADLINE) as client:
                response = await client.post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            return {'result': 'failed', 'reason': 'the webhook timed out'}
        except httpx.HTTPError as exc:
            return {'result': 'failed', 'reason': f'the webhook is unreachable: {type(exc).__name__}'}
        if not response.is_success:
            return {'result': 'failed', 'status': response.status_code, 'reason': 'the webhook answered an error'}
        try:
            root = ET.fromstring(response.text)  # noqa: S314  our own server's answer, in tests
        except ET.ParseError:
            return {'result': 'failed', 'status': response.status_code, 'reason': 'malformed XML'}
        return {'status': response.status_code, 'xml': response.text, **self._play(provider, root)}

    def _play(self, provider: str, root: ET.Element) -> dict[str, Any]:  # noqa: PLR0911  one return per verb
        if root.tag != 'Response':
            return {'result': 'failed', 'reason': 'the document is not a <Response>'}
        said = ' '.join((verb.text or '').strip() for verb in root if verb.tag in {'Say', 'Speak'})
        for verb in root:
            if verb.tag in {'Say', 'Speak'}:
                continue
            if verb.tag == 'Reject':
                return {'result': 'rejected', 'reason': verb.get('reason', 'rejected')}
            if verb.tag == 'Hangup':
                if provider == 'plivo' and verb.get('reason') == 'rejected':
                    return {'result': 'rejected', 'reason': 'rejected'}
                return {'result': 'hung_up', 'said': said}
            stream = self._stream(provider, verb)
            if stream is None:
                return {'result': 'failed', 'reason': f'<{verb.tag}> is not a verb this simulation knows'}
            return self._join(provider, stream)
        return {'result': 'hung_up', 'said': said}

    @staticmethod
    def _stream(provider: str, verb: ET.Element) -> str | None:
        """The WebSocket URL a stream verb connects the call to ('' when it is a stream that cannot carry an agent)."""
        if provider == 'plivo':
            if verb.tag != 'Stream':
                return None
            two_way = verb.get('bidirectional') == 'true' and verb.get('keepCallAlive') == 'true'
            return (verb.text or '').strip() if two_way else ''
        stream = verb.find('Stream') if verb.tag == 'Connect' else None
        if stream is None:
            return None
        if provider == 'telnyx' and stream.get('bidirectionalMode') not in {None, 'rtp'}:
            return ''
        return stream.get('url', '')

    def _join(self, provider: str, join_url: str) -> dict[str, Any]:
        sim = self.sim
        plan = next((p for p in sim.store.by_id.values() if join_url and p.base.get('joinUrl') == join_url), None)
        if plan is None or plan.medium != provider:
            return {'result': 'failed', 'reason': f'the stream is not a joinable {provider} Ultravox call'}
        if plan.joined_sim is not None:
            # a repeated answer streams to the call already connected: nothing new is created or joined
            return {'result': 'already_joined', 'callId': plan.call_id}
        now, config = time.time(), sim.config
        talk = sim.rng.uniform(config.talk_min, config.talk_max)
        providers.join(plan, SimOutcome.ANSWERED, JOIN_AFTER, talk, now)
        sim.webhooks.schedule(plan)
        return {
            'result': 'created',
            'callId': plan.call_id,
            'agentId': plan.base.get('agentId'),
            'medium': plan.base.get('medium'),
            'firstSpeakerSettings': plan.base.get('firstSpeakerSettings'),
            'templateContext': plan.template_context,
            'metadata': plan.metadata,
        }

    def routes(self) -> list[Route]:
        return [
            Route('/_sim/provider_incoming', self.incoming, methods=['POST']),
            Route('/_sim/provider_incoming', self.records, methods=['GET']),
        ]
