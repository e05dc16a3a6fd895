"""The Lua scripts that coordinate the fleet, against a real Redis: limits, leases, the attempt ledger."""

from __future__ import annotations

import json

from campaigns.lifecycle import change_state
from dialer import constants as k
from dialer.scripts import FinishedJob, Scripts, SlotLimits
from tests.ledger import LIMITS, begin_first, claim, make_campaign


async def test_claims_never_exceed_the_trunk_limit(redis) -> None:
    await make_campaign(redis)
    scripts = Scripts(redis)
    first = await claim(scripts)
    assert len(first.job_refs) == 2
    again = await claim(scripts)
    assert again.job_refs == []
    assert again.wait_ms == -1
    assert await redis.zcard(k.trunk_slots('t1')) == 2


async def test_a_dead_holders_slot_comes_back_when_its_lease_expires(redis) -> None:
    await make_campaign(redis)
    scripts = Scripts(redis)
    assert len((await claim(scripts)).job_refs) == 2
    await redis.set(k.CLOCK_OFFSET, 61_000)  # travel past the 60 s claim lease
    assert len((await claim(scripts)).job_refs) == 2


async def test_campaigns_sharing_a_trunk_get_turns(redis) -> None:
    await make_campaign(redis, 'a', numbers=10)
    await make_campaign(redis, 'b', numbers=10)
    scripts = Scripts(redis)
    refs = (await claim(scripts, ('a', 'b'), SlotLimits(trunk=6, account=0))).job_refs
    assert sorted(ref.split(':')[0] for ref in refs) == ['a', 'a', 'a', 'b', 'b', 'b']


async def test_rate_tokens_are_spaced_by_the_calls_per_second_limit(redis) -> None:
    scripts = Scripts(redis)
    args = {'trunk_interval_ms': 500, 'trunk_burst': 1, 'account_interval_ms': 1, 'account_per_minute': 0}
    assert await scripts.take_rate_token('t1', 'x:1', **args) == 0
    wait = await scripts.take_rate_token('t1', 'x:2', **args)
    assert 400 < wait <= 500
    await redis.set(k.CLOCK_OFFSET, 500)
    assert await scripts.take_rate_token('t1', 'x:2', **args) == 0


async def test_the_per_minute_account_limit_counts_a_sliding_minute(redis) -> None:
    scripts = Scripts(redis)
    args = {'trunk_interval_ms': 1, 'trunk_burst': 100, 'account_interval_ms': 1, 'account_per_minute': 3}
    for i in range(3):
        await redis.set(k.CLOCK_OFFSET, i * 10)
        assert await scripts.take_rate_token('t1', f'x:{i}', **args) == 0
    assert await scripts.take_rate_token('t1', 'x:9', **args) > 59_000


async def test_an_attempt_is_recorded_before_the_create_and_a_rerun_sees_it_as_ambiguous(redis) -> None:
    await make_campaign(redis)
    scripts = Scripts(redis)
    job_ref = await begin_first(scripts)
    number = job_ref.split(':')[1]
    record = json.loads(await redis.hget(k.campaign_attempts('c1'), f'{number}:1'))
    assert record['st'] == 'creating'
    assert await scripts.send(job_ref.split('#')[0]) == 'go'
    rerun = await scripts.begin(job_ref, 't1', LIMITS, 60_000)
    assert rerun.verdict == 'ambiguous'


async def test_handing_back_spends_no_attempt(redis) -> None:
    await make_campaign(redis, numbers=1)
    scripts = Scripts(redis)
    job_ref = await begin_first(scripts)
    assert await scripts.hand_back(job_ref, 't1', delay_ms=0)
    progress = json.loads(await redis.hget(k.campaign_progress('c1'), '+12125550000'))
    assert progress['a'] == 0
    assert not progress['ts']  # cjson writes an empty list as {}
    assert progress['s'] == 'pending'
    again = (await claim(scripts)).job_refs
    assert again[0].startswith('c1:+12125550000:1#')
    assert await redis.zcard(k.trunk_slots('t1')) == 1


async def test_an_end_reported_twice_is_recorded_once_and_frees_the_slot(redis) -> None:
    await make_campaign(redis, numbers=1)
    scripts = Scripts(redis)
    job_ref = await begin_first(scripts)
    attempt_id = job_ref.split('#')[0]
    assert await scripts.created(attempt_id, 't1', 'call-1', LIMITS, lease_ms=100_000, first_poll_ms=1)
    assert not await scripts.created(attempt_id, 't1', 'call-1', LIMITS, lease_ms=100_000, first_poll_ms=1)
    end = {
        'retry_at_ms': None,
        'tracking_member': f'{attempt_id}|call-1',
        'billing_final': True,
        'billing_poll_ms': 1,
    }
    assert await scripts.finish(attempt_id, 't1', 'answered', {'sip': 12, 'agent': 12}, **end)
    assert not await scripts.finish(attempt_id, 't1', 'answered', {'sip': 12, 'agent': 12}, **end)
    campaign = await redis.hgetall(k.campaign('c1'))
    assert campaign['o:answered'] == '1'
    assert float(campaign['sip_seconds']) == 12
    assert campaign['state'] == 'completed'
    assert await redis.zcard(k.trunk_slots('t1')) == 0
    assert await redis.zcard(k.TRACKING) == 0


async def test_a_paused_campaigns_claimed_attempt_goes_back_untouched(redis) -> None:
    await make_campaign(redis, numbers=1)
    scripts = Scripts(redis)
    job_ref = (await claim(scripts)).job_refs[0]
    await change_state(redis, 'c1', 'pause')
    assert (await scripts.begin(job_ref, 't1', LIMITS, 60_000)).verdict == 'paused'
    assert await redis.zcard(k.campaign_due('c1')) == 1
    assert await redis.zcard(k.trunk_slots('t1')) == 0
    await change_state(redis, 'c1', 'resume')
    assert len((await claim(scripts)).job_refs) == 1


async def test_a_number_added_to_dnc_after_claim_is_never_dialled(redis) -> None:
    await make_campaign(redis, numbers=1)
    scripts = Scripts(redis)
    job_ref = (await claim(scripts)).job_refs[0]
    await redis.sadd(k.DNC, '+12125550000')
    assert (await scripts.begin(job_ref, 't1', LIMITS, 60_000)).verdict == 'dnc'
    campaign = await redis.hgetall(k.campaign('c1'))
    assert campaign['o:dnc'] == '1'
    assert campaign['state'] == 'completed'


async def test_cancel_closes_every_undialled_contact(redis) -> None:
    await make_campaign(redis, numbers=5)
    await change_state(redis, 'c1', 'cancel')
    campaign = await redis.hgetall(k.campaign('c1'))
    assert campaign['o:cancelled'] == '5'
    assert campaign['n:pending'] == '0'
    assert await redis.zcard(k.campaign_due('c1')) == 0


async def test_a_trunk_whose_calls_keep_failing_is_backed_off(redis) -> None:
    await make_campaign(redis, numbers=4)
    scripts = Scripts(redis)
    limits = SlotLimits(trunk=4, account=0)
    refs = (await claim(scripts, limits=limits)).job_refs
    for i, job_ref in enumerate(refs):
        assert (await scripts.begin(job_ref, 't1', limits, 60_000)).verdict == 'go'
        attempt_id = job_ref.split('#', 1)[0]
        await scripts.created(attempt_id, 't1', f'call-{i}', limits, lease_ms=100_000, first_poll_ms=1)
        end = {'retry_at_ms': None, 'billing_final': True, 'billing_poll_ms': 1, 'breaker': (3, 30_000)}
        await scripts.finish(attempt_id, 't1', 'failed', {'call': f'call-{i}'}, **end)
        held = await redis.pttl(k.trunk_hold('t1'))
        assert (held > 0) == (i >= 2), f'open after the 3rd failure in a row, not before (call {i})'
    assert (await claim(scripts, limits=limits)).wait_ms > 0


async def test_no_1s_window_holds_more_sends_than_the_trunk_allows_however_late_jobs_woke(redis) -> None:
    # four jobs whose reserved slots were spread out woke late, all at once: the window lets three go
    await make_campaign(redis, numbers=4)
    scripts = Scripts(redis)
    wide = SlotLimits(trunk=10, account=10)
    claimed = await claim(scripts, limits=wide)
    attempts = []
    for job_ref in claimed.job_refs:
        assert (await scripts.begin(job_ref, 't1', wide, 60_000)).verdict == 'go'
        attempts.append(job_ref.split('#')[0])
    verdicts = [await scripts.send(a, trunk='t1', per_second=3, window_ms=1050) for a in attempts]
    assert verdicts[:3] == ['go'] * 3
    assert verdicts[3].startswith('wait:')
    assert 1000 < int(verdicts[3].removeprefix('wait:')) <= 1051, 'the window is widened by the margin'
    _, number, attempt = k.parse_attempt_id(attempts[3])
    record = json.loads(await redis.hget(k.campaign_attempts('c1'), f'{number}:{attempt}'))
    assert 'sent' not in record, 'a send told to wait is not marked as possibly sent'
    # once the first send has left the window, the fourth goes
    await redis.set(k.CLOCK_OFFSET, 1_052)
    assert await scripts.send(attempts[3], trunk='t1', per_second=3, window_ms=1050) == 'go'
    assert 0 < await redis.pttl(k.trunk_sends('t1')) <= 2_050


async def test_a_claim_given_other_campaigns_than_the_trunk_has_claims_nothing_and_names_the_real_ones(redis) -> None:
    await make_campaign(redis, 'a')
    await make_campaign(redis, 'b')
    scripts = Scripts(redis)
    stale = await claim(scripts, ('a', 'gone'))
    assert (stale.job_refs, stale.campaigns) == ([], ['a', 'b'])
    assert await redis.zcard(k.trunk_slots('t1')) == 0
    assert (await claim(scripts, ('b', 'a'))).campaigns is None, 'order does not matter'


async def test_recording_a_call_finishes_the_job_that_made_it_and_a_second_record_touches_no_job(redis) -> None:
    await make_campaign(redis, numbers=1)
    scripts = Scripts(redis)
    attempt_id = (await begin_first(scripts)).split('#')[0]
    job = FinishedJob('arq:queue', 'job-1', ('arq:job:job-1', 'arq:retry:job-1', 'arq:in-progress:job-1'))
    await redis.zadd(job.queue, {job.member: 1})
    for key in job.keys:
        await redis.set(key, '1')
    assert await scripts.created(attempt_id, 't1', 'call-1', LIMITS, lease_ms=100_000, first_poll_ms=1, job=job)
    assert await redis.zscore(job.queue, job.member) is None
    assert await redis.exists(*job.keys) == 0
    # a rerun that finds the call recorded finishes nothing: its own job is arq's to finish
    await redis.zadd(job.queue, {job.member: 1})
    await redis.set(job.keys[0], '1')
    assert not await scripts.created(attempt_id, 't1', 'call-1', LIMITS, lease_ms=100_000, first_poll_ms=1, job=job)
    assert await redis.zscore(job.queue, job.member) == 1
    assert await redis.exists(job.keys[0]) == 1
