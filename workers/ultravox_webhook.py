"""``POST /webhooks/ultravox``: Ultravox's ``call.ended`` / ``call.billed`` deliveries, taken as hints.

A webhook never records an outcome or billing itself: the payload is only as trustworthy as the
secret that signed it, and a signed event may still name the wrong call. A delivery whose call is the
attempt's recorded call makes the trackers fetch that call *now* (its tracking entry is made due), and
the outcome and billing are taken from the API's answer. Anything else changes nothing:

| delivery                                               | answer | effect                         |
|--------------------------------------------------------|--------|--------------------------------|
| unsigned, badly signed, stale, future, replayed        | 401    | none                           |
| too large (413), too slow (408)                        | 4xx    | none                           |
| signed but not a dialer call event, or odd values      | 400    | none                           |
| signed, for a campaign or attempt we do not have       | 404    | none                           |
| signed, before the attempt's create is recorded        | 409    | none (Ultravox delivers again) |
| signed, naming a call that is not the attempt's call   | 202    | none (counted, logged)         |
| signed, for the attempt's own call                     | 202    | the call is polled at once     |

Replays are recognised by the delivery itself (digest of body + timestamp), whatever the spelling
of its signature header.

Cost: a fleet with webhooks receives two deliveries per call, so the whole decision for a delivery
of a dialer call (replay check, attempt lookup, nudge, "webhooks arrive" mark) is one Lua script,
``dialer/lua/nudge.lua``: one Redis round trip instead of four (bench/RESULTS.md, issue 16).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import structlog
from starlette.responses import JSONResponse, Response

from dialer import constants as k
from dialer import metrics
from dialer.logs import masked_attempt
from workers.calls import tracking_member
from workers.inbound import ATTEMPT_ID, CALL_ID, BadDelivery, signed_body


if TYPE_CHECKING:
    from starlette.requests import Request

    from workers.runtime import Runtime


log = structlog.get_logger(__name__)

EVENTS = frozenset({'call.ended', 'call.billed'})


def _parse(body: bytes) -> tuple[str, str | None, str]:
    """(event, attempt id, call id) of a dialer call event, or ``BadDelivery(400)``. The attempt id is
    None for a call-back (an inbound call: its trackers find and poll it, workers/callback_tracking.py)."""
    try:
        payload: Any = json.loads(body)
    except (ValueError, RecursionError):
        # RecursionError: absurdly deep nesting; ValueError also covers integers too long to convert
        raise BadDelivery(400, 'malformed') from None
    if not isinstance(payload, dict) or not isinstance(payload.get('call'), dict):
        raise BadDelivery(400, 'malformed')
    event, call = payload.get('event'), payload['call']
    metadata = call.get('metadata')
    attempt_id = metadata.get('attempt_id') if isinstance(metadata, dict) else None
    call_id = call.get('callId')
    if not isinstance(event, str) or event not in EVENTS:
        raise BadDelivery(400, 'unknown_event')
    if isinstance(metadata, dict) and metadata.get('direction') == 'inbound' and isinstance(call_id, str):
        return event, None, call_id
    if not isinstance(attempt_id, str) or not ATTEMPT_ID.fullmatch(attempt_id):
        raise BadDelivery(400, 'not_a_dialer_call')
    if not isinstance(call_id, str) or not CALL_ID.fullmatch(call_id):
        raise BadDelivery(400, 'malformed')
    return event, attempt_id, call_id


async def _nudge(rt: Runtime, event: str, attempt_id: str, call_id: str, digest: str) -> str:
    """Make the trackers poll the attempt's call now, if the event is about that call, in one step with
    the replay check (``dialer/lua/nudge.lua``). Returns a verdict; refusals raise ``BadDelivery``."""
    settings = rt.settings
    verdict, recorded = await rt.scripts.nudge(
        attempt_id,
        call_id,
        tracking_member(attempt_id, call_id),
        digest,
        replay_ms=int(settings.webhook_max_age * 2000),
        live_window_ms=int(settings.webhooks_live_window * 1000),
    )
    if verdict in _REFUSALS:
        raise BadDelivery(*_REFUSALS[verdict])
    if verdict == 'foreign_call':
        metrics.WEBHOOK_MISMATCHES.labels(event=event).inc()
        log.warning(
            'webhook_foreign_call',
            webhook_event=event,
            attempt_id=masked_attempt(attempt_id),
            call_id=call_id,
            recorded_call_id=recorded or None,
        )
    return verdict


#: Verdicts of nudge.lua that refuse the delivery: (status, reason). A 409 makes Ultravox deliver the
#: event again (the call ended before its create was recorded).
_REFUSALS = {
    'replayed': (401, 'replayed'),
    'unknown_campaign': (404, 'unknown_campaign'),
    'unknown_attempt': (404, 'unknown_attempt'),
    'not_yet_recorded': (409, 'not_yet_recorded'),
}


async def _not_replayed(rt: Runtime, digest: str) -> None:
    """The replay check alone, for deliveries that go no further than it (odd payloads, call-backs)."""
    window = int(rt.settings.webhook_max_age * 2000)
    if not await rt.redis.set(k.webhook_seen(digest), '1', nx=True, px=window):
        raise BadDelivery(401, 'replayed')


async def receive_ultravox_webhook(rt: Runtime, request: Request) -> Response:
    event = 'unknown'
    try:
        settings = rt.settings
        body, digest = await signed_body(request, settings, settings.webhook_secrets)
        # the same delivery seen again within its freshness window is a replay, however it is signed
        try:
            event, attempt_id, call_id = _parse(body)
        except BadDelivery:
            await _not_replayed(rt, digest)
            raise
        if attempt_id is None:
            await _not_replayed(rt, digest)
            verdict = 'inbound_call'
        else:
            verdict = await _nudge(rt, event, attempt_id, call_id, digest)
    except BadDelivery as exc:
        metrics.WEBHOOKS_RECEIVED.labels(event=event, verdict=exc.reason).inc()
        log.warning('webhook_refused', reason=exc.reason, status=exc.status)
        return JSONResponse({'error': exc.reason}, status_code=exc.status)
    metrics.WEBHOOKS_RECEIVED.labels(event=event, verdict=verdict).inc()
    return JSONResponse({'result': verdict}, status_code=202)
