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


async def _nudge(rt: Runtime, event: str, attempt_id: str, call_id: str) -> str:
    """Make the trackers poll the attempt's call now, if the event is about that call. Returns a verdict."""
    name, number, attempt = k.parse_attempt_id(attempt_id)
    async with rt.redis.pipeline(transaction=False) as pipe:
        pipe.exists(k.campaign(name))
        pipe.hget(k.campaign_attempts(name), f'{number}:{attempt}')
        exists, raw = await pipe.execute()
    if not exists:
        raise BadDelivery(404, 'unknown_campaign')
    if raw is None:
        raise BadDelivery(404, 'unknown_attempt')
    record = json.loads(raw)
    recorded = record.get('call')
    if recorded is None and record.get('st') == 'creating':
        # the call ended before its create was recorded: ask Ultravox to deliver it again shortly
        raise BadDelivery(409, 'not_yet_recorded')
    if recorded != call_id:
        metrics.WEBHOOK_MISMATCHES.labels(event=event).inc()
        log.warning(
            'webhook_foreign_call',
            webhook_event=event,
            attempt_id=masked_attempt(attempt_id),
            call_id=call_id,
            recorded_call_id=recorded,
        )
        return 'foreign_call'
    member = tracking_member(attempt_id, call_id)
    now_ms = await rt.scripts.now_ms()
    # XX: only entries still followed (live, or waiting for billing) are moved; nothing is created.
    async with rt.redis.pipeline(transaction=False) as pipe:
        pipe.zadd(k.TRACKING, {member: now_ms}, xx=True, ch=True)
        pipe.zadd(k.TRACKING, {f'{member}|b': now_ms}, xx=True, ch=True)
        # webhooks arrive: trackers may poll live calls only as a safety net (see workers/tracker.py)
        pipe.set(k.WEBHOOKS_LIVE, now_ms, px=int(rt.settings.poll_safety_interval * 2000))
        moved = sum((await pipe.execute())[:2])
    return 'polled_now' if moved else 'duplicate'


async def _authentic_body(rt: Runtime, request: Request) -> bytes:
    """The body of a delivery signed with one of our webhook secrets, fresh, and not seen before."""
    settings = rt.settings
    body, digest = await signed_body(request, settings, settings.webhook_secrets)
    # the same delivery seen again within its freshness window is a replay, however it is signed
    if not await rt.redis.set(k.webhook_seen(digest), '1', nx=True, px=int(settings.webhook_max_age * 2000)):
        raise BadDelivery(401, 'replayed')
    return body


async def receive_ultravox_webhook(rt: Runtime, request: Request) -> Response:
    event = 'unknown'
    try:
        event, attempt_id, call_id = _parse(await _authentic_body(rt, request))
        verdict = 'inbound_call' if attempt_id is None else await _nudge(rt, event, attempt_id, call_id)
    except BadDelivery as exc:
        metrics.WEBHOOKS_RECEIVED.labels(event=event, verdict=exc.reason).inc()
        log.warning('webhook_refused', reason=exc.reason, status=exc.status)
        return JSONResponse({'error': exc.reason}, status_code=exc.status)
    metrics.WEBHOOKS_RECEIVED.labels(event=event, verdict=verdict).inc()
    return JSONResponse({'result': verdict}, status_code=202)
