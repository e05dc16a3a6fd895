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


async def test_running_jobs_are_not_picked_up_again_and_finished_ones_are(redis_url: str, redis, monkeypatch) -> None:
    release = asyncio.Event()
    done: list[int] = []

    async def blocker(ctx: dict[str, Any], n: int) -> None:
        await release.wait()
        done.append(n)

    offered: list[list[str]] = []
    original = Worker.start_jobs

    async def recording(self: Worker, job_ids: list[bytes]) -> None:
        offered.append([job_id.decode() for job_id in job_ids])
        await original(self, job_ids)

    monkeypatch.setattr(Worker, 'start_jobs', recording)
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    worker = DialerWorker(
        functions=[func(blocker, name='blocker')], redis_pool=pool, handle_signals=False, keep_result=0, poll_delay=0.01
    )
    try:
        await pool.enqueue_job('blocker', 1, _job_id='first')
        await worker._poll_iteration()  # one poll, as arq's loop does
        assert offered == [['first']]
        await pool.enqueue_job('blocker', 2, _job_id='second')
        for _ in range(3):
            await worker._poll_iteration()
        # 'first' is running here: never offered to arq's pickup again; 'second' was picked up once
        assert offered == [['first'], ['second']]
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
