"""Direct mode: the provider phone leg of an attempt, placed after its Ultravox call and followed to its end.

Exactly once across two APIs:
1. the dial job creates and records the Ultravox call (``medium.<provider>: {}``, a ``joinUrl``);
2. ``place_phone_leg`` (the one hook in ``workers/dial.py``) records the leg as ``placing`` in the
   attempt record (``dialer/lua/leg.lua``, Redis time) *before* the provider request, and swaps the
   attempt's tracking member for its leg member (``attempt|call|leg``);
3. the provider answers: the leg's id is recorded (``placed``).
A crash between 2 and 3 leaves ``placing``: the trackers (``poll_leg``) then look the leg up at the
provider (To, From, created since the ledger time) instead of placing another; a leg never found
within ``DIALER_AMBIGUOUS_QUARANTINE``, refused, or failed ends the Ultravox call
(``DELETE /api/calls/{id}``) and the attempt with the provider's outcome. A provider 429 ("too many
calls") placed nothing: it holds the trunk (not the fleet) and leaves the leg ``held``; a tracker
places it again when the hold ends, in a slot reserved under the trunk's own rate like any create
(so re-placed legs and new dials together never exceed the trunk's calls per second), ahead of new
dials (they wait while a held leg does: its Ultravox call is already waiting), within the
same attempt (nothing spent), or ends the attempt if the Ultravox call stopped waiting (its
``joinTimeout``) meanwhile.

Outcomes come from polling the provider's call (status callbacks only make the poll happen now):
an unanswered leg ends the attempt with the provider's outcome at once; an answered one waits for the
Ultravox call to end and is billed from it (agent minutes only) plus the provider's duration and price.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import structlog

from dialer import constants as k
from dialer import metrics
from dialer.billing import billing_of
from dialer.logs import masked_attempt
from dialer.models import Outcome
from dialer.provider_trunks import ProviderTrunk
from dialer.providers import (
    LegStatus,
    PhoneProvider,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
    is_machine,
    provider_client,
)
from dialer.scripts import register
from dialer.trunks import TrunkConfigError
from dialer.ultravox import CallNotFound, UltravoxError
from workers.calls import billing_fields, count_end, finish_attempt, tracking_member, voicemail_fields


if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from dialer.models import CampaignConfig
    from dialer.trunks import Trunk
    from workers.runtime import Runtime


log = structlog.get_logger(__name__)

LEG = 'leg'
_clients: dict[tuple[int, str], tuple[ProviderTrunk, PhoneProvider]] = {}
_scripts: dict[int, AsyncScript] = {}


def leg_member(attempt_id: str, call_id: str) -> str:
    return f'{tracking_member(attempt_id, call_id)}|{LEG}'


def is_leg_member(member: str) -> bool:
    return member.endswith(f'|{LEG}')


def is_direct(trunk: Trunk) -> bool:
    return isinstance(trunk, ProviderTrunk) and trunk.mode == 'direct'


def client_for(rt: Runtime, trunk: ProviderTrunk) -> PhoneProvider:
    """One client per trunk and process, rebuilt when the trunks file changes the trunk."""
    key = (id(rt), trunk.name)
    cached = _clients.get(key)
    if cached is None or cached[0] != trunk:
        cached = (trunk, provider_client(trunk, rt.settings))
        _clients[key] = cached
    return cached[1]


async def _ledger(
    rt: Runtime,
    attempt_id: str,
    call_id: str,
    action: str,
    trunk: ProviderTrunk,
    leg_id: str = '',
    next_ms: int | None = None,
) -> str:
    script = _scripts.get(id(rt.redis))
    if script is None:
        script = _scripts[id(rt.redis)] = register(rt.redis, 'leg')
    name, number, attempt = k.parse_attempt_id(attempt_id)
    keys = [k.CLOCK_OFFSET, k.campaign_attempts(name), k.TRACKING, k.trunk_held_legs(trunk.name)]
    args = [
        f'{number}:{attempt}',
        action,
        call_id,
        tracking_member(attempt_id, call_id),
        leg_member(attempt_id, call_id),
        trunk.provider,
        leg_id,
        int(rt.settings.poll_initial * 1000) if next_ms is None else next_ms,
    ]
    result = await script(keys=keys, args=args)
    return str(result[0])


def _callback_url(trunk: ProviderTrunk, attempt_id: str, call_id: str) -> str | None:
    if trunk.callback_url is None:
        return None
    # the URL is part of what the provider signs, so these ids cannot be forged; encoded, because the
    # attempt id holds a '+' that a query string would read as a space
    return f'{trunk.callback_url}/webhooks/{trunk.provider}?{urlencode({"a": attempt_id, "c": call_id})}'


async def place_phone_leg(
    rt: Runtime, attempt_id: str, config: CampaignConfig, trunk: Trunk, call: dict[str, Any]
) -> None:
    """After the Ultravox call of a direct-mode attempt is recorded: place its phone leg, exactly once."""
    if not isinstance(trunk, ProviderTrunk) or trunk.mode != 'direct':
        return
    call_id = str(call['callId'])
    if await _ledger(rt, attempt_id, call_id, 'placing', trunk) != 'placing':
        return  # already placed (or being resolved by the trackers), or the attempt moved on
    await _place(rt, attempt_id, config, trunk, call_id, call.get('joinUrl'))


async def _place(
    rt: Runtime, attempt_id: str, config: CampaignConfig, trunk: ProviderTrunk, call_id: str, join_url: Any
) -> None:
    """The provider request of a leg recorded ``placing`` (by the dial job, or a tracker after a hold)."""
    member = leg_member(attempt_id, call_id)
    if not isinstance(join_url, str) or not join_url:
        await _end_unplaced(rt, attempt_id, config, trunk, call_id, member, Outcome.FAILED, 'no joinUrl', final=False)
        return
    _, number, _ = k.parse_attempt_id(attempt_id)
    try:
        leg = await client_for(rt, trunk).place(
            to=number,
            caller_id=trunk.caller_id,
            join_url=join_url,
            callback_url=_callback_url(trunk, attempt_id, call_id),
        )
    except ProviderRateLimited as exc:
        # The provider account is over its limits and placed nothing: hold this trunk (not the fleet)
        # for Retry-After and place the leg again after it, within this attempt. Handing the attempt
        # back instead would give the next try a second Ultravox call under the same attempt id.
        hold_ms = max(int(exc.retry_after * 1000), 1000)
        await rt.scripts.hold(k.trunk_hold(trunk.name), hold_ms, f'{trunk.provider} 429')
        metrics.PROVIDER_LEGS.labels(kind=trunk.provider, result='rate_limited').inc()
        await _ledger(rt, attempt_id, call_id, 'held', trunk, next_ms=hold_ms)
        log.info('phone_leg_held', attempt_id=masked_attempt(attempt_id), hold_ms=hold_ms)
        return
    except ProviderRejected as exc:
        metrics.PROVIDER_LEGS.labels(kind=trunk.provider, result='failed').inc()
        await _end_unplaced(rt, attempt_id, config, trunk, call_id, member, Outcome.FAILED, str(exc), final=True)
        return
    except ProviderUnavailable as exc:
        if exc.maybe_placed:
            log.warning('phone_leg_ambiguous', reason=str(exc))
            return  # 'placing' stays: the trackers look the leg up, never place a second one
        metrics.PROVIDER_LEGS.labels(kind=trunk.provider, result='failed').inc()
        await _end_unplaced(rt, attempt_id, config, trunk, call_id, member, Outcome.FAILED, str(exc), final=False)
        return
    await _ledger(rt, attempt_id, call_id, 'placed', trunk, leg.leg_id)
    metrics.PROVIDER_LEGS.labels(kind=trunk.provider, result='placed').inc()
    log.info('phone_leg_placed', call_id=call_id, leg_id=leg.leg_id)


async def _place_held(
    rt: Runtime, attempt_id: str, config: CampaignConfig, trunk: ProviderTrunk, call_id: str, member: str
) -> None:
    """A leg refused with 429: place it again once the trunk's hold is over, in a slot of the trunk's
    rate reserved for it (the attempt's own slot was spent on the refused request). The reservation
    is at most ``DIALER_MAX_RATE_WAIT`` ahead, so it is waited for here rather than asked again later
    (asked again after its time, it could lose its place to reservations made meanwhile)."""
    wait_ms = await rt.take_leg_rate_token(trunk, leg_member(attempt_id, call_id))
    if wait_ms < 0:  # the hold is on (or was extended by another 429), or the trunk is booked up
        await rt.scripts.reschedule(k.TRACKING, [member], -wait_ms)
        return
    try:
        call = await rt.ultravox.get_call(call_id)
    except CallNotFound:
        call = {}
    except UltravoxError:
        await rt.scripts.reschedule(k.TRACKING, [member], int(rt.settings.poll_interval * 1000))
        return
    if call.get('ended') is not None or not call.get('joinUrl'):
        # nobody can stream to it any more; the attempt ends like a leg that never came
        reason = 'the Ultravox call ended while the provider held the trunk'
        # only a held leg is in the trunk's held set: it leaves it here, new dials go on at once
        await rt.redis.zrem(k.trunk_held_legs(trunk.name), leg_member(attempt_id, call_id))
        await _end_unplaced(rt, attempt_id, config, trunk, call_id, member, Outcome.FAILED, reason, final=False)
        return
    if wait_ms > 0:
        await asyncio.sleep(wait_ms / 1000)
    if await _ledger(rt, attempt_id, call_id, 'placing', trunk) == 'placing':
        await _place(rt, attempt_id, config, trunk, call_id, call['joinUrl'])


async def _end_unplaced(
    rt: Runtime,
    attempt_id: str,
    config: CampaignConfig,
    trunk: ProviderTrunk,
    call_id: str,
    member: str,
    outcome: Outcome,
    reason: str,
    *,
    final: bool,
    leg: LegStatus | None = None,
) -> bool:
    """The phone leg never came (or ended unanswered): end the Ultravox call and record the outcome."""
    try:
        await rt.ultravox.delete_call(call_id)
    except UltravoxError as exc:
        # it ends by itself at its joinTimeout (nobody will join it); the outcome is ours to record now
        log.warning('ultravox_call_not_ended', call_id=call_id, reason=str(exc))
    fields: dict[str, Any] = {'call': call_id, 'kind': trunk.provider, 'sip': 0, 'agent': 0, 'bsrc': 'computed'}
    if reason:
        fields['r'] = reason[:500]
    if leg is not None:
        fields.update(_leg_fields(leg))
    return await _finish(rt, attempt_id, config, outcome, fields, member, billing_final=True, final=final)


def _leg_fields(leg: LegStatus) -> dict[str, Any]:
    fields: dict[str, Any] = {'pcall': leg.leg_id, 'pst': leg.status}
    optional = {'psip': leg.sip_code, 'amd': leg.amd, 'pdur': leg.duration}
    fields.update({key: value for key, value in optional.items() if value is not None})
    if leg.price is not None:
        fields['pprice'], fields['punit'] = leg.price, leg.price_unit or ''
    return fields


async def _finish(
    rt: Runtime,
    attempt_id: str,
    config: CampaignConfig,
    outcome: Outcome,
    fields: dict[str, Any],
    member: str,
    *,
    billing_final: bool,
    final: bool = False,
) -> bool:
    recorded, retry = await finish_attempt(
        rt,
        config,
        attempt_id,
        outcome,
        fields,
        final=final,
        tracking_member=member,
        billing_final=billing_final,
        billing_poll_ms=int(rt.settings.poll_interval * 1000),
        breaker=rt.trunk_breaker,
    )
    if recorded:
        count_end(config, outcome, retried=retry is not None)
        kind = str(fields.get('kind', 'sip'))
        metrics.PROVIDER_LEGS.labels(kind=kind, result='ended').inc()
        if fields.get('pdur'):
            metrics.BILLED_SECONDS_BY_KIND.labels(kind=kind, meter='provider').inc(float(fields['pdur']))
        if fields.get('pprice'):
            metrics.PROVIDER_PRICE.labels(kind=kind, currency=str(fields.get('punit') or '?')).inc(
                abs(float(fields['pprice']))
            )
        log.info('call_ended', attempt_id=masked_attempt(attempt_id), call_id=fields.get('call'), outcome=outcome)
    return recorded


async def _earlier_legs(rt: Runtime, attempt_id: str) -> set[str]:
    """Provider call ids of the contact's earlier attempts (never mistaken for this attempt's leg)."""
    name, number, attempt = k.parse_attempt_id(attempt_id)
    if attempt <= 1:
        return set()
    raws = await rt.redis.hmget(k.campaign_attempts(name), [f'{number}:{n}' for n in range(1, attempt)])
    return {str(json.loads(raw).get('pcall')) for raw in raws if raw}


async def poll_leg(rt: Runtime, member: str) -> None:  # noqa: PLR0911  one return per state
    """A tracker's poll of a direct-mode attempt: resolve, follow and end its phone leg."""
    attempt_id, call_id, _ = member.split('|')
    name, number, attempt = k.parse_attempt_id(attempt_id)
    interval_ms = int(rt.settings.poll_interval * 1000)
    raw = await rt.redis.hget(k.campaign_attempts(name), f'{number}:{attempt}')
    record = json.loads(raw) if raw else None
    if record is None or record.get('st') != 'live' or record.get('call') != call_id:
        await rt.redis.zrem(k.TRACKING, member)
        return
    config = await rt.configs.get(name)
    try:
        trunk = rt.trunks.get(config.trunk)
    except TrunkConfigError:
        await rt.scripts.reschedule(k.TRACKING, [member], interval_ms)
        return
    if not isinstance(trunk, ProviderTrunk):
        await rt.scripts.reschedule(k.TRACKING, [member], interval_ms)
        return
    client = client_for(rt, trunk)
    leg = record.get('leg') or {}
    try:
        status = await _leg_status(rt, client, trunk, attempt_id, call_id, member, config, leg, number)
    except ProviderError as exc:
        log.info('leg_poll_deferred', attempt_id=masked_attempt(attempt_id), reason=str(exc))
        await rt.scripts.reschedule(k.TRACKING, [member], interval_ms)
        return
    if status is None:
        return
    if not status.final:
        await rt.scripts.reschedule(k.TRACKING, [member], interval_ms)
        return
    if status.outcome is not Outcome.ANSWERED:
        await _end_unplaced(
            rt,
            attempt_id,
            config,
            trunk,
            call_id,
            member,
            status.outcome or Outcome.FAILED,
            '',
            final=False,
            leg=status,
        )
        return
    await _end_answered(rt, attempt_id, config, trunk, call_id, member, status)


async def _leg_status(
    rt: Runtime,
    client: PhoneProvider,
    trunk: ProviderTrunk,
    attempt_id: str,
    call_id: str,
    member: str,
    config: CampaignConfig,
    leg: dict[str, Any],
    number: str,
) -> LegStatus | None:
    """The leg's status; None when the poll is done (rescheduled, or the attempt was ended here)."""
    if leg.get('st') == 'placed':
        return await client.fetch(str(leg['id']))
    if leg.get('st') == 'held':
        await _place_held(rt, attempt_id, config, trunk, call_id, member)
        return None
    settings = rt.settings
    age_ms = await rt.scripts.now_ms() - int(leg.get('t') or 0)
    if age_ms < settings.ambiguous_create_delay * 1000:
        # the dial job may still be waiting for the provider's answer
        await rt.scripts.reschedule(k.TRACKING, [member], int(settings.ambiguous_create_delay * 1000 - age_ms))
        return None
    earlier = await _earlier_legs(rt, attempt_id)
    found = [
        found
        for found in await client.find(to=number, caller_id=trunk.caller_id, since_ms=int(leg.get('t') or 0))
        if found.leg_id not in earlier
    ]
    if found:
        chosen = min(found, key=lambda item: item.created_ms or 0)
        if len(found) > 1:
            log.error('duplicate_phone_legs', attempt_id=masked_attempt(attempt_id), legs=len(found))
        await _ledger(rt, attempt_id, call_id, 'placed', trunk, chosen.leg_id)
        metrics.PROVIDER_LEGS.labels(kind=trunk.provider, result='found').inc()
        return await client.fetch(chosen.leg_id)
    if age_ms >= settings.ambiguous_quarantine * 1000:
        metrics.PROVIDER_LEGS.labels(kind=trunk.provider, result='never_placed').inc()
        await _end_unplaced(
            rt, attempt_id, config, trunk, call_id, member, Outcome.FAILED, 'phone leg never placed', final=False
        )
        return None
    await rt.scripts.reschedule(k.TRACKING, [member], int(settings.poll_interval * 1000))
    return None


async def _end_answered(
    rt: Runtime,
    attempt_id: str,
    config: CampaignConfig,
    trunk: ProviderTrunk,
    call_id: str,
    member: str,
    leg: LegStatus,
) -> None:
    """An answered leg is over: wait for the Ultravox call to end too, then record it with its billing."""
    try:
        call = await rt.ultravox.get_call(call_id)
    except CallNotFound:
        call = {'callId': call_id}
    except UltravoxError:
        await rt.scripts.reschedule(k.TRACKING, [member], int(rt.settings.poll_interval * 1000))
        return
    if call.get('ended') is None and 'created' in call:
        await rt.scripts.reschedule(k.TRACKING, [member], int(rt.settings.poll_interval * 1000))
        return
    billing = billing_of({**call, 'medium': {trunk.provider: {}}})
    fields = {
        'call': call_id,
        'jn': call.get('joined'),
        'en': call.get('ended'),
        'er': call.get('endReason') or 'hangup',
        'dur': leg.duration or 0,
        'sum': call.get('shortSummary') or call.get('summary'),
        'kind': trunk.provider,
        **billing_fields(billing),
        **_leg_fields(leg),
    }
    outcome = Outcome.ANSWERED
    if 'created' in call:  # the agent's own voicemail step, as for a SIP call
        fields.update(await voicemail_fields(rt, config, call))
    if is_machine(leg.amd):
        # the provider's answering-machine detection: a voicemail, left only if the agent says so
        fields['vm'], fields['vml'] = 1, int(bool(fields.get('vml')))
    if fields.get('vm'):
        outcome = Outcome.VOICEMAIL
    recorded = await _finish(rt, attempt_id, config, outcome, fields, member, billing_final=billing.final)
    if recorded and outcome is Outcome.VOICEMAIL:
        metrics.VOICEMAILS.labels(campaign=config.name, left='true' if fields.get('vml') else 'false').inc()


async def nudge_leg(rt: Runtime, attempt_id: str, call_id: str) -> bool:
    """A status callback arrived: make the trackers poll the leg now (if it is still followed and not
    already due), in one step that also wakes them (``reschedule_member`` in the prelude)."""
    return bool(await rt.scripts.reschedule(k.TRACKING, [leg_member(attempt_id, call_id)], 0))
