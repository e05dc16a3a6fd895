"""Following a call-back (an inbound call) to its end: the tracker's hook for ``|in`` members.

The fallback handler answers before the call exists, so the inbound call is recorded (campaign's
``inbound`` hash) with a tracking member whose call id is unknown (``-``). A tracker finds the call by
its ``callback_id`` metadata (as an ambiguous create is found), then polls it like an outbound call;
on its end the outcome and billing are recorded on the contact, and an answered call-back closes the
contact when the campaign says so (``callbacks.close_contact``). A call Ultravox never created (it
refused our answer, or the caller hung up first) is recorded as ``not_created`` once
``RESOLVE_WINDOW_MS`` has passed without it.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from campaigns.lifecycle import UnknownCampaignError
from dialer import constants as k
from dialer import metrics
from dialer.billing import answered_seconds, billing_of, medium_kind
from dialer.callback_scripts import UNKNOWN_CALL, CallbackScripts, is_inbound_member, parse_inbound_member
from dialer.outcomes import classify_call, end_reason_summary
from dialer.ultravox import AccountFault, CallNotFound, UltravoxError
from workers.faults import open_account_fault


if TYPE_CHECKING:
    from workers.runtime import Runtime


log = structlog.get_logger(__name__)

__all__ = ['is_inbound_member', 'poll_inbound']

#: Ultravox creates the call right after our answer; one not found by then was never created.
RESOLVE_WINDOW_MS = 120_000


async def poll_inbound(rt: Runtime, member: str) -> None:
    """A tracker's poll of an inbound call: find it, follow it, record its end."""
    campaign, callback_id, call_id = parse_inbound_member(member)
    scripts = CallbackScripts(rt.redis, rt.scripts.outbox)
    interval_ms = int(rt.settings.poll_interval * 1000)
    raw = await rt.redis.hget(k.campaign_inbound(campaign), callback_id)
    try:
        config = await rt.configs.get(campaign)
    except (UnknownCampaignError, ValueError):
        config = None
    if raw is None or config is None:
        await rt.redis.zrem(k.TRACKING, member)  # the campaign (and its inbound records) was deleted
        return
    record = json.loads(raw)
    try:
        if call_id == UNKNOWN_CALL:
            await _resolve(rt, scripts, member, callback_id, record, config.trunk)
            return
        call = await _get(rt, call_id)
    except UltravoxError as exc:
        if isinstance(exc, AccountFault):
            await open_account_fault(rt, exc)
        log.info('inbound_poll_deferred', campaign=campaign, callback_id=callback_id, reason=str(exc))
        await rt.scripts.reschedule(k.TRACKING, [member], interval_ms)
        return
    outcome = classify_call(call)
    if outcome is None:
        await rt.scripts.reschedule(k.TRACKING, [member], rt.live_poll_ms)
        return
    billing = billing_of(call)
    ended_ms = _epoch_ms(call.get('ended'))
    # past the billing wait, the computed figures are final (as for outbound calls)
    final = billing.final or (ended_ms is not None and time.time() * 1000 - ended_ms > rt.settings.billing_wait * 1000)
    fields: dict[str, Any] = {
        'call': call.get('callId'),
        'jn': call.get('joined'),
        'en': call.get('ended'),
        'er': end_reason_summary(call),
        'dur': round(answered_seconds(call), 3),
        'sum': call.get('shortSummary') or call.get('summary'),
        'kind': medium_kind(call),
        'sip': billing.sip_seconds,
        'agent': billing.agent_seconds,
        'bsrc': billing.source if billing.final else 'computed',
    }
    ended = await scripts.end(
        member,
        config.trunk,
        outcome.value,
        fields,
        billing_final=final,
        close_contact=config.callbacks.close_contact,
        billing_poll_ms=rt.live_poll_ms,
    )
    if ended.news:
        metrics.CALLS_BY_DIRECTION.labels(direction='inbound', outcome=outcome.value).inc()
        log.info('inbound_call_ended', campaign=campaign, callback_id=callback_id, call_id=call_id, outcome=outcome)
    if ended.billing_counted:
        metrics.BILLED_SECONDS_BY_DIRECTION.labels(direction='inbound', meter='sip').inc(billing.sip_seconds)
        metrics.BILLED_SECONDS_BY_DIRECTION.labels(direction='inbound', meter='agent').inc(billing.agent_seconds)


async def _get(rt: Runtime, call_id: str) -> dict[str, Any]:
    try:
        return await rt.ultravox.get_call(call_id)
    except CallNotFound:
        # Ultravox no longer knows the call (deleted, retention): record what we can
        return {'callId': call_id, 'ended': datetime.now(UTC).isoformat(), 'joined': None, 'endReason': 'system_error'}


async def _resolve(
    rt: Runtime, scripts: CallbackScripts, member: str, callback_id: str, record: dict[str, Any], trunk: str
) -> None:
    calls = await rt.ultravox.find_calls({'callback_id': callback_id})
    if calls:
        call = min(calls, key=lambda c: str(c.get('created')))
        await scripts.live(member, str(call['callId']), trunk, 0)  # polled at once: it may have ended already
        return
    if await rt.scripts.now_ms() - int(record.get('t0') or 0) > RESOLVE_WINDOW_MS:
        if await scripts.missing(member, trunk):
            metrics.CALLS_BY_DIRECTION.labels(direction='inbound', outcome='not_created').inc()
            log.warning('inbound_call_not_created', callback_id=callback_id)
        return
    await rt.scripts.reschedule(k.TRACKING, [member], int(rt.settings.poll_interval * 1000))


def _epoch_ms(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp() * 1000
    except ValueError:
        return None
