"""arq's Worker as the dialer runs it: due jobs taken in one round trip, the jobs its own pacer enqueued
started at once instead of on a fixed poll, uvloop where it exists."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from arq.connections import create_pool, log_redis_info
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker
from arq.worker import logger as arq_logger

from dialer.scripts import FinishedJob


if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.commands.core import AsyncScript


_PICKUP_LUA = (files('dialer') / 'lua' / 'arq_pickup.lua').read_text()
#: How often a worker that is running ``max_jobs`` jobs looks again: a finished job's place is taken soon.
BUSY_POLL_DELAY = 0.02


@dataclass(frozen=True, slots=True)
class RunningJob:
    """An arq job's queue entry and keys, for the script that records what the job was for to remove
    with it (``Scripts.created``); ``finished`` then tells the worker to leave them alone."""

    entry: FinishedJob
    finished: Callable[[], None]


class DialerWorker(Worker):
    """arq's Worker with a cheaper poll: one round trip takes every due job, and its pacer wakes it.

    arq reads the first ids of the queue on every poll (every 20 ms by default) and tries to pick up
    each one with WATCH/EXISTS/ZSCORE/MULTI round trips, including the ids of jobs it runs itself: a
    dial job stays in the queue while it runs (waiting for its rate slot, its create, a lookup).
    Under a trunk rate limit that was ~12 pickups per call (issue 16). Here one script reads the due
    ids and takes those no worker runs (see :meth:`_poll_iteration`).

    arq's fixed-step poll costs a Redis round trip (and an event-loop turn) every 20 ms even when
    nothing is queued: half of an idle worker's CPU. Here the loop waits for :meth:`wake` (the
    pacer calls it right after enqueueing, so its jobs start at once) or ``poll_delay``, which now
    only bounds how soon jobs enqueued by other workers, or deferred ones, are seen.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake = asyncio.Event()
        self.ctx['wake_jobs'] = self.wake
        self._pickup: AsyncScript | None = None
        #: Jobs taken by the pickup script (bench/counting.py reports it per call).
        self.picked_up = 0
        #: Running jobs whose keys a script of theirs already removed (see :meth:`finish_job`).
        self._finished_by_job: set[str] = set()
        self.ctx['running_job'] = self.running_job

    def wake(self) -> None:
        """New jobs are queued: look for them now."""
        self._wake.set()

    def running_job(self, job_id: str) -> RunningJob:
        """A running job (``ctx['running_job'](ctx['job_id'])`` in a job), to be finished by a script of its own."""
        keys = (job_key_prefix + job_id, retry_key_prefix + job_id, in_progress_key_prefix + job_id)
        return RunningJob(
            FinishedJob(self.queue_name, job_id, keys), functools.partial(self._finished_by_job.add, job_id)
        )

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """arq's, except for a job whose own script removed its keys (a dial job's ``created.lua``): once
        its call is recorded there is nothing left to finish or to run again, and this round trip is
        spared (issue 16)."""
        if job_id in self._finished_by_job:
            self._finished_by_job.discard(job_id)
            return
        await super().finish_job(
            job_id, finish, result_data, result_timeout_s, keep_result_forever, incr_score, keep_in_progress
        )

    async def _poll_iteration(self) -> None:
        """One look at the queue: due jobs read and taken in one round trip (``dialer/lua/arq_pickup.lua``).

        arq reads the due ids, then takes each with WATCH, EXISTS, ZSCORE and MULTI/PSETEX: four round
        trips per job, plus one for every id of a job already running (a dial job stays in the queue
        while it runs: ~12 tries per call under a rate limit, issue 16). The script makes the same
        checks and writes the same in-progress key; arq's own job run and completion are unchanged.
        """
        room = self.max_jobs - self.job_counter
        if self.burst and self.max_burst_jobs >= 0:
            room = min(room, self.max_burst_jobs - self._jobs_started())
        if self.allow_pick_jobs and room > 0:
            if self._pickup is None:
                self._pickup = self.pool.register_script(_PICKUP_LUA)
            args = [timestamp_ms(), int(self.in_progress_timeout_s * 1000), in_progress_key_prefix]
            taken = await self._pickup(keys=[self.queue_name], args=[*args, self.queue_read_limit, room])
            await self._start_taken(taken)
        if self.allow_abort_jobs:
            await self._cancel_aborted_jobs()
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()  # as arq does: an error in run_job is not swallowed
        await self.heart_beat()

    async def _start_taken(self, taken: list[Any]) -> None:
        for job_id_b, score in zip(taken[::2], taken[1::2], strict=True):
            job_id = job_id_b.decode() if isinstance(job_id_b, bytes) else str(job_id_b)
            # never waits: the room was counted before the script, and only this loop starts jobs
            await self.sem.acquire()
            self.job_counter += 1
            self.picked_up += 1
            task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def main(self) -> None:
        """arq 0.28's ``Worker.main`` with its fixed-step ``poll`` replaced by :meth:`_next_poll`."""
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        arq_logger.info('Starting worker for %d functions: %s', len(self.functions), ', '.join(self.functions))
        await log_redis_info(self.pool, arq_logger.info)
        self.ctx['redis'] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        while True:
            # cleared before the read: a wake during it makes the next poll immediate, never lost
            self._wake.clear()
            await self._poll_iteration()
            if self.burst:
                if 0 <= self.max_burst_jobs <= self._jobs_started():
                    await asyncio.gather(*self.tasks.values())
                    return
                if await self.pool.zcard(self.queue_name) == 0:
                    await asyncio.gather(*self.tasks.values())
                    return
            await self._next_poll()

    async def _next_poll(self) -> None:
        # while every job slot is taken, queued jobs wait for a finished one: look again soon
        delay = BUSY_POLL_DELAY if self.job_counter >= self.max_jobs else self.poll_delay_s
        if self.burst:
            delay = min(delay, BUSY_POLL_DELAY)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)


def install_uvloop() -> bool:
    """Make uvloop the event loop of this process where it is installed (not on Windows); True if it is.

    uvloop runs the same asyncio code with less CPU per callback, timer and socket operation.
    """
    try:
        import uvloop  # noqa: PLC0415  optional: absent on Windows
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
