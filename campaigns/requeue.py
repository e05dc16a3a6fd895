"""Reopening contacts that ended for a reason the operator has since fixed (``dialer campaign requeue``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from campaigns.lifecycle import read_config
from dialer import constants as k
from dialer.scripts import Scripts


if TYPE_CHECKING:
    from redis.asyncio import Redis

    from dialer.models import Outcome

#: Contacts examined per script call: bounded work per atomic step, so dialling never stalls behind it.
BATCH = 500


async def requeue(redis: Redis, name: str, outcome: Outcome, reason: str = '') -> int:
    """Reopen every contact closed with ``outcome`` (whose last attempt's reason contains ``reason``).

    Each reopened contact gets its full attempt budget back and is due at once; the do-not-call list,
    calling hours and the rolling 24 h cap still apply. Returns how many were reopened.
    """
    config = await read_config(redis, name)
    state = await redis.hget(k.campaign(name), 'state')
    if state == 'cancelled':
        raise ValueError(f'campaign {name!r} is cancelled: nothing can be requeued')
    scripts = Scripts(redis)
    reopened = 0
    batch: list[str] = []
    async for number, raw in redis.hscan_iter(k.campaign_progress(name), count=BATCH):
        progress = json.loads(raw)
        if progress.get('s') == 'done' and progress.get('o') == outcome.value:
            batch.append(number)
        if len(batch) >= BATCH:
            reopened += await scripts.requeue(name, config.trunk, outcome.value, reason, batch)
            batch = []
    reopened += await scripts.requeue(name, config.trunk, outcome.value, reason, batch)
    return reopened
