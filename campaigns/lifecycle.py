"""A campaign's life in Redis: created by a load, paused, resumed, cancelled, completed, deleted."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from redis.exceptions import NoPermissionError

from dialer import constants as k
from dialer.models import CampaignConfig, CampaignState, check_name
from dialer.outbox import NO_OUTBOX, Outbox
from dialer.scripts import Scripts


if TYPE_CHECKING:
    from redis.asyncio import Redis


class UnknownCampaignError(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f'unknown campaign {name!r} (see `dialer campaign list`)')


class CampaignConflictError(ValueError):
    """A load or update that would change a campaign in a way that is not allowed."""


async def read_config(redis: Redis, name: str) -> CampaignConfig:
    check_name('campaign', name)
    raw = await redis.hget(k.campaign(name), 'config')
    if raw is None:
        raise UnknownCampaignError(name)
    return CampaignConfig.model_validate_json(raw)


async def read_campaign(redis: Redis, name: str) -> dict[str, str]:
    """The campaign hash (config, state and counters)."""
    check_name('campaign', name)
    data: dict[str, str] = await redis.hgetall(k.campaign(name))
    if not data:
        raise UnknownCampaignError(name)
    return data


async def list_campaigns(redis: Redis) -> list[str]:
    return sorted(await redis.smembers(k.CAMPAIGNS))


def differences(old: CampaignConfig, new: CampaignConfig) -> list[str]:
    """The top-level settings (``hours``, ``retry``, ``trunk`` ...) that differ."""
    before, after = old.model_dump(mode='json'), new.model_dump(mode='json')
    return sorted(key for key in after if before.get(key) != after.get(key))


async def save_config(
    redis: Redis, config: CampaignConfig, *, update: bool = False, outbox: Outbox = NO_OUTBOX
) -> bool:
    """Create the campaign, or check (``update=False``) / change (``update=True``) its settings.

    Returns True when the campaign was created. A campaign's trunk cannot change while calls are in
    flight, because their slots are held on the old trunk.
    """
    key = k.campaign(config.name)
    raw = await redis.hget(key, 'config')
    payload = config.model_dump_json()
    if raw is None:
        created = await redis.hsetnx(key, 'config', payload)
        if created:
            await redis.hsetnx(key, 'state', CampaignState.ACTIVE.value)
            await redis.sadd(k.CAMPAIGNS, config.name)
            if await redis.sadd(k.trunk_campaigns(config.trunk), config.name):
                # an idle pacer sleeps until a campaign joins a rotation (workers/wakeups.py); a Redis
                # user without channel permissions loses only that wake-up (the pacer looks within 1 s)
                with contextlib.suppress(NoPermissionError):
                    await redis.publish(k.trunk_campaigns(config.trunk), '')
            return True
        raw = await redis.hget(key, 'config')
    old = CampaignConfig.model_validate_json(raw or '{}')
    changed = differences(old, config)
    if not changed:
        return False
    if not update:
        raise CampaignConflictError(
            f'campaign {config.name!r} already exists with different settings ({", ".join(changed)}); '
            'use `dialer campaign update` to change them'
        )
    if 'trunk' in changed:
        counters = await redis.hmget(key, ['n:dialing', 'n:in_call'])
        if any(int(c or 0) for c in counters):
            raise CampaignConflictError(
                f'campaign {config.name!r}: trunk cannot change while calls are in flight; pause it and wait'
            )
        await redis.srem(k.trunk_campaigns(old.trunk), config.name)
    await redis.hset(key, 'config', payload)
    await Scripts(redis, outbox).lifecycle(config.name, config.trunk, 'noop')
    return False


def merge_update(config: CampaignConfig, changes: dict[str, Any]) -> CampaignConfig:
    """A copy of ``config`` with ``changes`` applied and validated as a whole."""
    data = json.loads(config.model_dump_json())
    data.update(changes)
    try:
        return CampaignConfig.model_validate(data)
    except ValidationError as exc:
        raise CampaignConflictError(str(exc)) from None


async def change_state(redis: Redis, name: str, action: str, outbox: Outbox = NO_OUTBOX) -> str:
    """``outbox``: where a cancel's closed contacts announce themselves (result webhooks)."""
    config = await read_config(redis, name)
    scripts = Scripts(redis, outbox)
    try:
        state = await scripts.lifecycle(name, config.trunk, action)
    except ValueError as exc:
        raise CampaignConflictError(f'campaign {name!r}: {exc}') from None
    if action == 'cancel':
        while await scripts.cancel_batch(name, config.trunk):
            pass
    return state


async def delete_campaign(redis: Redis, name: str, *, force: bool = False) -> None:
    data = await read_campaign(redis, name)
    in_flight = int(data.get('n:dialing', 0)) + int(data.get('n:in_call', 0))
    if in_flight and not force:
        raise CampaignConflictError(
            f'campaign {name!r} has {in_flight} calls in flight; cancel it and wait, or use --force'
        )
    config = CampaignConfig.model_validate_json(data['config'])
    await redis.srem(k.trunk_campaigns(config.trunk), name)
    await redis.delete(*k.campaign_keys(name))
    await redis.srem(k.CAMPAIGNS, name)
