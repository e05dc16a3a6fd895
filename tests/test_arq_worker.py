"""The dialer's arq Worker: it never re-checks the jobs it is running itself, against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker, func

from workers.arq_worker import DialerWorker, install_uvloop


async def test_running_jobs_are_not_picked_up_again_and_finished_ones_are(redis_url: str, redis) -> None:
    release = asyncio.Event()
    done: list[int] = []

    async def blocker(ctx: dict[str, Any], n: int) -> None:
        await release.wait()
        done.append(n)

    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    worker = DialerWorker(
        functions=[func(blocker, name='blocker')], redis_pool=pool, handle_signals=False, keep_result=0, poll_delay=0.01
    )
    try:
        await pool.enqueue_job('blocker', 1, _job_id='first')
        await worker._poll_iteration()  # one poll, as arq's loop does
        assert (worker.picked_up, sorted(worker.tasks)) == (1, ['first'])
        assert await redis.exists('arq:in-progress:first') == 1, "arq's in-progress key, as arq writes it"
        await pool.enqueue_job('blocker', 2, _job_id='second')
        for _ in range(3):
            await worker._poll_iteration()
        # 'first' is running here: never offered to the pickup again; 'second' was picked up once
        assert (worker.picked_up, sorted(worker.tasks)) == (2, ['first', 'second'])
        release.set()
        while len(done) < 2:
            await asyncio.sleep(0.01)
    finally:
        release.set()
        for task in worker.tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await worker.close()
    assert sorted(done) == [1, 2]


async def test_a_job_another_worker_runs_or_a_deferred_one_is_not_taken(redis_url: str, redis) -> None:
    started: list[str] = []

    async def job(ctx: dict[str, Any], name: str) -> None:
        started.append(name)

    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    worker = DialerWorker(functions=[func(job, name='job')], redis_pool=pool, handle_signals=False, poll_delay=0.01)
    try:
        await pool.enqueue_job('job', 'elsewhere', _job_id='elsewhere')
        await pool.enqueue_job('job', 'deferred', _job_id='deferred')
        await pool.enqueue_job('job', 'free', _job_id='free')
        await redis.set('arq:in-progress:elsewhere', '1', px=60_000)  # another worker took it
        await redis.zadd('arq:queue', {'deferred': 10**13})  # deferred again (a Retry, another worker)
        await worker._poll_iteration()
        while not started:
            await asyncio.sleep(0.01)
        await asyncio.gather(*worker.tasks.values())
    finally:
        await worker.close()
    assert started == ['free']
    assert await redis.exists('arq:in-progress:deferred') == 0


def test_uvloop_becomes_the_event_loop_where_installed() -> None:
    pytest.importorskip('uvloop')
    policy = asyncio.get_event_loop_policy()
    try:
        assert install_uvloop()
        loop = asyncio.new_event_loop()
        try:
            assert type(loop).__module__.startswith('uvloop')
        finally:
            loop.close()
    finally:
        asyncio.set_event_loop_policy(policy)


async def test_an_idle_worker_starts_a_job_at_once_when_woken_and_otherwise_only_on_its_slow_poll(
    redis_url: str, redis
) -> None:
    started: list[str] = []

    async def job(ctx: dict[str, Any], name: str) -> None:
        started.append(name)

    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    # an idle poll so slow that only a wake can start the woken job within the test
    worker = DialerWorker(functions=[func(job, name='job')], redis_pool=pool, handle_signals=False, poll_delay=3600)
    looking = Worker._poll_iteration
    polls = 0

    async def counted(self: Worker) -> None:
        nonlocal polls
        polls += 1
        await looking(self)

    worker._poll_iteration = counted.__get__(worker)  # type: ignore[method-assign]
    main = asyncio.create_task(worker.main())
    try:
        while polls < 1:  # the first poll ran and found nothing: the loop now waits
            await asyncio.sleep(0.01)
        await pool.enqueue_job('job', 'unannounced')
        await pool.enqueue_job('job', 'woken')
        await asyncio.sleep(0.3)  # not a margin the test relies on: nothing wakes the loop meanwhile
        assert started == [], 'a queued job waits for the next poll when nobody says it is there'
        assert polls == 1
        worker.ctx['wake_jobs']()  # what the pacer does after enqueueing
        # both ran and arq has finished with them (it counts a job complete before its finish_job ends)
        while worker.jobs_complete < 2 or not all(task.done() for task in worker.tasks.values()):
            await asyncio.sleep(0.01)
        assert sorted(started) == ['unannounced', 'woken']
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await main
        await worker.close()


async def test_a_job_finished_by_its_own_script_is_left_alone_by_arq_and_any_other_is_finished_by_arq(
    redis_url: str, redis, monkeypatch
) -> None:
    finished_by_arq: list[str] = []
    arq_finish = Worker.finish_job

    async def counted_finish(self: Worker, job_id: str, *args: Any) -> None:
        finished_by_arq.append(job_id)
        await arq_finish(self, job_id, *args)

    monkeypatch.setattr(Worker, 'finish_job', counted_finish)

    async def job(ctx: dict[str, Any], finisher: str) -> None:
        running = ctx['running_job'](ctx['job_id'])
        if finisher == 'itself':
            # what created.lua does with the record: the queue entry and every key of the job go
            entry = running.entry
            await redis.zrem(entry.queue, entry.member)
            await redis.delete(*entry.keys)
            running.finished()

    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    worker = DialerWorker(functions=[func(job, name='job')], redis_pool=pool, handle_signals=False, keep_result=0)
    try:
        await pool.enqueue_job('job', 'itself', _job_id='own')
        await pool.enqueue_job('job', 'arq', _job_id='arqs')
        await worker._poll_iteration()
        await asyncio.gather(*worker.tasks.values())
    finally:
        await worker.close()
    assert finished_by_arq == ['arqs']
    # both finished: neither is queued, running or counted any more
    assert await redis.zrange('arq:queue', 0, -1) == []
    for job_id in ('own', 'arqs'):
        assert await redis.exists(f'arq:job:{job_id}', f'arq:retry:{job_id}', f'arq:in-progress:{job_id}') == 0
