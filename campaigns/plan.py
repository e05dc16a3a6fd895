"""``dialer campaign plan``: a dry run of who can be called now and when the rest open, by zone."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from campaigns.lifecycle import read_config
from campaigns.policy import NeverCallable, NoTimezone, contact_zones, next_callable
from dialer import constants as k
from dialer.scripts import Scripts


if TYPE_CHECKING:
    from redis.asyncio import Redis

    from dialer.models import CampaignConfig


#: Contacts per ZSCAN step and per HMGET of their records.
BATCH = 1000


@dataclass
class ZonePlan:
    zones: tuple[str, ...]
    callable_now: int = 0
    waiting: int = 0
    opens_at: datetime | None = None
    problems: dict[str, int] = field(default_factory=dict)


async def plan_campaign(redis: Redis, name: str, *, now: datetime | None = None) -> tuple[datetime, list[ZonePlan]]:
    """Group the campaign's queued contacts by time zone(s); ``now`` defaults to the dialer's clock.

    The contacts counted are those in the due ZSET, exactly as ``campaign status`` and ``trunks
    status`` count them: "callable now" is due now (its due instant has come), "waiting" is due
    later, and a group opens at its earliest due instant. Contacts being dialled or in a call are
    in none of these columns, and neither are finished ones.
    """
    config = await read_config(redis, name)
    if now is None:
        now = datetime.fromtimestamp(await Scripts(redis).now_ms() / 1000, UTC)
    plans: dict[tuple[str, ...], ZonePlan] = {}
    problems: dict[str, int] = defaultdict(int)
    batch: list[tuple[str, float]] = []
    async for number, score in redis.zscan_iter(k.campaign_due(name), count=BATCH):
        batch.append((number, score))
        if len(batch) >= BATCH:
            await _count(redis, config, now, batch, plans, problems)
            batch = []
    await _count(redis, config, now, batch, plans, problems)
    for plan in plans.values():
        try:
            next_callable(plan.zones, config.hours, now)
        except NeverCallable:
            plan.problems['never callable in all its zones at once'] = plan.callable_now + plan.waiting
    if problems:
        plans[()] = ZonePlan((), problems=dict(problems))
    return now, sorted(plans.values(), key=lambda p: (p.opens_at or now, p.zones))


async def _count(
    redis: Redis,
    config: CampaignConfig,
    now: datetime,
    batch: list[tuple[str, float]],
    plans: dict[tuple[str, ...], ZonePlan],
    problems: dict[str, int],
) -> None:
    if not batch:
        return
    now_ms = now.timestamp() * 1000
    raw_contacts = await redis.hmget(k.campaign_contacts(config.name), [number for number, _ in batch])
    for (number, score), raw in zip(batch, raw_contacts, strict=True):
        contact = json.loads(raw) if raw else {}
        try:
            zones = contact_zones(number, contact.get('z'), config.default_timezone)
        except NoTimezone:
            problems['no time zone'] += 1
            continue
        plan = plans.setdefault(zones, ZonePlan(zones))
        if score <= now_ms:
            plan.callable_now += 1
            continue
        plan.waiting += 1
        due = datetime.fromtimestamp(score / 1000, UTC)
        if plan.opens_at is None or due < plan.opens_at:
            plan.opens_at = due
