"""Wake-ups against a real Redis: an idle tracker or pacer sleeps (here: for an hour) and only an
announcement made by the script that makes work due can wake it, so each test fails if the
announcement is missing. Also: a dropped pub/sub connection is made again."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aredis
from arq.connections import RedisSettings, create_pool
from pydantic import SecretStr
from redis.exceptions import ResponseError

from dialer import constants as k
from dialer.outbox import Outbox, ResultWebhook, append_event
from dialer.scripts import Scripts, SlotLimits
from dialer.settings import Settings
from simulator.testing import free_port
from tests.fleet_helpers import start_valkey
from tests.ledger import LIMITS, begin_first, claim, live_call, make_campaign, runtime_on_t1
from tests.result_receiver import ResultReceiver
from tests.test_tracker_nudges import ultravox_peer, wait_for
from tests.threaded_server import ThreadedServer
from workers import pacer as pacer_module
from workers import wakeups as wakeups_module
from workers.outbox_delivery import OutboxDelivery
from workers.pacer import Pacer
from workers.runtime import Runtime
from workers.tracker import CallTracker
from workers.wakeups import Sleeper, Wakeups


if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
    from pathlib import Path

HOUR = 3600.0
RESULT_SECRET = 'receiver-secret-0123456789'


@pytest.fixture(scope='module')
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of these tests' own: pub/sub channels are server-wide, not per database, so another
    test's announcement (the suite runs in parallel on one server) could wake a sleeper here."""
    port = free_port()
    server = start_valkey(port, tmp_path_factory.mktemp('wakeups-server'))
    try:
        yield f'redis://127.0.0.1:{port}/0'
    finally:
        server.terminate()
        server.wait(timeout=30)


async def subscribed(redis: Any, channel: str) -> bool:
    return any(count for _, count in await redis.pubsub_numsub(channel))


async def subscribed_to_pattern(redis: Any) -> bool:
    return bool(await redis.pubsub_numpat())


async def listening(wakeups: Wakeups, sleeper: Sleeper, ready: Callable[[], Awaitable[bool]]) -> asyncio.Task[None]:
    """Start ``wakeups`` and return once it listens and has woken ``sleeper`` for what it may have missed."""
    task = asyncio.create_task(wakeups.run())
    await wait_for(ready, 'the wake-ups connection listens')
    await wait_for(lambda: asyncio.sleep(0, sleeper.woken), 'the sleeper is woken for what it may have missed')
    return task


async def stop_all(stop: asyncio.Event, *tasks: asyncio.Task[None]) -> None:
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Looks:
    """Counts a tracker's looks at its schedule."""

    def __init__(self, scripts: Scripts) -> None:
        self.count = 0
        look = scripts.lease_due_calls

        async def counted(*args: Any) -> Any:
            self.count += 1
            return await look(*args)

        scripts.lease_due_calls = counted  # type: ignore[method-assign]


async def announce_webhook(rt: Runtime, attempt_id: str, member: str) -> None:
    verdict, _ = await rt.scripts.nudge(
        attempt_id, 'call-1', member, 'digest-1', replay_ms=60_000, live_window_ms=60_000
    )
    assert verdict == 'polled_now'


async def announce_reschedule(rt: Runtime, _: str, member: str) -> None:
    assert await rt.scripts.reschedule(k.TRACKING, [member], 0) == 1


@pytest.fixture
async def tracker_runtime(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """A tracker's runtime against an Ultravox peer, polls an hour apart: the tracker sleeps half an hour."""
    monkeypatch.setattr(wakeups_module, 'LONGEST_SLEEP', HOUR)
    requests = {'get': 0, 'messages': 0}
    gate = threading.Event()
    gate.set()
    with ThreadedServer(ultravox_peer(gate, requests)) as peer:
        trunks = tmp_path / 'trunks.toml'
        trunks.write_text(
            '[trunks.t1]\nhost = "sip.t1.example"\nfrom = "+14155550100"\nmax_concurrent = 2\ncalls_per_second = 1\n'
        )
        settings = Settings(
            redis_url=redis_url,
            trunks_file=trunks,
            ultravox_base_url=f'http://127.0.0.1:{peer.port}',
            ultravox_api_key=SecretStr('key'),
            poll_initial=HOUR,
            poll_interval=HOUR,
            poll_safety_interval=HOUR,
        )
        rt = Runtime.create(settings)
        yield rt, requests
        await rt.close()


@pytest.mark.parametrize(
    'announce', [announce_webhook, announce_reschedule], ids=['webhook nudge', 'reschedule to now (provider callback)']
)
async def test_a_sleeping_tracker_polls_a_call_made_due_by_an_announcing_script_at_once(
    redis, tracker_runtime: Any, announce: Callable[[Runtime, str, str], Awaitable[None]]
) -> None:
    rt, requests = tracker_runtime
    attempt_id = await live_call(redis)  # its first poll is a minute away
    member = f'{attempt_id}|call-1'
    tracker, stop = CallTracker(rt), asyncio.Event()
    looks = Looks(rt.scripts)
    wakeups = Wakeups(rt.redis)
    wakeups.on_channel(k.TRACKING, tracker.sleeper)
    listener = await listening(wakeups, tracker.sleeper, lambda: subscribed(redis, k.TRACKING))
    loop = asyncio.create_task(tracker.run(stop))
    try:
        await wait_for(lambda: asyncio.sleep(0, looks.count >= 1 and tracker.sleeper.sleeping), 'the tracker sleeps')
        assert requests['get'] == 0
        await announce(rt, attempt_id, member)
        await wait_for(lambda: asyncio.sleep(0, requests['get'] >= 1), 'the announced call is polled')
    finally:
        await stop_all(stop, loop, listener)


async def test_a_new_call_whose_first_poll_is_due_soon_wakes_a_sleeping_tracker(redis, tracker_runtime: Any) -> None:
    rt, requests = tracker_runtime
    await make_campaign(redis, numbers=1)
    attempt_id = (await begin_first(rt.scripts)).split('#')[0]
    tracker, stop = CallTracker(rt), asyncio.Event()
    wakeups = Wakeups(rt.redis)
    wakeups.on_channel(k.TRACKING, tracker.sleeper)
    listener = await listening(wakeups, tracker.sleeper, lambda: subscribed(redis, k.TRACKING))
    loop = asyncio.create_task(tracker.run(stop))
    try:
        await wait_for(lambda: asyncio.sleep(0, tracker.sleeper.sleeping), 'the tracker sleeps')
        # created.lua records the call with its first poll due at once (created.lua announces it)
        assert await rt.scripts.created(attempt_id, 't1', 'call-1', LIMITS, lease_ms=100_000, first_poll_ms=0)
        await wait_for(lambda: asyncio.sleep(0, requests['get'] >= 1), 'the new call is polled')
    finally:
        await stop_all(stop, loop, listener)


async def test_an_idle_pacer_claims_a_campaign_that_joins_its_trunk_while_it_sleeps(
    redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pacer_module, 'LONGEST_SLEEP', HOUR)
    runtime = runtime_on_t1(redis_url, tmp_path, concurrent=50, cps=100)
    arq = await create_pool(RedisSettings.from_dsn(redis_url))
    pacer, stop = Pacer(runtime, arq), asyncio.Event()
    await make_campaign(redis, 'a', numbers=3)
    await runtime.scripts.lifecycle('a', 't1', 'pause')  # no campaign on any trunk: the pacer idles
    wakeups = Wakeups(runtime.redis)
    wakeups.on_pattern(k.trunk_campaigns('*'), pacer.sleeper)
    listener = await listening(wakeups, pacer.sleeper, lambda: subscribed_to_pattern(redis))
    loop = asyncio.create_task(pacer.run(stop))
    try:
        await wait_for(lambda: asyncio.sleep(0, pacer.sleeper.sleeping), 'the pacer sleeps')
        assert await arq.zcard(arq.default_queue_name) == 0
        assert await runtime.scripts.lifecycle('a', 't1', 'resume') == 'active'
        await wait_for(
            lambda: _equals(arq.zcard(arq.default_queue_name), 3), "the resumed campaign's contacts are enqueued"
        )
    finally:
        await stop_all(stop, loop, listener)
        await arq.aclose()
        await runtime.close()


async def test_wakeups_listen_again_after_their_connection_is_killed(redis, redis_url: str, tmp_path: Path) -> None:
    runtime = runtime_on_t1(redis_url, tmp_path, concurrent=1, cps=1)
    sleeper = Sleeper()
    wakeups = Wakeups(runtime.redis)
    wakeups.on_channel('dialer:test:wake', sleeper)
    listener = await listening(wakeups, sleeper, lambda: subscribed(redis, 'dialer:test:wake'))
    try:
        await redis.client_kill_filter(_type='pubsub')
        # announcements go through again once it listens again (published until one is received)
        received = wakeups.received

        async def got_through() -> bool:
            await redis.publish('dialer:test:wake', '')
            await asyncio.sleep(0.05)
            return wakeups.received > received

        await wait_for(got_through, 'an announcement received after the connection was killed')
        assert sleeper.woken
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await runtime.close()


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_a_poll_is_announced_only_when_due_within_the_trackers_longest_sleep(redis) -> None:
    scripts = Scripts(redis, wake_horizon_ms=1000)
    await make_campaign(redis, numbers=2)
    job_refs = (await claim(scripts)).job_refs
    for job_ref in job_refs:
        assert (await scripts.begin(job_ref, 't1', LIMITS, 60_000)).verdict == 'go'
    sleeper = Sleeper()
    wakeups = Wakeups(redis)
    wakeups.on_channel(k.TRACKING, sleeper)
    listener = await listening(wakeups, sleeper, lambda: subscribed(redis, k.TRACKING))
    try:
        later, soon = (job_ref.split('#')[0] for job_ref in job_refs)
        # due in 5 s: a sleeping tracker's look (at most 1 s away) sees it in time, so nothing is sent
        assert await scripts.created(later, 't1', 'call-1', LIMITS, lease_ms=100_000, first_poll_ms=5_000)
        assert await scripts.created(soon, 't1', 'call-2', LIMITS, lease_ms=100_000, first_poll_ms=200)
        # messages arrive in order: once the second is in, the first would have been too
        await wait_for(lambda: asyncio.sleep(0, wakeups.received >= 1), 'the soon-due poll is announced')
        assert wakeups.received == 1
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def test_a_poll_is_announced_only_when_it_is_the_schedules_next(redis) -> None:
    """An entry due no sooner than one already in the schedule needs no announcement: every tracker
    looks by that one's time (it saw it, or was told of it), so the fleet's workers are not each sent
    a message for it."""
    minute = 60_000
    scripts = Scripts(redis, wake_horizon_ms=3_600_000)  # every poll here is due within the horizon
    limits = SlotLimits(trunk=4, account=0)
    await make_campaign(redis, numbers=4)
    job_refs = (await claim(scripts, limits=limits)).job_refs
    for job_ref in job_refs:
        assert (await scripts.begin(job_ref, 't1', limits, 60_000)).verdict == 'go'
    first, behind, level, sooner = (job_ref.split('#')[0] for job_ref in job_refs)
    sleeper = Sleeper()
    wakeups = Wakeups(redis)
    wakeups.on_channel(k.TRACKING, sleeper)
    listener = await listening(wakeups, sleeper, lambda: subscribed(redis, k.TRACKING))

    async def create(attempt_id: str, call_id: str, first_poll_ms: int) -> None:
        assert await scripts.created(attempt_id, 't1', call_id, limits, lease_ms=minute, first_poll_ms=first_poll_ms)

    try:
        await create(first, 'call-1', 10 * minute)
        await wait_for(lambda: asyncio.sleep(0, wakeups.received >= 1), "the schedule's next poll is announced")
        # due after it, or with it: not announced
        await create(behind, 'call-2', 20 * minute)
        await create(level, 'call-3', 20 * minute)
        due = await redis.zscore(k.TRACKING, f'{first}|call-1')
        await scripts.reschedule(k.TRACKING, [f'{level}|call-3'], int(due - await scripts.now_ms()))
        # sooner than every entry: announced
        await create(sooner, 'call-4', minute)
        # a last message of our own: they arrive in order, so every announcement made is in before it
        await redis.publish(k.TRACKING, 'end of test')
        await wait_for(lambda: asyncio.sleep(0, wakeups.received >= 3), 'our own message arrives')
        assert wakeups.received == 3
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def test_a_sleeping_delivery_loop_sends_an_appended_event_at_once_and_a_failed_one_when_its_retry_is_due(
    redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The result-webhook loop sleeps half an hour here: an event appended by another process reaches
    the receiver only because its append is announced, and a failed delivery is tried again only
    because the look after it says when (a retry a few hundred ms away is not announced)."""
    monkeypatch.setattr(wakeups_module, 'LONGEST_SLEEP', HOUR)
    receiver = ResultReceiver(RESULT_SECRET)  # down until the first delivery has failed
    settings = Settings(
        redis_url=redis_url,
        result_webhooks=[ResultWebhook(url=receiver.url, secret=RESULT_SECRET)],
        poll_initial=HOUR,
        poll_interval=HOUR,
        outbox_timeout=1,
        outbox_backoff_cap=0.3,
    )
    box = Outbox.from_settings(settings)
    # only what falls due at once is announced: a retry must be found by the loop's own look
    scripts = Scripts(redis, box, wake_horizon_ms=1)
    delivery = OutboxDelivery(SimpleNamespace(settings=settings, scripts=scripts))  # type: ignore[arg-type]
    wakeups = Wakeups(redis)
    wakeups.on_pattern(k.outbox_heads('*'), delivery.sleeper)
    listener = await listening(wakeups, delivery.sleeper, lambda: subscribed_to_pattern(redis))
    stop = asyncio.Event()
    loop = asyncio.create_task(delivery.run(stop))
    dest = box.destination_ids[0]
    try:
        await wait_for(lambda: asyncio.sleep(0, delivery.sleeper.sleeping), 'the delivery loop sleeps')
        event_id = await append_event(scripts, box, 'attempt.ended', 'c:+1', {'n': 1})
        await wait_for(lambda: redis.hlen(k.outbox_tries(dest)), 'the first delivery is tried, and fails')
        receiver.start()
        await wait_for(lambda: asyncio.sleep(0, len(receiver.snapshot()) == 1), 'the retry is delivered')
        assert [event['id'] for event in receiver.snapshot()] == [event_id]
    finally:
        await stop_all(stop, listener)
        await loop
        receiver.stop()


async def test_a_redis_user_without_channel_permissions_loses_only_the_wake_up(redis, redis_url: str) -> None:
    # Redis 7 users get no channel permissions unless given (acl-pubsub-default resetchannels)
    await redis.execute_command('ACL', 'SETUSER', 'nochannels', 'on', '>pw', '~*', 'resetchannels', '+@all')
    limited = aredis.Redis.from_url(redis_url.replace('redis://', 'redis://nochannels:pw@'), decode_responses=True)
    with pytest.raises(ResponseError, match=r'(?i)noperm|permission'):
        await limited.publish('dialer:test:wake', '')
    try:
        attempt_id = await live_call(limited)  # created.lua and the rest run as that user
        scripts = Scripts(limited)
        member = f'{attempt_id}|call-1'
        verdict, _ = await scripts.nudge(attempt_id, 'call-1', member, 'd-1', replay_ms=60_000, live_window_ms=60_000)
        assert verdict == 'polled_now', 'the webhook is recorded although its announcement was refused'
        assert await redis.zscore(k.TRACKING, member) <= await scripts.now_ms()
    finally:
        await limited.aclose()
        await redis.execute_command('ACL', 'DELUSER', 'nochannels')
