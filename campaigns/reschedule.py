"""After ``dialer campaign update``: every waiting contact gets the due time the new settings give it.

A contact waiting for its first call is due at the first instant the (new) calling hours open in
all its zones (not before the campaign's ``start_at``). A contact waiting for a retry is due as if
its last attempt had ended under the new policy: the end time plus the outcome's (new) delay, held
by the (new) daily cap, moved into the (new) calling hours, never in the past. When the new policy
gives it no further attempt (attempts lowered to what it already made, or its outcome no longer
retried) it is closed with its last attempt's outcome as the final one.

Contacts are read with ZSCAN in batches and each batch is applied by ``retime.lua``, which touches a
contact only if it is still waiting exactly as read: a contact claimed for dialling meanwhile is left
alone (the dial job checks the hours again before dialling), and so is one whose attempt ended and
was rescheduled meanwhile. A worker reloads a campaign's settings within ``CONFIG_TTL`` (2 s); a call
ending in that interval may still have its retry scheduled by the previous settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from campaigns.policy import NeverCallable, NoTimezone, contact_zones, decide_retry, next_callable
from dialer import constants as k
from dialer.models import Outcome, attempts_counted
from dialer.outbox import NO_OUTBOX, Outbox
from dialer.scripts import Scripts, register


if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import Redis

    from dialer.models import CampaignConfig


#: Contacts per ZSCAN step and per script call: short enough that a claim never waits long.
BATCH = 500
#: Settings whose change moves waiting contacts; the rest apply to the next dial as they are.
SCHEDULE_FIELDS = frozenset({'hours', 'retry', 'default_timezone', 'start_at'})


@dataclass
class RescheduleSummary:
    moved: int = 0
    closed: int = 0
    #: Claimed or rescheduled by a worker between the read and the write: left to that worker.
    skipped: int = 0
    unchanged: int = 0


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _at(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class _Planner:
    """The new due instant (ms), 'close', or None (leave as is) for one waiting contact."""

    def __init__(self, config: CampaignConfig, now_ms: int) -> None:
        self.config = config
        self.now_ms = now_ms
        self.now = _at(now_ms)
        # a campaign prepared with ``load --start-at`` makes no first call before that instant
        start_at: datetime | None = getattr(config, 'start_at', None)
        self.first_from = max(self.now, start_at) if start_at else self.now
        self._first_due: dict[tuple[str, ...], int | None] = {}

    def zones(self, number: str, contact: dict[str, Any]) -> tuple[str, ...] | None:
        try:
            return contact_zones(number, contact.get('z'), self.config.default_timezone)
        except (NoTimezone, ValueError):
            return None  # the dial job records why it cannot be called

    def first_call(self, zones: tuple[str, ...]) -> int | None:
        if zones not in self._first_due:
            try:
                self._first_due[zones] = _ms(next_callable(zones, self.config.hours, self.first_from))
            except NeverCallable:
                self._first_due[zones] = None  # due now: the dial job fails it with the reason
        return self._first_due[zones]

    def retry(self, zones: tuple[str, ...], progress: dict[str, Any], ended_ms: float | None) -> int | str | None:
        retry = self.config.retry
        try:
            outcome = Outcome(progress.get('lo', ''))
        except ValueError:
            return None
        attempts = attempts_counted(progress)
        if outcome not in retry.retry_on or attempts >= retry.max_attempts:
            return 'close'
        delay = timedelta(seconds=retry.delays[outcome])
        ended = _at(ended_ms) if ended_ms else self.now
        # decide_retry counts the delay from its ``now``: from the end, but never into the past
        base = max(ended, self.now - delay)
        try:
            decision = decide_retry(
                retry,
                self.config.hours,
                zones,
                outcome,
                attempts,
                [_at(ms) for ms in progress.get('ts') or []],
                base,
            )
        except NeverCallable:
            return None
        if decision.retry_at is None:
            return 'close'
        return _ms(decision.retry_at)


async def reschedule_waiting(redis: Redis, config: CampaignConfig, outbox: Outbox = NO_OUTBOX) -> RescheduleSummary:
    """Give every contact in the campaign's due ZSET the due time ``config`` implies; contacts closed
    by the new policy announce themselves through ``outbox`` (result webhooks)."""
    name = config.name
    script = register(redis, 'retime')
    planner = _Planner(config, await Scripts(redis).now_ms())
    summary = RescheduleSummary()
    batch: list[tuple[str, float]] = []

    async def flush() -> None:
        changes = await _plan_batch(redis, planner, batch)
        summary.unchanged += len(batch) - len(changes) // 3
        batch.clear()
        if changes:
            keys = [k.CLOCK_OFFSET, k.campaign(name), k.campaign_due(name), k.campaign_progress(name)]
            keys += [k.trunk_campaigns(config.trunk), k.campaign_contacts(name), *outbox.keys()]
            tail = [str(arg) for arg in outbox.args()]
            moved, closed, skipped = await script(keys=keys, args=[name, len(tail), *tail, *changes])
            summary.moved += int(moved)
            summary.closed += int(closed)
            summary.skipped += int(skipped)

    async for number, score in redis.zscan_iter(k.campaign_due(name), count=BATCH):
        batch.append((number, score))
        if len(batch) >= BATCH:
            await flush()
    if batch:
        await flush()
    return summary


async def _plan_batch(redis: Redis, planner: _Planner, batch: Sequence[tuple[str, float]]) -> list[str]:
    """Flattened (number, score as read, new due or 'close') for the contacts whose due time changes."""
    name = planner.config.name
    numbers = [number for number, _ in batch]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(k.campaign_progress(name), numbers)
        pipe.hmget(k.campaign_contacts(name), numbers)
        raw_progress, raw_contacts = await pipe.execute()
    progresses = [json.loads(raw) if raw else {} for raw in raw_progress]
    # the end time of each retrying contact's last attempt, from its attempt record
    ended_fields = [f'{number}:{int(p.get("a") or 0)}' for number, p in zip(numbers, progresses, strict=True)]
    raw_records = await redis.hmget(k.campaign_attempts(name), ended_fields)
    changes: list[str] = []
    for (number, score), progress, raw_contact, raw_record in zip(
        batch, progresses, raw_contacts, raw_records, strict=True
    ):
        zones = planner.zones(number, json.loads(raw_contact) if raw_contact else {})
        if zones is None:
            continue
        status = progress.get('s', 'pending')
        if status == 'retry_wait':
            record = json.loads(raw_record) if raw_record else {}
            new: int | str | None = planner.retry(zones, progress, record.get('eo'))
        elif status == 'pending':
            new = planner.first_call(zones)
            # already due and still callable: its place in the queue is kept
            if new == planner.now_ms and score <= planner.now_ms:
                new = None
        else:
            new = None
        if new is None or new == int(score):
            continue
        changes += [number, str(int(score)), str(new)]
    return changes
