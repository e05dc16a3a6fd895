"""The pacer's tick against a real Redis: each trunk's campaigns are kept between ticks and checked by
the claim script, so a tick is one round trip, and a campaign added or gone is still seen at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from arq.connections import RedisSettings, create_pool

from dialer import constants as k
from dialer.scripts import Scripts
from tests.ledger import make_campaign, runtime_on_t1
from workers.pacer import LONGEST_REFILL_WAIT, Pacer


async def running_pacer(redis_url: str, tmp_path: Path, more: dict[str, tuple[int, float]] | None = None):
    runtime = runtime_on_t1(redis_url, tmp_path, concurrent=50, cps=100, more=more)
    arq = await create_pool(RedisSettings.from_dsn(redis_url))
    yield Pacer(runtime, arq)
    await arq.aclose()
    await runtime.close()


@pytest.fixture
async def pacer(redis, redis_url: str, tmp_path: Path):
    async for one in running_pacer(redis_url, tmp_path):
        yield one


@pytest.fixture
async def pacer_of_two(redis, redis_url: str, tmp_path: Path):
    async for one in running_pacer(redis_url, tmp_path, more={'t2': (50, 100)}):
        yield one


def campaigns_of(job_refs: list[str]) -> list[str]:
    return sorted(ref.split(':', 1)[0] for ref in job_refs)


async def queued(pacer: Pacer) -> list[str]:
    return sorted(ref.decode() for ref in await pacer.arq.zrange(pacer.arq.default_queue_name, 0, -1))


async def test_a_campaign_added_to_a_trunk_the_pacer_already_dials_is_claimed_on_the_next_tick(redis, pacer) -> None:
    await make_campaign(redis, 'a', numbers=3)
    assert await pacer.tick() == (3, pacer.rt.settings.pacer_interval)
    await make_campaign(redis, 'b', numbers=2)
    claimed, _ = await pacer.tick()
    assert claimed == 2
    assert campaigns_of(await queued(pacer)) == ['a', 'a', 'a', 'b', 'b']


async def test_while_a_trunks_campaigns_stay_the_same_a_tick_reads_no_set(redis, pacer, monkeypatch) -> None:
    await make_campaign(redis, 'a', numbers=3)
    await pacer.tick()

    def no_pipeline(*_: object, **__: object) -> None:
        raise AssertionError('the trunk set was read again although it did not change')

    monkeypatch.setattr(pacer.rt.redis, 'pipeline', no_pipeline)
    await redis.zadd(k.campaign_due('a'), {'+12125559999': 0})
    await redis.hset(k.campaign_contacts('a'), '+12125559999', '{"i": "x", "l": 9}')
    assert (await pacer.tick())[0] == 1


async def test_a_campaign_that_left_its_trunk_is_no_longer_claimed_from(redis, pacer) -> None:
    await make_campaign(redis, 'a', numbers=1)
    await make_campaign(redis, 'b', numbers=1)
    assert (await pacer.tick())[0] == 2
    await redis.srem(k.trunk_campaigns('t1'), 'a')
    await redis.zadd(k.campaign_due('a'), {'+12125559999': 0})
    await redis.zadd(k.campaign_due('b'), {'+12125558888': 0})
    assert (await pacer.tick())[0] == 1
    assert campaigns_of(await queued(pacer)) == ['a', 'b', 'b']


async def test_a_tick_limited_by_its_batch_asks_for_another_at_once(redis, pacer, monkeypatch) -> None:
    monkeypatch.setattr('workers.pacer.CLAIM_BATCH', 2)
    await make_campaign(redis, 'a', numbers=3)
    assert await pacer.tick() == (2, 0)
    assert await pacer.tick() == (1, pacer.rt.settings.pacer_interval)


async def reserve_ahead(redis, trunk: str, sends: int) -> None:
    """``sends`` creates reserved (as rate.lua records them) seconds ahead on ``trunk``."""
    now = await Scripts(redis).now_ms()
    await redis.zadd(k.trunk_unsent(trunk), {f'x:+1212555{i:04d}:1@rate': now + 5_000 + i for i in range(sends)})


async def test_a_trunk_sending_at_its_rate_is_refilled_once_half_its_unsent_set_is_free(redis, pacer) -> None:
    # at 100 calls/s t1 may have 25 attempts claimed or reserved but unsent (a quarter second): 13 is half
    await make_campaign(redis, 'a', numbers=40)
    await reserve_ahead(redis, 't1', 13)  # 12 free: nothing is claimed until the first send leaves
    assert await pacer.tick() == (0, LONGEST_REFILL_WAIT)
    assert await queued(pacer) == []
    await redis.zpopmin(k.trunk_unsent('t1'))  # it was sent: 13 free
    assert (await pacer.tick())[0] == 13
    # the 13 are claimed, not yet reserved: when room comes is not known, so the next tick is the usual one
    assert await pacer.tick() == (0, pacer.rt.settings.pacer_interval)


async def test_a_refilling_trunk_does_not_hold_back_the_claims_of_another(redis, pacer_of_two) -> None:
    await make_campaign(redis, 'a', numbers=20)
    await reserve_ahead(redis, 't1', 20)
    await make_campaign(redis, 'b', trunk='t2', numbers=2)
    assert await pacer_of_two.tick() == (2, pacer_of_two.rt.settings.pacer_interval)
    assert campaigns_of(await queued(pacer_of_two)) == ['b', 'b']
    # nothing left to claim on t2: its next contact may come at any time, so it still bounds the sleep
    assert await pacer_of_two.tick() == (0, pacer_of_two.rt.settings.pacer_interval)
