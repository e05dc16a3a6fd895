"""The ledger under faults, script by script against a real Redis: ambiguous creates are quarantined,
only the attempt's own call ends it, account and campaign faults hold attempts unspent, requeue reopens."""

from __future__ import annotations

import json

from campaigns.requeue import requeue
from dialer import constants as k
from dialer.models import Outcome
from dialer.scripts import Scripts, SlotLimits
from tests.ledger import LIMITS, begin_first, claim, live_call, make_campaign


WIDE = SlotLimits(trunk=10, account=0)


async def ambiguous_attempt(redis, scripts: Scripts) -> tuple[str, str]:
    """An attempt whose create went out and whose answer was lost; returns (job ref, attempt id)."""
    job_ref = await begin_first(scripts)
    assert await scripts.send(job_ref.split('#')[0]) == 'go'
    rerun = await scripts.begin(job_ref, 't1', LIMITS, 60_000, 3_600_000)
    assert rerun.verdict == 'ambiguous'
    return job_ref, job_ref.split('#')[0]


async def test_an_ambiguous_create_is_not_forgotten_before_its_quarantine_ends(redis) -> None:
    await make_campaign(redis, numbers=1)
    scripts = Scripts(redis)
    _, attempt_id = await ambiguous_attempt(redis, scripts)
    assert await redis.zscore(k.AMBIGUOUS, attempt_id) is not None
    for lookups, travel in enumerate((0, 200_000, 599_000), start=1):
        await redis.set(k.CLOCK_OFFSET, travel)
        verdict = await scripts.forget(attempt_id, 600_000)
        assert not verdict.forgotten
        assert verdict.lookups == lookups
        assert 0 < verdict.quarantine_left_ms <= 600_000 - travel
    await redis.set(k.CLOCK_OFFSET, 600_001)
    assert (await scripts.forget(attempt_id, 600_000)).forgotten
    assert await redis.zscore(k.AMBIGUOUS, attempt_id) is None


async def test_an_ambiguous_attempt_holds_its_slot_as_long_as_a_call_could_last(redis) -> None:
    await make_campaign(redis, numbers=1)
    scripts = Scripts(redis)
    _, attempt_id = await ambiguous_attempt(redis, scripts)
    now = await scripts.now_ms()
    assert await redis.zscore(k.trunk_slots('t1'), attempt_id) > now + 3_000_000


async def test_a_quarantined_attempt_leaves_the_ambiguous_set_when_its_call_is_found(redis) -> None:
    await make_campaign(redis, numbers=1)
    scripts = Scripts(redis)
    _, attempt_id = await ambiguous_attempt(redis, scripts)
    assert await scripts.created(attempt_id, 't1', 'call-9', LIMITS, lease_ms=1000, first_poll_ms=10)
    assert await redis.zcard(k.AMBIGUOUS) == 0


async def test_only_the_attempts_own_call_can_end_it(redis) -> None:
    attempt_id = await live_call(redis, 'call-1')
    scripts = Scripts(redis)
    fields = {'call': 'call-2', 'sip': 0, 'agent': 0, 'bsrc': 'computed'}
    ended = await scripts.finish(
        attempt_id, 't1', 'answered', fields, retry_at_ms=None, billing_final=True, billing_poll_ms=0
    )
    assert not ended
    assert await redis.zcard(k.trunk_slots('t1')) == 1, 'the real call keeps its slot'
    assert json.loads(await redis.hget(k.campaign_attempts('c1'), attempt_id.split(':', 1)[1]))['st'] == 'live'
    fields['call'] = 'call-1'
    assert await scripts.finish(
        attempt_id, 't1', 'answered', fields, retry_at_ms=None, billing_final=True, billing_poll_ms=0
    )


async def test_an_account_fault_hands_claimed_attempts_back_unspent(redis) -> None:
    await make_campaign(redis, numbers=2)
    scripts = Scripts(redis)
    job_refs = (await claim(scripts)).job_refs
    await scripts.hold(k.ACCOUNT_HOLD, 30_000, f'{k.FAULT_HOLD_PREFIX}unauthorized: HTTP 401')
    for job_ref in job_refs:
        assert (await scripts.begin(job_ref, 't1', LIMITS, 60_000)).verdict == 'held'
    campaign = await redis.hgetall(k.campaign('c1'))
    assert campaign['n:pending'] == '2'
    assert await redis.hlen(k.campaign_attempts('c1')) == 0
    assert (await claim(scripts)).job_refs == [], 'nothing is claimed while the account is faulty'
    assert await scripts.lift_fault()
    assert len((await claim(scripts)).job_refs) == 2


async def test_a_429_hold_is_not_taken_for_a_fault_and_is_not_lifted_by_a_probe(redis) -> None:
    await make_campaign(redis, numbers=1)
    scripts = Scripts(redis)
    job_ref = (await claim(scripts)).job_refs[0]
    await scripts.hold(k.ACCOUNT_HOLD, 30_000, 'ultravox 429')
    assert (await scripts.begin(job_ref, 't1', LIMITS, 60_000)).verdict == 'go'
    assert not await scripts.lift_fault()
    assert await redis.get(k.ACCOUNT_HOLD) == 'ultravox 429'


async def test_a_campaign_fault_holds_only_that_campaign(redis) -> None:
    await make_campaign(redis, 'a', numbers=2)
    await make_campaign(redis, 'b', numbers=2)
    scripts = Scripts(redis)
    await redis.hset(k.campaign('a'), 'fault', json.dumps({'reason': 'agent_not_found'}))
    refs = (await claim(scripts, ('a', 'b'))).job_refs
    assert {ref.split(':')[0] for ref in refs} == {'b'}


async def test_requeue_reopens_failed_contacts_with_a_fresh_budget(redis) -> None:
    phones = await make_campaign(redis, numbers=3)
    scripts = Scripts(redis)
    for job_ref in (await claim(scripts, limits=WIDE)).job_refs:
        assert (await scripts.begin(job_ref, 't1', WIDE, 60_000)).verdict == 'go'
        reason = 'request rejected (401): bad key' if job_ref.split(':')[1] != phones[2] else 'trunk down'
        await scripts.finish(
            job_ref.split('#')[0],
            't1',
            'failed',
            {'r': reason, 'sip': 0, 'agent': 0, 'bsrc': 'computed'},
            retry_at_ms=None,
            billing_final=True,
            billing_poll_ms=0,
            job_ref=job_ref,
        )
    assert await redis.hget(k.campaign('c1'), 'state') == 'completed'
    assert await requeue(redis, 'c1', Outcome.FAILED, '401') == 2
    campaign = await redis.hgetall(k.campaign('c1'))
    assert campaign['state'] == 'active'
    assert campaign['n:pending'] == '2'
    assert campaign['o:failed'] == '1'
    assert 'c1' in await redis.smembers(k.trunk_campaigns('t1'))
    progress = json.loads(await redis.hget(k.campaign_progress('c1'), phones[0]))
    assert progress['b'] == 1, 'the attempt made before no longer counts'
    refs = (await claim(scripts, limits=WIDE)).job_refs
    assert sorted(ref.split('#')[0] for ref in refs) == sorted(f'c1:{p}:2' for p in phones[:2])
    assert await requeue(redis, 'c1', Outcome.FAILED, '401') == 0, 'requeue is idempotent'


async def test_a_created_call_is_counted_even_when_its_attempt_was_already_recorded_as_ended(
    redis, redis_url: str, tmp_path
) -> None:
    from prometheus_client import REGISTRY  # noqa: PLC0415

    from dialer.settings import Settings  # noqa: PLC0415
    from tests.fleet_helpers import write_trunks  # noqa: PLC0415
    from workers.dial import _record_created  # noqa: PLC0415
    from workers.runtime import Runtime  # noqa: PLC0415

    attempt_id = await live_call(redis, 'call-1')
    scripts = Scripts(redis)
    fields = {'call': 'call-1', 'sip': 0, 'agent': 0, 'bsrc': 'computed'}
    assert await scripts.finish(
        attempt_id, 't1', 'busy', fields, retry_at_ms=None, billing_final=True, billing_poll_ms=0
    )
    trunks = write_trunks(tmp_path / 'trunks.toml', 'sip.t1.example', {'t1': (2, 1.0)})
    rt = Runtime.create(Settings(redis_url=redis_url, trunks_file=trunks))
    labels = {'trunk': 't1', 'campaign': 'c1'}
    before = REGISTRY.get_sample_value('dialer_calls_created_total', labels) or 0
    try:
        config = await rt.configs.get('c1')
        await _record_created(rt, attempt_id, config, rt.trunks.get('t1'), {'callId': 'call-1'}, 0.0)
    finally:
        await rt.close()
    assert REGISTRY.get_sample_value('dialer_calls_created_total', labels) == before + 1


async def test_a_rerun_of_an_attempt_that_never_reached_its_send_starts_again_without_a_lookup(redis) -> None:
    await make_campaign(redis, numbers=1)
    scripts = Scripts(redis)
    job_ref = await begin_first(scripts)  # recorded 'creating', then the worker died waiting for its rate slot
    rerun = await scripts.begin(job_ref, 't1', LIMITS, 60_000, 3_600_000)
    assert rerun.verdict == 'go'
    assert len(rerun.progress['ts']) == 1, 'the attempt time is counted once'
    assert await redis.zcard(k.AMBIGUOUS) == 0


async def test_an_opt_out_while_waiting_for_the_rate_slot_stops_the_create(redis) -> None:
    phones = await make_campaign(redis, numbers=1)
    scripts = Scripts(redis)
    attempt_id = (await begin_first(scripts)).split('#')[0]
    await redis.sadd(k.DNC, phones[0])
    assert await scripts.send(attempt_id) == 'dnc'
    record = json.loads(await redis.hget(k.campaign_attempts('c1'), f'{phones[0]}:1'))
    assert 'sent' not in record, 'nothing went out'


async def test_a_pause_while_waiting_for_the_rate_slot_stops_the_create(redis) -> None:
    await make_campaign(redis, numbers=1)
    scripts = Scripts(redis)
    attempt_id = (await begin_first(scripts)).split('#')[0]
    await redis.hset(k.campaign('c1'), 'state', 'paused')
    assert await scripts.send(attempt_id) == 'paused'


async def test_a_billing_webhook_that_arrives_while_the_end_is_recorded_is_not_lost(redis) -> None:
    attempt_id = await live_call(redis, 'call-1')
    member = f'{attempt_id}|call-1'
    scripts = Scripts(redis)
    await redis.zadd(k.TRACKING, {member: 0})  # leased by a poll, then nudged to "now" by call.billed
    fields = {'call': 'call-1', 'sip': 0, 'agent': 0, 'bsrc': 'computed'}
    assert await scripts.finish(
        attempt_id, 't1', 'answered', fields, retry_at_ms=None, tracking_member=member,
        billing_final=False, billing_poll_ms=60_000,
    )  # fmt: skip
    assert await redis.zscore(k.TRACKING, f'{member}|b') <= await scripts.now_ms()


async def test_a_poll_does_not_push_back_an_entry_a_webhook_made_due_while_it_was_polled(redis) -> None:
    scripts = Scripts(redis)
    await redis.zadd(k.TRACKING, {'a|nudged': 0, 'b|leased': 10**13})
    await scripts.reschedule(k.TRACKING, ['a|nudged', 'b|leased', 'c|gone'], 60_000)
    now = await scripts.now_ms()
    assert await redis.zscore(k.TRACKING, 'a|nudged') == 0, 'still due now'
    assert now < await redis.zscore(k.TRACKING, 'b|leased') <= now + 60_000
    assert await redis.zscore(k.TRACKING, 'c|gone') is None


async def test_the_trunk_and_caller_id_of_an_attempt_are_recorded_when_its_create_is_sent(redis) -> None:
    phones = await make_campaign(redis, numbers=1)
    scripts = Scripts(redis)
    attempt_id = (await begin_first(scripts)).split('#')[0]
    assert await scripts.send(attempt_id, caller_id='+14155550100', trunk='t1') == 'go'
    record = json.loads(await redis.hget(k.campaign_attempts('c1'), f'{phones[0]}:1'))
    assert (record['trunk'], record['from']) == ('t1', '+14155550100')


async def test_the_trackers_look_hands_back_next_poll_times_but_keeps_a_nudged_call_due(redis) -> None:
    scripts = Scripts(redis)
    await redis.zadd(k.TRACKING, {'a|nudged': 0, 'b|leased': 10**13})
    look = await scripts.lease_due_calls(10, 30_000, {'a|nudged': 60_000, 'b|leased': 60_000, 'c|gone': 0})
    now = await scripts.now_ms()
    assert (look.members, look.webhooks_live) == (['a|nudged'], False), 'the nudged call is due now, and leased'
    assert now < await redis.zscore(k.TRACKING, 'b|leased') <= now + 60_000
    assert await redis.zscore(k.TRACKING, 'c|gone') is None, 'rescheduling never adds'
    # the next member falls due when the nudged call's lease runs out (30 s), before b's 60 s
    assert look.next_due_ms is not None
    assert 0 < look.next_due_ms <= 30_000
    await redis.set(k.WEBHOOKS_LIVE, 1)
    look = await scripts.lease_due_calls(10, 30_000, {})
    assert (look.members, look.webhooks_live) == ([], True)
    await redis.delete(k.TRACKING)
    assert (await scripts.lease_due_calls(10, 30_000, {})).next_due_ms is None, 'an empty schedule: nothing falls due'
