"""``dialer campaign plan``: a dry run of who can be called now and when the rest open, by zone."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from campaigns.lifecycle import read_config
from campaigns.policy import NeverCallable, NoTimezone, contact_zones, is_callable, next_callable
from dialer import constants as k
from dialer.scripts import Scripts


if TYPE_CHECKING:
    from redis.asyncio import Redis


@dataclass
class ZonePlan:
    zones: tuple[str, ...]
    callable_now: int = 0
    waiting: int = 0
    opens_at: datetime | None = None
    problems: dict[str, int] = field(default_factory=dict)


async def plan_campaign(redis: Redis, name: str, *, now: datetime | None = None) -> tuple[datetime, list[ZonePlan]]:
    """Group the campaign's open contacts by time zone(s); ``now`` defaults to the dialer's clock."""
    config = await read_config(redis, name)
    if now is None:
        now = datetime.fromtimestamp(await Scripts(redis).now_ms() / 1000, UTC)
    plans: dict[tuple[str, ...], ZonePlan] = {}
    problems: dict[str, int] = defaultdict(int)
    async for number, raw in redis.hscan_iter(k.campaign_contacts(name), count=2000):
        progress = await redis.hget(k.campaign_progress(name), number)
        if progress and json.loads(progress).get('s') == 'done':
            continue
        contact = json.loads(raw)
        try:
            zones = contact_zones(number, contact.get('z'), config.default_timezone)
        except NoTimezone:
            problems['no time zone'] += 1
            continue
        plan = plans.setdefault(zones, ZonePlan(zones))
        if is_callable(zones, config.hours, now):
            plan.callable_now += 1
            continue
        plan.waiting += 1
        if plan.opens_at is None:
            try:
                plan.opens_at = next_callable(zones, config.hours, now)
            except NeverCallable:
                plan.problems['never callable in all its zones at once'] = plan.waiting
    if problems:
        plans[()] = ZonePlan((), problems=dict(problems))
    return now, sorted(plans.values(), key=lambda p: (p.opens_at or now, p.zones))
