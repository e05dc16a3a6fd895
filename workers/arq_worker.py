"""arq's Worker as the dialer runs it: no re-checks of its own running jobs, uvloop where it exists."""

from __future__ import annotations

import asyncio

from arq.worker import Worker


class DialerWorker(Worker):
    """arq's Worker, minus the pickup of jobs this process is already running.

    arq reads the first ids of the queue on every poll (every 20 ms by default) and tries to pick up
    each one with a WATCH/EXISTS/ZSCORE/MULTI round trip, including the ids of jobs it runs itself:
    a dial job stays in the queue while it runs (waiting for its rate slot, its create, a lookup).
    Under a trunk rate limit that was ~12 pickups per call (issue 16). Those ids are dropped here;
    a job whose task has finished (say it asked to be retried later) is picked up as before.
    """

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        running = self.tasks
        if running:
            fresh = []
            for job_id in job_ids:
                task = running.get(job_id.decode())
                if task is None or task.done():
                    fresh.append(job_id)
            job_ids = fresh
        if job_ids:
            await super().start_jobs(job_ids)


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
