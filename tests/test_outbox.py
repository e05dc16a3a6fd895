"""The result-webhook outbox: events appended by the scripts that record facts, leased in order per
contact, retried, given up, capped, replayed and trimmed (real Redis, a real receiving server)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from dialer import constants as k
from dialer.outbox import NO_OUTBOX, Outbox, ResultWebhook, append_event, event_body, signed_headers, verify
from dialer.scripts import Scripts
from dialer.settings import Settings
from tests.fleet_helpers import write_trunks
from tests.result_receiver import ResultReceiver
from workers.outbox_delivery import OutboxDelivery


if TYPE_CHECKING:
    from redis.asyncio import Redis


SECRET = 'receiver-secret-0123456789'
NUMBER = '+14155550123'


def outbox(*urls: str, max_events: int = 1000) -> Outbox:
    return Outbox(tuple(ResultWebhook(url=url, secret=SECRET) for url in urls), max_events)


async def live_attempt(redis: Redis, name: str = 'spring', number: str = NUMBER, attempt: int = 1) -> str:
    """A campaign with one contact whose attempt's call is live, as the dial path leaves it."""
    await redis.hset(k.campaign(name), mapping={'state': 'active', 'n:in_call': 1})
    await redis.hset(k.campaign_contacts(name), number, json.dumps({'i': 'crm-7', 'l': 2}))
    await redis.hset(k.campaign_progress(name), number, json.dumps({'s': 'in_call', 'a': attempt, 'c': attempt}))
    await redis.hset(k.campaign_attempts(name), f'{number}:{attempt}', json.dumps({'st': 'live', 'call': 'call-1'}))
    return k.attempt_id(name, number, attempt)


async def finish(scripts: Scripts, attempt_id: str, outcome: str = 'answered', retry_at_ms: int | None = None) -> bool:
    fields = {'call': 'call-1', 'er': 'hangup', 'dur': 42.5, 'sip': 48, 'agent': 43, 'bsrc': 'ultravox', 'sum': 'ok'}
    return await scripts.finish(
        attempt_id, 'carrier-a', outcome, fields, retry_at_ms=retry_at_ms, billing_final=True, billing_poll_ms=1000
    )


async def stored_events(redis: Redis) -> list[dict[str, Any]]:
    ids = await redis.zrange(k.OUTBOX_LOG, 0, -1)
    return [json.loads(raw) for raw in await redis.hmget(k.OUTBOX_EVENTS, ids)] if ids else []


async def test_an_attempt_end_and_its_events_are_written_by_the_same_script(redis: Redis) -> None:
    box = outbox('http://127.0.0.1:9/a')
    scripts = Scripts(redis, box)
    assert await finish(scripts, await live_attempt(redis))
    events = await stored_events(redis)
    assert [e['type'] for e in events] == ['attempt.ended', 'contact.completed', 'campaign.completed']
    ended = events[0]['data']
    assert ended['campaign'] == 'spring'
    assert ended['contact_id'] == 'crm-7'
    assert ended['phone'] == NUMBER
    assert (ended['attempt'], ended['call_id'], ended['outcome']) == (1, 'call-1', 'answered')
    assert (ended['sip_billed_seconds'], ended['billing_final'], ended['summary']) == (48, True, 'ok')
    assert events[1]['data']['final_outcome'] == 'answered'
    assert events[0]['key'] == events[1]['key'] == f'spring:{NUMBER}'
    # recorded once: the same end reported again appends nothing
    assert not await finish(scripts, k.attempt_id('spring', NUMBER, 1))
    assert len(await stored_events(redis)) == 3
    dest = box.destination_ids[0]
    assert await redis.zcard(k.outbox_pending(dest)) == 3


async def test_a_retried_attempt_appends_only_attempt_ended(redis: Redis) -> None:
    scripts = Scripts(redis, outbox('http://127.0.0.1:9/a'))
    await finish(scripts, await live_attempt(redis), outcome='no_answer', retry_at_ms=10**13)
    events = await stored_events(redis)
    assert [e['type'] for e in events] == ['attempt.ended']
    assert events[0]['data']['retry_at_ms'] == 10**13


async def test_without_destinations_nothing_is_written_to_the_outbox(redis: Redis) -> None:
    assert await finish(Scripts(redis, NO_OUTBOX), await live_attempt(redis))
    assert not [key async for key in redis.scan_iter('dialer:outbox:*')]
    assert await append_event(Scripts(redis), NO_OUTBOX, 'contact.opted_out', 'spring:+1', {}) is None


async def test_a_contacts_events_are_leased_one_at_a_time_in_order(redis: Redis) -> None:
    box = outbox('http://127.0.0.1:9/a')
    scripts, dest = Scripts(redis, box), box.destination_ids[0]
    first = await append_event(scripts, box, 'attempt.ended', 'c:+1', {'n': 1})
    await append_event(scripts, box, 'attempt.ended', 'c:+2', {'n': 1})
    second = await append_event(scripts, box, 'contact.completed', 'c:+1', {'n': 2})
    leased = (await scripts.outbox_lease(dest, 10, 60_000)).leases
    assert sorted(lease.ordering_key for lease in leased) == ['c:+1', 'c:+2']
    assert (await scripts.outbox_lease(dest, 10, 60_000)).leases == [], 'a leased contact offers nothing more'
    lease = next(lease for lease in leased if lease.ordering_key == 'c:+1')
    assert event_body(lease.event)[0] == first
    assert await scripts.outbox_ack(dest, lease, str(first))
    assert not await scripts.outbox_ack(dest, lease, str(first)), 'an ack is recorded once'
    (following,) = (await scripts.outbox_lease(dest, 10, 60_000)).leases
    assert event_body(following.event)[0] == second


async def test_a_failing_event_holds_its_contact_back_then_is_given_up_after_the_window(redis: Redis) -> None:
    box = outbox('http://127.0.0.1:9/a')
    scripts, dest = Scripts(redis, box), box.destination_ids[0]
    first = str(await append_event(scripts, box, 'attempt.ended', 'c:+1', {}))
    second = str(await append_event(scripts, box, 'contact.completed', 'c:+1', {}))
    (lease,) = (await scripts.outbox_lease(dest, 10, 60_000)).leases
    assert await scripts.outbox_nack(dest, lease, first, retry_window_ms=3_600_000, delay_ms=60_000) == 'retry'
    assert (await scripts.outbox_lease(dest, 10, 60_000)).leases == [], 'the next event waits behind the failing one'
    await redis.zadd(k.outbox_heads(dest), {'c:+1': 0})  # its backoff is over
    (again,) = (await scripts.outbox_lease(dest, 10, 60_000)).leases
    assert (event_body(again.event)[0], again.failures) == (first, 1)
    assert await scripts.outbox_nack(dest, again, first, retry_window_ms=0, delay_ms=1) == 'dead'
    assert await redis.zrange(k.outbox_dead(dest), 0, -1) == [first]
    (after,) = (await scripts.outbox_lease(dest, 10, 60_000)).leases
    assert event_body(after.event)[0] == second


async def test_the_cap_pushes_out_the_oldest_event_and_counts_it_as_dropped(redis: Redis) -> None:
    box = outbox('http://127.0.0.1:9/a', max_events=100)
    scripts, dest = Scripts(redis, box), box.destination_ids[0]
    ids = [await append_event(scripts, box, 'attempt.ended', f'c:+{i}', {}) for i in range(101)]
    assert await redis.zcard(k.OUTBOX_LOG) == 100
    assert not await redis.hexists(k.OUTBOX_EVENTS, str(ids[0]))
    assert await redis.hget(k.OUTBOX_STATE, f'dropped:{dest}') == '1'
    assert await redis.zcard(k.outbox_pending(dest)) == 100
    assert await redis.zscore(k.outbox_heads(dest), 'c:+0') is None


async def test_replay_sends_retained_events_again_and_retention_forgets_delivered_ones(redis: Redis) -> None:
    box = outbox('http://127.0.0.1:9/a')
    scripts, dest = Scripts(redis, box), box.destination_ids[0]
    for n in range(3):
        await append_event(scripts, box, 'attempt.ended', 'c:+1', {'n': n})
    for _ in range(3):
        (lease,) = (await scripts.outbox_lease(dest, 10, 60_000)).leases
        await scripts.outbox_ack(dest, lease, event_body(lease.event)[0])
    assert await redis.zcard(k.outbox_pending(dest)) == 0
    assert await scripts.outbox_replay(dest, 0, 0, 100) == (3, 3)
    assert await scripts.outbox_replay(dest, 0, 0, 100) == (0, 3), 'pending events are not queued twice'
    assert await scripts.outbox_trim([dest], 0) == 0, 'pending events are kept'
    (lease,) = (await scripts.outbox_lease(dest, 10, 60_000)).leases
    assert json.loads(event_body(lease.event)[2])['data'] == {'n': 0}, 'a replay keeps the order'
    await redis.delete(k.outbox_queue(dest), k.outbox_pending(dest), k.outbox_heads(dest))
    assert await scripts.outbox_trim([dest], 0) == 3
    assert await redis.exists(k.OUTBOX_EVENTS, k.OUTBOX_LOG) == 0


def test_signatures_cover_body_and_timestamp_and_rotate() -> None:
    from datetime import UTC, datetime  # noqa: PLC0415

    from pydantic import SecretStr  # noqa: PLC0415

    now = datetime.now(UTC)
    secrets = [SecretStr(SECRET), SecretStr('new-secret-0123456789')]
    headers = signed_headers('ev_1', 'attempt.ended', b'{}', secrets, now)
    timestamp, signature = headers['X-Dialer-Timestamp'], headers['X-Dialer-Signature']
    assert verify(b'{}', timestamp, signature, SECRET, now=now)
    assert verify(b'{}', timestamp, signature, 'new-secret-0123456789', now=now)
    assert not verify(b'{ }', timestamp, signature, SECRET, now=now)
    assert not verify(b'{}', timestamp, signature, 'another-secret-0123456', now=now)


def test_bad_destinations_are_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in (
        '[{"url": "ftp://x", "secret": "0123456789abcdef"}]',
        '[{"url": "https://x.example/h", "secret": "short"}]',
        '[{"url": "https://x.example/h", "secret": "0123456789abcdef", "name": "Bad Name"}]',
        json.dumps([{'url': 'https://x.example/h', 'secret': '0123456789abcdef'}] * 2),
    ):
        monkeypatch.setenv('DIALER_RESULT_WEBHOOKS', value)
        with pytest.raises(ValueError, match=r'result_webhooks|RESULT_WEBHOOKS'):
            Settings()


async def test_a_down_receiver_gets_every_event_once_in_order_when_it_is_back(redis: Redis, redis_url: str) -> None:
    receiver = ResultReceiver(SECRET)
    settings = Settings(
        redis_url=redis_url,
        result_webhooks=[ResultWebhook(url=receiver.url, secret=SECRET)],
        outbox_timeout=1,
        outbox_backoff_cap=0.5,
    )
    box = Outbox.from_settings(settings)
    scripts = Scripts(redis, box)
    expected = [
        await append_event(scripts, box, 'attempt.ended', contact, {'n': n, 'contact': contact})
        for n in range(4)
        for contact in ('c:+1', 'c:+2', 'c:+3')
    ]
    delivery = OutboxDelivery(SimpleNamespace(settings=settings, scripts=scripts))  # type: ignore[arg-type]
    stop = asyncio.Event()
    loop = asyncio.create_task(delivery.run(stop))
    dest = box.destination_ids[0]

    async def failures_seen() -> None:
        while not await redis.hlen(k.outbox_tries(dest)):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(failures_seen(), 30)  # the receiver is down: deliveries fail and back off
    receiver.start()
    try:

        async def all_delivered() -> None:
            while len(receiver.snapshot()) < len(expected) or await redis.zcard(k.outbox_pending(dest)):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(all_delivered(), 60)
    finally:
        stop.set()
        await loop
        receiver.stop()
    received = receiver.snapshot()
    assert sorted(e['id'] for e in received) == sorted(expected)
    assert receiver.bad_signatures == 0
    for contact in ('c:+1', 'c:+2', 'c:+3'):
        assert [e['data']['n'] for e in received if e['data']['contact'] == contact] == [0, 1, 2, 3]


async def test_the_exporter_reports_each_destinations_depth_and_oldest_age(
    redis: Redis, sync_redis: Any, tmp_path: Any
) -> None:
    from workers.exporter import build_registry  # noqa: PLC0415

    box = outbox('http://127.0.0.1:9/a')
    scripts, dest = Scripts(redis, box), box.destination_ids[0]
    await append_event(scripts, box, 'attempt.ended', 'c:+1', {})
    await append_event(scripts, box, 'attempt.ended', 'c:+2', {})
    await redis.set(k.CLOCK_OFFSET, 90_000)  # 90 s later
    write_trunks(tmp_path / 'trunks.toml', 'sip.example', {'a': (1, 1)})
    settings = Settings(
        trunks_file=tmp_path / 'trunks.toml', result_webhooks=list(box.destinations), outbox_max_events=1000
    )
    value = build_registry(settings, redis=sync_redis).get_sample_value
    assert value('dialer_outbox_pending_events', {'destination': dest}) == 2
    assert value('dialer_outbox_oldest_pending_seconds', {'destination': dest}) >= 90
    assert (value('dialer_outbox_events'), value('dialer_outbox_max_events')) == (2, 1000)
    assert value('dialer_outbox_dropped_events', {'destination': dest}) == 0


async def test_a_contact_closed_at_dial_time_by_the_dnc_list_has_its_event_too(redis: Redis) -> None:
    from tests.ledger import LIMITS, claim, make_campaign  # noqa: PLC0415

    phones = await make_campaign(redis, numbers=1)
    scripts = Scripts(redis, outbox('http://127.0.0.1:9/a'))
    job_ref = (await claim(scripts)).job_refs[0]
    await redis.sadd(k.DNC, phones[0])
    assert (await scripts.begin(job_ref, 't1', LIMITS, 60_000)).verdict == 'dnc'
    events = await stored_events(redis)
    assert [e['type'] for e in events] == ['contact.completed', 'campaign.completed']
    assert events[0]['data']['final_outcome'] == 'dnc'


async def test_an_opt_out_through_the_agents_tool_appends_contact_opted_out_in_the_same_step(redis: Redis) -> None:
    from dialer.dispositions import DispositionReport, record_disposition  # noqa: PLC0415

    attempt_id = await live_attempt(redis)
    report = DispositionReport(attempt_id=attempt_id, call_id='call-1', disposition='do_not_call')
    recorded = await record_disposition(redis, report, outbox('http://127.0.0.1:9/a'))
    assert recorded.verdict == 'recorded'
    assert await redis.sismember(k.DNC, NUMBER)
    events = await stored_events(redis)
    assert [e['type'] for e in events] == ['contact.opted_out']
    assert events[0]['data']['call_id'] == 'call-1'


async def test_contacts_closed_by_a_cancel_announce_themselves(redis: Redis) -> None:
    from campaigns.lifecycle import change_state  # noqa: PLC0415
    from tests.ledger import make_campaign  # noqa: PLC0415

    await make_campaign(redis, numbers=3)
    assert await change_state(redis, 'c1', 'cancel', outbox('http://127.0.0.1:9/a')) == 'cancelled'
    events = await stored_events(redis)
    assert [e['type'] for e in events] == ['contact.completed'] * 3
    assert {e['data']['final_outcome'] for e in events} == {'cancelled'}


async def test_contacts_closed_by_an_update_announce_themselves(redis: Redis) -> None:
    from campaigns.lifecycle import read_config  # noqa: PLC0415
    from campaigns.reschedule import reschedule_waiting  # noqa: PLC0415
    from tests.ledger import make_campaign  # noqa: PLC0415

    phones = await make_campaign(redis, numbers=2)
    for phone in phones:  # each made one attempt that ended no_answer and waits for its retry
        await redis.hset(k.campaign_progress('c1'), phone, json.dumps({'s': 'retry_wait', 'a': 1, 'lo': 'no_answer'}))
    await redis.hset(k.campaign('c1'), mapping={'n:pending': 0, 'n:retry_wait': 2})
    config = await read_config(redis, 'c1')
    config = config.model_copy(update={'retry': config.retry.model_copy(update={'max_attempts': 1})})
    summary = await reschedule_waiting(redis, config, outbox('http://127.0.0.1:9/a'))
    assert summary.closed == 2
    events = await stored_events(redis)
    assert [e['type'] for e in events] == ['contact.completed', 'contact.completed', 'campaign.completed']
    assert {e['data']['final_outcome'] for e in events[:2]} == {'no_answer'}


async def test_a_destination_removed_from_the_settings_has_its_keys_expire_unless_it_comes_back(
    redis: Redis, redis_url: str
) -> None:
    both = [ResultWebhook(url='http://127.0.0.1:9/a', secret=SECRET, name='a'),
            ResultWebhook(url='http://127.0.0.1:9/b', secret=SECRET, name='b')]  # fmt: skip

    async def serve(*hooks: ResultWebhook) -> None:
        """One delivery loop with these destinations: it starts, trims once, and stops."""
        settings = Settings(
            redis_url=redis_url, result_webhooks=list(hooks), outbox_retry_hours=1, outbox_retention_hours=2
        )
        delivery = OutboxDelivery(
            SimpleNamespace(settings=settings, scripts=Scripts(redis, Outbox.from_settings(settings)))
        )  # type: ignore[arg-type]
        stop = asyncio.Event()
        stop.set()
        await delivery.run(stop)
        await delivery._trim()  # the housekeeping a running loop does every minute

    box = Outbox(tuple(both), 1000)
    await serve(*both)
    await append_event(Scripts(redis, box), box, 'attempt.ended', 'c:+1', {'n': 1})
    assert await redis.ttl(k.outbox_pending('b')) == -1

    await serve(both[0])  # b left the settings: its undelivered events go after the retention period
    assert 7000 < await redis.ttl(k.outbox_pending('b')) <= 7200
    assert await redis.ttl(k.outbox_queue('b')) > 7000
    assert await redis.ttl(k.outbox_pending('a')) == -1, 'a configured destination keeps its keys'
    await serve()  # no destinations at all: the TTL already set is not pushed back, a's keys expire too
    assert await redis.ttl(k.outbox_pending('a')) > 7000

    await serve(*both)  # both back before the keys expired: nothing is lost
    assert await redis.ttl(k.outbox_pending('a')) == await redis.ttl(k.outbox_pending('b')) == -1
    assert await redis.zcard(k.outbox_pending('b')) == 1

    await redis.delete(*k.outbox_destination_keys('b'))
    await serve(both[0])
    assert await redis.smembers(k.OUTBOX_DESTINATIONS) == {'a'}, 'an id whose keys are gone is forgotten'


async def test_a_campaign_completed_by_its_load_or_a_resume_announces_itself(redis: Redis, tmp_path) -> None:
    from campaigns.lifecycle import change_state  # noqa: PLC0415
    from campaigns.loader import load_contacts  # noqa: PLC0415
    from dialer.models import CampaignConfig  # noqa: PLC0415

    box = outbox('http://127.0.0.1:9/a')
    # every row of the file is bad: the load leaves nothing to dial and completes the campaign
    contacts = tmp_path / 'contacts.csv'
    contacts.write_text('phone,name\nnot-a-number,Ann\n', encoding='utf-8')
    config = CampaignConfig(name='empty', trunk='carrier-a', agent_id='agent-1')
    summary = await load_contacts(redis, config, contacts, rejects_path=tmp_path / 'rejects.csv', outbox=box)
    assert summary.rejected == 1
    assert await redis.hget(k.campaign('empty'), 'state') == 'completed'
    assert [(e['type'], e['data']) for e in await stored_events(redis)] == [
        ('campaign.completed', {'campaign': 'empty'})
    ]
    # a paused campaign whose last contact ended meanwhile completes when it is resumed
    await redis.delete(k.OUTBOX_LOG, k.OUTBOX_EVENTS)
    await redis.hset(
        k.campaign('later'),
        mapping={'state': 'paused', 'config': config.model_copy(update={'name': 'later'}).model_dump_json()},
    )
    assert await change_state(redis, 'later', 'resume', box) == 'completed'
    assert [e['type'] for e in await stored_events(redis)] == ['campaign.completed']
