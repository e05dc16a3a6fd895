"""``POST /webhooks/plivo/answer``: the XML a direct-mode Plivo leg runs when the callee answers.

Plivo takes no inline XML on "Make a call": it fetches ``answer_url`` when the call is answered and
runs what it gets (``dialer/providers/plivo.py``). The answer streams the call both ways to the
attempt's Ultravox call: ``<Stream bidirectional="true" keepCallAlive="true"
contentType="audio/x-mulaw;rate=8000">{joinUrl}</Stream>`` (Plivo "AudioStream XML"; Ultravox's
``CallMedium.plivo``).

Where the joinUrl comes from: the answer URL carries only the attempt and its Ultravox call id
(``?a=&c=``, signed by Plivo with the rest of the request, so neither can be forged); the joinUrl
is read here from Ultravox (``GET /api/calls/{id}``). It is a bearer capability to the live call, so
it never travels in a URL (proxies and Plivo's own debug logs record URLs), never lands in Redis, and
is never logged; it exists only in this response. The read also answers a question a URL could
not: whether the call is still waiting. One Ultravox read per answered call is the price.

| request                                          | answer | body                         |
|--------------------------------------------------|--------|------------------------------|
| no direct-mode plivo trunk behind the attempt    | 404    | none                         |
| unsigned or badly signed                         | 401    | none                         |
| signed, attempt no longer on this Ultravox call  | 200    | ``<Hangup/>``                |
| signed, the Ultravox call ended or is gone       | 200    | ``<Hangup/>``                |
| signed, Ultravox unreachable                     | 503    | none (Plivo retries, then hangs up) |
| signed, call waiting                             | 200    | ``<Stream …>{joinUrl}</Stream>`` |
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import structlog
from starlette.responses import Response
from starlette.routing import Route

from campaigns.lifecycle import UnknownCampaignError
from dialer import constants as k
from dialer import metrics
from dialer.provider_trunks import PlivoTrunk
from dialer.providers import verify_callback
from dialer.providers.plivo import ANSWER_PATH, hangup_xml, stream_xml
from dialer.trunks import TrunkConfigError
from dialer.ultravox import CallNotFound, UltravoxError
from workers.inbound import ATTEMPT_ID, CALL_ID


if TYPE_CHECKING:
    from starlette.requests import Request

    from workers.runtime import Runtime


log = structlog.get_logger(__name__)
_XML = 'application/xml'


def plivo_answer_route(rt: Runtime) -> Route:
    async def answer(request: Request) -> Response:
        return await answer_plivo_call(rt, request)

    return Route(ANSWER_PATH, answer, methods=['POST'])


def _counted(verdict: str, response: Response) -> Response:
    metrics.PROVIDER_CALLBACKS.labels(kind='plivo', verdict=f'answer_{verdict}').inc()
    return response


async def answer_plivo_call(rt: Runtime, request: Request) -> Response:  # noqa: PLR0911  one return per table row
    attempt_id, call_id = request.query_params.get('a', ''), request.query_params.get('c', '')
    if not ATTEMPT_ID.fullmatch(attempt_id) or not CALL_ID.fullmatch(call_id):
        return _counted('malformed', Response(status_code=400))
    body = await request.body()
    if len(body) > rt.settings.webhook_max_body:
        return Response(status_code=413)
    name, number, attempt = k.parse_attempt_id(attempt_id)
    try:
        trunk = rt.trunks.get((await rt.configs.get(name)).trunk)
    except (UnknownCampaignError, ValueError, TrunkConfigError):
        return _counted('unknown', Response(status_code=404))
    if not isinstance(trunk, PlivoTrunk) or trunk.mode != 'direct':
        return _counted('unknown', Response(status_code=404))
    if not verify_callback(trunk, str(request.url), request.headers, body, time.time()):
        log.warning('provider_callback_refused', provider='plivo', reason='bad_signature', route='answer')
        return _counted('bad_signature', Response(status_code=401))
    raw = await rt.redis.hget(k.campaign_attempts(name), f'{number}:{attempt}')
    record = json.loads(raw) if raw else {}
    if record.get('st') != 'live' or record.get('call') != call_id:
        # the attempt ended (or moved to another call) while the phone rang: nobody to stream to
        log.info('plivo_answer_hangup', call_id=call_id, reason='attempt_not_live')
        return _counted('stale', Response(hangup_xml(), media_type=_XML))
    try:
        call = await rt.ultravox.get_call(call_id)
    except CallNotFound:
        call = {}
    except UltravoxError as exc:
        log.warning('plivo_answer_deferred', call_id=call_id, reason=type(exc).__name__)
        return _counted('unavailable', Response(status_code=503))
    join_url = call.get('joinUrl')
    if call.get('ended') is not None or not isinstance(join_url, str) or not join_url:
        log.info('plivo_answer_hangup', call_id=call_id, reason='call_ended')
        return _counted('ended', Response(hangup_xml(), media_type=_XML))
    log.info('plivo_answered', call_id=call_id)
    return _counted('streamed', Response(stream_xml(join_url), media_type=_XML))
