"""The rate script reserves one creation slot per attempt, against a real Redis.

A dial job asks once and sleeps until its reserved send time; these tests read the reservations the
script records (the ``<attempt>@rate`` entries of the trunk's unsent set, scored by send time).
"""

from __future__ import annotations

import asyncio
import itertools

from dialer import constants as k
from dialer.scripts import Scripts


CPS_5 = {'trunk_interval_ms': 200.0, 'trunk_burst': 1, 'account_interval_ms': 1.0, 'account_per_minute': 0}


async def reserved_at(redis, attempt_id: str, trunk: str = 't1') -> float | None:
    return await redis.zscore(k.trunk_unsent(trunk), f'{attempt_id}@rate')


async def test_concurrent_attempts_each_get_their_own_slot_from_one_call(redis) -> None:
    scripts = Scripts(redis)
    ids = [f'c:{i}:1' for i in range(12)]
    waits = await asyncio.gather(*(scripts.take_rate_token('t1', i, **CPS_5, max_wait_ms=10_000) for i in ids))
    assert all(wait >= 0 for wait in waits)
    sends = sorted([await reserved_at(redis, i) for i in ids])
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert min(gaps) >= 200  # never closer than the interval, so never 6 in any 1 s window
    assert max(gaps) < 201  # and no slot wasted between them


async def test_the_account_limit_spaces_reservations_across_trunks(redis) -> None:
    scripts = Scripts(redis)
    args = {'trunk_interval_ms': 1.0, 'trunk_burst': 10, 'account_interval_ms': 100.0, 'account_per_minute': 0}
    for i in range(6):
        await scripts.take_rate_token(f't{i % 2}', f'c:{i}:1', **args)
    sends = sorted([await reserved_at(redis, f'c:{i}:1', f't{i % 2}') for i in range(6)])
    assert min(b - a for a, b in itertools.pairwise(sends)) >= 100


async def test_a_wait_longer_than_the_limit_reserves_nothing(redis) -> None:
    scripts = Scripts(redis)
    for i in range(5):  # 0, 200, ... 800 ms ahead
        assert await scripts.take_rate_token('t1', f'c:{i}:1', **CPS_5, max_wait_ms=900) >= 0
    tat = await redis.get(k.trunk_rate('t1'))
    refused = await scripts.take_rate_token('t1', 'c:9:1', **CPS_5, max_wait_ms=900)
    assert refused < -900  # ask again after the wait it would have had
    assert await reserved_at(redis, 'c:9:1') is None
    assert await redis.get(k.trunk_rate('t1')) == tat  # no hole: the next attempt gets the very next slot
    assert await scripts.take_rate_token('t1', 'c:10:1', **CPS_5, max_wait_ms=2000) > 900


async def test_asking_again_answers_the_same_reservation(redis) -> None:
    scripts = Scripts(redis)
    await scripts.take_rate_token('t1', 'c:0:1', **CPS_5)
    first = await scripts.take_rate_token('t1', 'c:1:1', **CPS_5)
    sent_at = await reserved_at(redis, 'c:1:1')
    again = await scripts.take_rate_token('t1', 'c:1:1', **CPS_5)  # e.g. the script's reply was lost
    assert 0 < again <= first
    assert await reserved_at(redis, 'c:1:1') == sent_at
    third = await scripts.take_rate_token('t1', 'c:2:1', **CPS_5)
    assert await reserved_at(redis, 'c:2:1') == sent_at + 200  # the rerun took no second slot
    assert third > first


async def test_a_past_reservation_with_later_ones_after_it_is_not_reused(redis) -> None:
    scripts = Scripts(redis)
    await scripts.take_rate_token('t1', 'c:0:1', **CPS_5)
    await scripts.take_rate_token('t1', 'c:1:1', **CPS_5)
    await redis.set(k.CLOCK_OFFSET, 250)  # c:1's slot (~200 ms) has passed; c:2 reserves after it
    await scripts.take_rate_token('t1', 'c:2:1', **CPS_5)
    c2 = await reserved_at(redis, 'c:2:1')
    await scripts.take_rate_token('t1', 'c:1:1', **CPS_5)  # a second create try of c:1, later
    assert await reserved_at(redis, 'c:1:1') >= c2 + 200  # a new slot after c:2, never next to it


async def test_a_hold_reserves_nothing_and_says_how_long_it_lasts(redis) -> None:
    scripts = Scripts(redis)
    await redis.set(k.trunk_hold('t1'), 'breaker', px=5000)
    wait = await scripts.take_rate_token('t1', 'c:0:1', **CPS_5)
    assert -5000 <= wait < -4000
    assert await reserved_at(redis, 'c:0:1') is None
    assert await redis.get(k.trunk_rate('t1')) is None


async def test_the_per_minute_limit_counts_reservations_ahead(redis) -> None:
    scripts = Scripts(redis)
    args = {'trunk_interval_ms': 1.0, 'trunk_burst': 100, 'account_interval_ms': 1.0, 'account_per_minute': 3}
    for i in range(3):
        assert await scripts.take_rate_token('t1', f'c:{i}:1', **args, max_wait_ms=2000) >= 0
    assert await scripts.take_rate_token('t1', 'c:3:1', **args, max_wait_ms=2000) < -59_000
    assert await redis.zcard(k.ACCOUNT_RATE_MINUTE) == 3


async def test_every_key_the_script_writes_expires(redis) -> None:
    scripts = Scripts(redis)
    args = {**CPS_5, 'account_per_minute': 10}
    for i in range(3):
        await scripts.take_rate_token('t1', f'c:{i}:1', **args)
    for key in (k.trunk_rate('t1'), k.ACCOUNT_RATE_SECOND, k.ACCOUNT_RATE_MINUTE, k.trunk_unsent('t1')):
        assert await redis.pttl(key) > 0, key


async def test_a_send_that_is_not_an_ultravox_create_takes_a_trunk_slot_and_leaves_the_account_alone(redis) -> None:
    scripts = Scripts(redis)
    account = {'trunk_interval_ms': 1.0, 'trunk_burst': 1, 'account_interval_ms': 1000.0, 'account_per_minute': 1}
    assert await scripts.take_rate_token('t0', 'c:0:1', **account) == 0  # the account's only slot this second
    account_sends = await redis.zrange(k.ACCOUNT_RATE_SECOND, 0, -1, withscores=True)
    leg_only = {**CPS_5, 'account_interval_ms': 0.0}
    waits = [await scripts.take_rate_token('t1', f'c:{i}:1|leg', **leg_only) for i in range(1, 4)]
    assert waits[0] == 0, 'the account being full does not hold a phone leg back'
    sends = [await reserved_at(redis, f'c:{i}:1|leg') for i in range(1, 4)]
    assert min(b - a for a, b in itertools.pairwise(sends)) >= 200, "the trunk's rate still spaces them"
    assert await redis.zrange(k.ACCOUNT_RATE_SECOND, 0, -1, withscores=True) == account_sends
    assert await redis.zcard(k.ACCOUNT_RATE_MINUTE) == 1
    wait = await scripts.take_rate_token('t2', 'c:5:1', **account)
    assert wait > 50_000, 'the next Ultravox create still waits for the per-minute limit'


async def test_a_slow_trunks_reservation_ahead_holds_only_its_own_account_slot(redis) -> None:
    scripts = Scripts(redis)
    slow = {'trunk_interval_ms': 30_000.0, 'trunk_burst': 1, 'account_interval_ms': 100.0, 'account_per_minute': 0}
    fast = {**slow, 'trunk_interval_ms': 1.0, 'trunk_burst': 10}
    assert await scripts.take_rate_token('slow', 's:0:1', **slow) == 0
    assert await scripts.take_rate_token('slow', 's:1:1', **slow) > 29_000  # reserved ~30 s ahead
    ahead = await reserved_at(redis, 's:1:1', 'slow')
    waits = [await scripts.take_rate_token('fast', f'f:{i}:1', **fast) for i in range(3)]
    assert max(waits) < 1_000, 'another trunk is not held back until the slow trunk sends'
    sends = sorted(
        [await reserved_at(redis, 's:0:1', 'slow')] + [await reserved_at(redis, f'f:{i}:1', 'fast') for i in range(3)]
    )
    assert min(b - a for a, b in itertools.pairwise(sends)) >= 100, "the account's spacing still holds"
    # a create reserved next to the slot ahead keeps the account's spacing on both sides of it
    await redis.set(k.CLOCK_OFFSET, int(ahead - 50 - (await redis.time())[0] * 1000))
    assert await scripts.take_rate_token('fast', 'f:9:1', **fast) >= 0
    near = await reserved_at(redis, 'f:9:1', 'fast')
    assert abs(near - ahead) >= 100


async def test_a_held_phone_leg_goes_before_new_dials_and_a_lost_one_stops_holding_them_back(redis) -> None:
    scripts = Scripts(redis)
    leg, leg_only = 'c:1:1|call|leg', {**CPS_5, 'account_interval_ms': 0.0}
    now = int(await scripts.now_ms())
    await redis.zadd(k.trunk_held_legs('t1'), {leg: now})  # as leg.lua records a 429'd leg
    await redis.pexpire(k.trunk_held_legs('t1'), 10_000)
    refused = await scripts.take_rate_token('t1', 'c:2:1', **CPS_5)
    assert refused < 0, 'a new dial reserves nothing while a held leg waits'
    assert await reserved_at(redis, 'c:2:1') is None
    assert await scripts.take_rate_token('t2', 'c:3:1', **CPS_5) == 0, 'other trunks dial on'
    assert await scripts.take_rate_token('t1', leg, **leg_only) == 0, 'the held leg takes the first slot'
    # a hold on the trunk moves the waiting leg's time on, so it stays first in line after the hold
    await redis.set(k.trunk_hold('t1'), '429', px=2_000)
    assert await scripts.take_rate_token('t1', leg, **leg_only) < 0
    assert await redis.zscore(k.trunk_held_legs('t1'), leg) > now + 1_500
    await redis.delete(k.trunk_hold('t1'))
    # a leg whose worker was lost keeps new dials back only until a grace after its time
    await redis.set(k.CLOCK_OFFSET, 2_000 + 5_000 + 100)
    assert await scripts.take_rate_token('t1', 'c:2:1', **CPS_5) >= 0
    assert not await redis.exists(k.trunk_held_legs('t1'))
