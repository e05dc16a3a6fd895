"""Typed wrappers around the Lua scripts in ``dialer/lua``: every coordination decision in one place.

Each script runs atomically inside Redis and reads time from Redis ``TIME`` (plus the test-only
offset in ``dialer:clock:offset_ms``), so no decision depends on a worker's clock. Scripts are sent
by SHA (redis-py reloads them after a server restart).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Final

from dialer import constants as k
from dialer.outbox import NO_OUTBOX, Outbox


if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript


_NAMES: Final = (
    'now',
    'retry_facts',
    'nudge',
    'claim',
    'begin',
    'rate',
    'created',
    'finish',
    'settle',
    'hand_back',
    'forget',
    'lease_due',
    'reschedule',
    'failure',
    'hold',
    'cancel',
    'lifecycle',
    'lift_fault',
    'requeue',
    'send',
    'outbox_append',
    'outbox_lease',
    'outbox_ack',
    'outbox_nack',
    'outbox_replay',
    'outbox_trim',
)


#: Schedule entries due sooner than this are announced to sleeping loops (``announce_due`` in
#: ``dialer/lua/_wakeups.lua``). It must not be below any loop's longest sleep: the workers pass theirs
#: (``workers/wakeups.py``), and everyone else this upper bound of it.
WAKE_HORIZON_MS: Final = 1000
_HORIZON_LINE = f'local WAKE_HORIZON_MS = {WAKE_HORIZON_MS}'


@cache
def _source(name: str, wake_horizon_ms: int = WAKE_HORIZON_MS) -> str:
    lua = files('dialer') / 'lua'
    wakeups = (lua / '_wakeups.lua').read_text()
    if _HORIZON_LINE not in wakeups:
        raise RuntimeError(f'dialer/lua/_wakeups.lua no longer sets {_HORIZON_LINE!r}')
    wakeups = wakeups.replace(_HORIZON_LINE, f'local WAKE_HORIZON_MS = {wake_horizon_ms}')
    # in order of use: the outbox announces its due events, the prelude's maybe_complete appends
    # campaign.completed through the outbox, every script uses the prelude
    parts = [wakeups, (lua / '_outbox.lua').read_text(), (lua / '_prelude.lua').read_text()]
    return '\n'.join([*parts, (lua / f'{name}.lua').read_text()])


def register(redis: Redis, name: str, wake_horizon_ms: int = WAKE_HORIZON_MS) -> AsyncScript:
    """Register ``dialer/lua/<name>.lua`` (with the shared prelude) on a client.

    Call it as ``await script(keys=[constants.CLOCK_OFFSET, ...], args=[...])``: KEYS[1] is always
    the clock offset key.
    """
    return redis.register_script(_source(name, wake_horizon_ms))


#: ``claim.lua``'s answer when the trunk's campaigns are not the ones it was given.
STALE_CAMPAIGNS: Final = -3
#: ``claim.lua``'s answer while a trunk's unsent set is refilled in batches (followed by the wait).
REFILLING: Final = -4


@dataclass(frozen=True, slots=True)
class Claimed:
    job_refs: list[str]
    #: When nothing was claimed: ms until a hold lifts or the next contact is due; -1 = trunk or
    #: account full, -2 = nothing to dial.
    wait_ms: int
    #: True when the batch ran out with room left: claiming again at once may find more.
    more: bool = False
    #: The trunk's campaigns, when they were not the ones named (nothing was claimed): claim again with these.
    campaigns: list[str] | None = None
    #: The trunk sends at its rate and its unsent set is not yet half free: nothing was claimed, and
    #: nothing will be before ``wait_ms`` (0: unknown, look on the next tick), whatever else changes.
    refilling: bool = False


@dataclass(frozen=True, slots=True)
class FinishedJob:
    """A job queue's entry and keys, removed by the script that records what the job was for."""

    queue: str
    member: str
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CallbackAsked:
    """``finish.lua``'s answer when the agent recorded a disposition that asks for a call back."""

    disposition: str
    #: When the person asked to be called (epoch ms), if they said.
    requested_ms: int | None


@dataclass(frozen=True, slots=True)
class Begun:
    verdict: str
    now_ms: int
    contact: str | None = None
    progress: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Forgotten:
    forgotten: bool
    #: ms until the quarantine ends (0 once forgotten); lookups made so far.
    quarantine_left_ms: int
    lookups: int


@dataclass(frozen=True, slots=True)
class SlotLimits:
    """Concurrency limits passed on every call, so edits take effect without a restart (0 = none)."""

    trunk: int
    account: int


def job_ref_parts(job_ref: str) -> tuple[str, str, int]:
    """``campaign:number:attempt#claim`` -> (campaign, number, attempt)."""
    return k.parse_attempt_id(job_ref.split('#', 1)[0])


@dataclass(frozen=True, slots=True)
class Leased:
    """One event leased for delivery to a destination (``Scripts.outbox_lease``)."""

    ordering_key: str
    member: str
    event: str
    failures: int


@dataclass(frozen=True, slots=True)
class OutboxLook:
    """What one look at a destination's outbox leased, and when its next event falls due."""

    leases: list[Leased]
    #: ms from the look until the destination's next head is due (a lease running out included);
    #: None when nothing is queued there.
    next_due_ms: int | None


@dataclass(frozen=True, slots=True)
class TrackerLook:
    """What one look at the tracking schedule found (``lease_due.lua``)."""

    members: list[str]
    webhooks_live: bool
    #: ms until the schedule's next member falls due after this look (None: the schedule is empty).
    next_due_ms: int | None


class Scripts:
    def __init__(self, redis: Redis, outbox: Outbox = NO_OUTBOX, *, wake_horizon_ms: int = WAKE_HORIZON_MS) -> None:
        self.redis = redis
        #: Where the scripts that record facts append their events (closed: no destinations).
        self.outbox = outbox
        self._scripts: dict[str, AsyncScript] = {name: register(redis, name, wake_horizon_ms) for name in _NAMES}

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[object]) -> Any:
        return await self._scripts[name](keys=[k.CLOCK_OFFSET, *keys], args=[str(a) for a in args])

    async def now_ms(self) -> int:
        return int(await self._run('now', [], []))

    async def retry_facts(self, campaign: str, number: str) -> tuple[int, str | None, str | None]:
        """(Redis time in ms, the contact's progress JSON, its contact record JSON), in one round trip."""
        now, progress, contact = await self._run(
            'retry_facts', [k.campaign_progress(campaign), k.campaign_contacts(campaign)], [number]
        )
        return int(now), progress or None, contact or None

    async def claim(
        self,
        trunk: str,
        campaigns: Sequence[str],
        limits: SlotLimits,
        *,
        unsent_cap: int,
        batch: int,
        claim_lease_ms: int,
    ) -> Claimed:
        keys = [
            k.trunk_slots(trunk),
            k.trunk_unsent(trunk),
            k.trunk_hold(trunk),
            k.ACCOUNT_SLOTS,
            k.ACCOUNT_HOLD,
            k.trunk_cursor(trunk),
            k.CLAIMED,
            k.trunk_campaigns(trunk),
        ]
        for name in campaigns:
            keys += [k.campaign(name), k.campaign_due(name), k.campaign_progress(name)]
        result = await self._run(
            'claim', keys, [limits.trunk, limits.account, unsent_cap, batch, claim_lease_ms, *campaigns]
        )
        if int(result[0]) == STALE_CAMPAIGNS:
            return Claimed([], 0, campaigns=sorted(str(name) for name in result[1:]))
        if int(result[0]) == REFILLING:
            return Claimed([], max(int(result[1]), 0), refilling=True)
        if len(result) == 1:
            return Claimed([], int(result[0]))
        return Claimed([str(ref) for ref in result[1:]], 0, more=int(result[0]) == 1)

    async def begin(
        self, job_ref: str, trunk: str, limits: SlotLimits, lease_ms: int, ambiguous_lease_ms: int = 0
    ) -> Begun:
        """``ambiguous_lease_ms``: how long slots are held for an attempt whose call may be live."""
        name, number, attempt = job_ref_parts(job_ref)
        keys = [
            k.campaign(name),
            k.campaign_progress(name),
            k.campaign_attempts(name),
            k.campaign_due(name),
            k.trunk_slots(trunk),
            k.ACCOUNT_SLOTS,
            k.trunk_unsent(trunk),
            k.CLAIMED,
            k.DNC,
            k.trunk_campaigns(trunk),
            k.campaign_contacts(name),
            k.ACCOUNT_HOLD,
            k.AMBIGUOUS,
            *self.outbox.keys(),
        ]
        args = [
            name,
            number,
            attempt,
            job_ref,
            limits.trunk,
            limits.account,
            lease_ms,
            ambiguous_lease_ms or lease_ms,
            *self.outbox.args(),
        ]
        result = await self._run('begin', keys, args)
        verdict, now = str(result[0]), int(result[1])
        if len(result) == 2:
            return Begun(verdict, now)
        return Begun(verdict, now, result[2] or None, json.loads(result[3]))

    async def take_rate_token(
        self,
        trunk: str,
        attempt_id: str,
        *,
        trunk_interval_ms: float,
        trunk_burst: int,
        account_interval_ms: float,
        account_per_minute: int,
        max_wait_ms: int = -1,
    ) -> int:
        """Reserve one creation slot: 0 = send now, > 0 = send after that many ms (reserved),
        < 0 = nothing reserved (a hold, or a wait over ``max_wait_ms``): ask again after -that ms."""
        keys = [
            k.trunk_rate(trunk),
            k.ACCOUNT_RATE_SECOND,
            k.ACCOUNT_RATE_MINUTE,
            k.trunk_hold(trunk),
            k.ACCOUNT_HOLD,
            k.trunk_unsent(trunk),
            k.trunk_held_legs(trunk),
        ]
        args = [trunk_interval_ms, trunk_burst, account_interval_ms, account_per_minute, attempt_id, max_wait_ms]
        return int(await self._run('rate', keys, args))

    async def created(
        self,
        attempt_id: str,
        trunk: str,
        call_id: str,
        limits: SlotLimits,
        *,
        lease_ms: int,
        first_poll_ms: int,
        job: FinishedJob | None = None,
    ) -> bool:
        """Record the attempt's call; with ``job``, the job queue entry and keys of the job that made the
        create are removed in the same step (only when this call recorded it)."""
        name, number, attempt = k.parse_attempt_id(attempt_id)
        keys = [
            k.campaign(name),
            k.campaign_progress(name),
            k.campaign_attempts(name),
            k.trunk_slots(trunk),
            k.ACCOUNT_SLOTS,
            k.trunk_unsent(trunk),
            k.TRACKING,
            k.ACCOUNT_FAILURES,
            k.AMBIGUOUS,
        ]
        args: list[object] = [
            number,
            attempt,
            attempt_id,
            call_id,
            lease_ms,
            first_poll_ms,
            limits.trunk,
            limits.account,
        ]
        if job is not None:
            keys += [job.queue, *job.keys]
            args.append(job.member)
        return bool(await self._run('created', keys, args))

    async def finish(
        self,
        attempt_id: str,
        trunk: str,
        outcome: str,
        fields: dict[str, Any],
        *,
        retry_at_ms: int | None,
        tracking_member: str = '',
        billing_final: bool,
        billing_poll_ms: int,
        job_ref: str = '',
        breaker: tuple[int, int] = (5, 30_000),
        callback_dispositions: Sequence[str] = (),
    ) -> bool | CallbackAsked:
        """Record an attempt's end; ``breaker`` is (failed calls in a row, cooldown ms) for the trunk.

        With ``callback_dispositions`` and no ``retry_at_ms``: when the agent recorded one of them on the
        attempt, nothing is recorded and the disposition is returned (``CallbackAsked``) for the caller
        to decide when to call back, then finish again with that time.
        """
        name, number, attempt = k.parse_attempt_id(attempt_id)
        keys = [
            k.campaign(name),
            k.campaign_progress(name),
            k.campaign_attempts(name),
            k.campaign_due(name),
            k.trunk_slots(trunk),
            k.ACCOUNT_SLOTS,
            k.trunk_unsent(trunk),
            k.TRACKING,
            k.CLAIMED,
            k.trunk_campaigns(trunk),
            k.trunk_failures(trunk),
            k.trunk_hold(trunk),
            k.AMBIGUOUS,
            k.campaign_contacts(name),
            *self.outbox.keys(),
        ]
        args = [
            name,
            number,
            attempt,
            outcome,
            json.dumps(fields, separators=(',', ':')),
            '' if retry_at_ms is None else retry_at_ms,
            tracking_member,
            '1' if billing_final else '0',
            billing_poll_ms,
            job_ref,
            *breaker,
            ','.join(callback_dispositions),
            *self.outbox.args(),
        ]
        result = await self._run('finish', keys, args)
        if isinstance(result, list):
            requested = result[2]
            return CallbackAsked(str(result[1]), int(requested) if requested != '' else None)
        return bool(result)

    async def settle_billing(
        self,
        attempt_id: str,
        fields: dict[str, Any],
        *,
        tracking_member: str,
        final: bool,
        billing_wait_ms: int,
        billing_poll_ms: int,
    ) -> bool:
        name, number, attempt = k.parse_attempt_id(attempt_id)
        keys = [k.campaign(name), k.campaign_attempts(name), k.TRACKING]
        args = [
            number,
            attempt,
            json.dumps(fields, separators=(',', ':')),
            tracking_member,
            '1' if final else '0',
            billing_wait_ms,
            billing_poll_ms,
        ]
        return bool(await self._run('settle', keys, args))

    async def hand_back(self, job_ref: str, trunk: str, *, due_at_ms: int = 0, delay_ms: int = 0) -> bool:
        name, number, attempt = job_ref_parts(job_ref)
        keys = [
            k.campaign(name),
            k.campaign_progress(name),
            k.campaign_attempts(name),
            k.campaign_due(name),
            k.trunk_slots(trunk),
            k.ACCOUNT_SLOTS,
            k.trunk_unsent(trunk),
            k.CLAIMED,
            k.AMBIGUOUS,
        ]
        return bool(await self._run('hand_back', keys, [name, number, attempt, job_ref, due_at_ms, delay_ms]))

    async def forget(self, attempt_id: str, quarantine_ms: int = 0) -> Forgotten:
        """Forget an ambiguous create that Ultravox does not know, once its quarantine has passed."""
        name, number, attempt = k.parse_attempt_id(attempt_id)
        keys = [k.campaign_progress(name), k.campaign_attempts(name), k.AMBIGUOUS]
        forgotten, left, lookups = await self._run('forget', keys, [number, attempt, attempt_id, quarantine_ms])
        return Forgotten(bool(forgotten), int(left), int(lookups))

    async def send(
        self,
        attempt_id: str,
        *,
        contact_id: str = '',
        caller_id: str = '',
        callback_retention_ms: int = 0,
        trunk: str = '',
        per_second: int = 0,
        window_ms: int = 1000,
    ) -> str:
        """Right before the create: ``go`` (now marked as possibly sent), or why it must not go, or
        ``wait:<ms>`` when ``trunk`` already sent ``per_second`` creates in the last ``window_ms``.

        With ``callback_retention_ms`` the call-back index entry of the number (``k.callback``) is
        written in the same step: a call back from it reaches this campaign's contact.
        """
        name, number, attempt = k.parse_attempt_id(attempt_id)
        keys = [k.campaign(name), k.campaign_attempts(name), k.DNC, k.campaign_progress(name), k.callback(number)]
        keys += [k.trunk_sends(trunk or '-')]
        args = [number, attempt, name, contact_id, caller_id, callback_retention_ms, trunk]
        args += [per_second if trunk else 0, window_ms]
        return str(await self._run('send', keys, args))

    async def nudge(
        self, attempt_id: str, call_id: str, member: str, digest: str, *, replay_ms: int, live_window_ms: int
    ) -> tuple[str, str]:
        """One webhook delivery of a dialer call, decided in one round trip (``nudge.lua``):
        (verdict, the call id the attempt recorded when the event names another)."""
        name, number, attempt = k.parse_attempt_id(attempt_id)
        keys = [k.webhook_seen(digest), k.campaign(name), k.campaign_attempts(name), k.TRACKING, k.WEBHOOKS_LIVE]
        args = [replay_ms, f'{number}:{attempt}', call_id, member, live_window_ms]
        verdict, recorded = await self._run('nudge', keys, args)
        return str(verdict), str(recorded)

    async def lift_fault(self) -> bool:
        """Lift the account's fault hold (not a 429 hold); True if one was lifted."""
        return bool(await self._run('lift_fault', [k.ACCOUNT_HOLD], []))

    async def lease_due(self, schedule: str, limit: int, lease_ms: int) -> list[str]:
        return [str(m) for m in await self._run('lease_due', [schedule], [limit, lease_ms])]

    async def lease_due_calls(self, limit: int, lease_ms: int, later: Mapping[str, int]) -> TrackerLook:
        """The tracker's look: reschedule ``later`` (member -> delay ms, as :meth:`reschedule`), lease
        the due calls, say whether webhooks are being delivered and when the next call falls due, in
        one round trip."""
        args: list[object] = [limit, lease_ms]
        for member, delay_ms in later.items():
            args += [member, delay_ms]
        result = await self._run('lease_due', [k.TRACKING, k.WEBHOOKS_LIVE], args)
        next_due = int(result[1])
        return TrackerLook([str(m) for m in result[2:]], bool(int(result[0])), next_due if next_due >= 0 else None)

    async def reschedule(self, schedule: str, members: Sequence[str], delay_ms: int) -> int:
        if not members:
            return 0
        return int(await self._run('reschedule', [schedule], [delay_ms, *members]))

    async def record_failure(
        self, failures_key: str, hold_key: str, *, threshold: int, window_ms: int, cooldown_ms: int
    ) -> bool:
        return bool(await self._run('failure', [failures_key, hold_key], [threshold, window_ms, cooldown_ms]))

    async def hold(self, hold_key: str, ms: int, reason: str) -> bool:
        return bool(await self._run('hold', [hold_key], [ms, reason]))

    async def lifecycle(self, name: str, trunk: str, action: str, digest: str = '') -> str:
        """Apply a state change; returns the new state or raises ``ValueError`` with the reason."""
        keys = [k.campaign(name), k.trunk_campaigns(trunk), *self.outbox.keys()]
        result = str(await self._run('lifecycle', keys, [name, action, digest, *self.outbox.args()]))
        if result.startswith('error:'):
            raise ValueError(result.removeprefix('error:'))
        return result

    async def cancel_batch(self, name: str, trunk: str, batch: int = 1000) -> int:
        keys = [k.campaign(name), k.campaign_due(name), k.campaign_progress(name), k.trunk_campaigns(trunk)]
        keys += [k.campaign_contacts(name), *self.outbox.keys()]
        return int(await self._run('cancel', keys, [name, batch, *self.outbox.args()]))

    async def requeue(self, name: str, trunk: str, outcome: str, reason: str, numbers: Sequence[str]) -> int:
        """Reopen those of ``numbers`` that ended with ``outcome`` (and ``reason`` in their last record)."""
        if not numbers:
            return 0
        keys = [k.campaign(name), k.campaign_progress(name), k.campaign_attempts(name), k.campaign_due(name)]
        keys.append(k.trunk_campaigns(trunk))
        return int(await self._run('requeue', keys, [name, outcome, reason, *numbers]))

    # ------------------------------------------------------------------------------------------ outbox

    async def outbox_append(self, outbox: Outbox, event_type: str, ordering_key: str, data: Any) -> str | None:
        keys, args = outbox.keys(), outbox.args()
        result = await self._run(
            'outbox_append', keys, [event_type, ordering_key, json.dumps(data, separators=(',', ':')), *args]
        )
        return str(result) or None

    async def outbox_lease(self, destination: str, limit: int, lease_ms: int) -> OutboxLook:
        queue, heads, pending, tries, _ = k.outbox_destination_keys(destination)
        next_ms, *flat = await self._run(
            'outbox_lease', [k.OUTBOX_EVENTS, queue, heads, pending, tries], [limit, lease_ms]
        )
        leases = [
            Leased(str(flat[i]), str(flat[i + 1]), str(flat[i + 2]), int(flat[i + 3])) for i in range(0, len(flat), 4)
        ]
        return OutboxLook(leases, None if int(next_ms) < 0 else int(next_ms))

    async def outbox_ack(self, destination: str, leased: Leased, event_id: str) -> bool:
        keys = k.outbox_destination_keys(destination)[:4]
        return bool(await self._run('outbox_ack', keys, [leased.ordering_key, leased.member, event_id]))

    async def outbox_nack(
        self, destination: str, leased: Leased, event_id: str, *, retry_window_ms: int, delay_ms: int
    ) -> str:
        keys = k.outbox_destination_keys(destination)
        args = [leased.ordering_key, leased.member, event_id, retry_window_ms, delay_ms]
        return str(await self._run('outbox_nack', keys, args))

    async def outbox_replay(self, destination: str, since_ms: int, offset: int, page: int) -> tuple[int, int]:
        keys = [k.OUTBOX_EVENTS, k.OUTBOX_LOG, *k.outbox_destination_keys(destination)]
        queued, read = await self._run('outbox_replay', keys, [since_ms, offset, page])
        return int(queued), int(read)

    async def outbox_trim(self, destinations: Sequence[str], retention_ms: int, limit: int = 500) -> int:
        keys = [k.OUTBOX_EVENTS, k.OUTBOX_LOG]
        for dest in destinations:
            keys += [k.outbox_pending(dest), k.outbox_dead(dest)]
        return int(await self._run('outbox_trim', keys, [retention_ms, limit]))
