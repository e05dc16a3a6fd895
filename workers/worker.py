"""``dialer worker``: an arq worker running dial jobs, plus this process's pacer and call tracker.

SIGTERM: arq stops picking jobs and lets running dial jobs finish for ``worker_shutdown_grace``
seconds (a job cut off there is re-run elsewhere and resolves its create by metadata); the pacer
stops claiming and the tracker hands its leased polls straight back to the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import structlog
from arq import func
from arq.connections import RedisSettings
from redis.exceptions import RedisError

from dialer import constants as k
from dialer import metrics
from dialer.ultravox import UltravoxClient
from workers.arq_worker import DialerWorker
from workers.dial import dial_attempt
from workers.outbox_delivery import OutboxDelivery
from workers.pacer import Pacer
from workers.runtime import RETRIED_ERRORS, Runtime, redis_retry
from workers.serving import Health, freeze_startup_objects, start_metrics_server
from workers.tracker import CallTracker
from workers.wakeups import Wakeups


if TYPE_CHECKING:
    from arq.worker import Worker

    from dialer.settings import Settings


log = structlog.get_logger(__name__)

#: arq counts every pickup as a try, including reruns after a crash or SIGTERM and our own waits
#: for an ambiguous create; the dialer counts real attempts itself, so arq's cap is only a backstop.
DIAL_MAX_TRIES = 1000


def redis_settings(settings: Settings) -> RedisSettings:
    if settings.redis_sentinels:
        hosts = [(h.rsplit(':', 1)[0], int(h.rsplit(':', 1)[1])) for h in settings.redis_sentinels.split(',')]
        base = RedisSettings.from_dsn(settings.redis_url)
        return RedisSettings(
            host=hosts,  # arq takes a list of sentinel hosts here
            sentinel=True,
            sentinel_master=settings.redis_sentinel_master,
            database=base.database,
            password=base.password,
        )
    base = RedisSettings.from_dsn(settings.redis_url)
    base.retry, base.retry_on_error = redis_retry(settings), list(RETRIED_ERRORS)
    return base


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx['settings']
    process: WorkerProcess = ctx['process']
    rt = Runtime.create(settings, ultravox=process.ultravox, health=process.health)
    ctx['runtime'] = rt
    stop = asyncio.Event()
    ctx['stop'] = stop
    await warm_up(rt)
    pacer, tracker = Pacer(rt, ctx['redis'], ctx['worker_id'], ctx.get('wake_jobs')), CallTracker(rt)
    # result webhooks: a loop of its own, so a slow or dead destination never slows dialling
    delivery = OutboxDelivery(rt)
    # all three sleep until they have work: announcements wake them (workers/wakeups.py)
    wakeups = Wakeups(rt.redis)
    wakeups.on_channel(k.TRACKING, tracker.sleeper)
    wakeups.on_pattern(k.trunk_campaigns('*'), pacer.sleeper)
    wakeups.on_pattern(k.outbox_heads('*'), delivery.sleeper)
    ctx['wakeups'] = asyncio.create_task(wakeups.run())
    ctx['loops'] = [asyncio.create_task(loop.run(stop)) for loop in (pacer, tracker, delivery)]
    process.health.loop_turned(redis_up=True)
    log.info('worker_started', worker=ctx['worker_id'], trunks=sorted(rt.trunks.trunks))


#: Connections opened to Ultravox before the first dial (see :func:`warm_up`).
WARM_CONNECTIONS = 8


async def warm_up(rt: Runtime) -> None:
    """Open connections to Ultravox before dialling starts.

    A create's rate token is taken right before the request; a request that must first open a TCP
    (and TLS) connection arrives tens of ms late and lets the next one catch up with it, which
    could pack more creations into a carrier's one-second window than the trunk allows.
    """
    probes = [rt.ultravox.find_calls({'attempt_id': 'warm-up'}) for _ in range(WARM_CONNECTIONS)]
    for result in await asyncio.gather(*probes, return_exceptions=True):
        if isinstance(result, Exception):
            log.warning('ultravox_warm_up_failed', error=str(result))
            break


async def shutdown(ctx: dict[str, Any]) -> None:
    if 'stop' not in ctx or ctx['stop'].is_set():
        return
    ctx['stop'].set()
    ctx['wakeups'].cancel()
    await asyncio.gather(ctx['wakeups'], *ctx['loops'], return_exceptions=True)
    await ctx['runtime'].close()
    log.info('worker_stopped', worker=ctx['worker_id'])


class WorkerProcess:
    """What lives as long as the process, across run-loop restarts: the HTTP endpoint (``/metrics``,
    ``/healthz``), the Ultravox connection pool and the health state the endpoint reports."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.health = Health(stall_after=settings.health_stall_seconds)
        if settings.metrics_port:
            # Bound before anything else: a taken port is a startup error, never a retry loop.
            start_metrics_server(settings.metrics_host, settings.metrics_port, health=self.health)
            metrics.WORKER_UP.set(1)
        self.ultravox = UltravoxClient.from_settings(settings)


def build_worker(settings: Settings, *, burst: bool = False, process: WorkerProcess | None = None) -> Worker:
    worker_id = f'{socket.gethostname()}-{os.getpid()}'
    return DialerWorker(
        functions=[
            func(
                dial_attempt,
                name='dial_attempt',
                max_tries=DIAL_MAX_TRIES,
                keep_result=0,
                timeout=settings.dial_job_timeout,
            )
        ],
        queue_name=k.QUEUE_NAME,
        redis_settings=redis_settings(settings),
        on_startup=startup,
        on_shutdown=shutdown,
        ctx={'settings': settings, 'worker_id': worker_id, 'process': process or WorkerProcess(settings)},
        max_jobs=settings.worker_max_jobs,
        poll_delay=settings.worker_poll_delay,
        job_completion_wait=int(settings.worker_shutdown_grace),
        # one health key per worker: arq's shared default is overwritten and deleted by any worker
        health_check_key=f'{k.QUEUE_NAME}:health:{worker_id}',
        health_check_interval=10,
        burst=burst,
        keep_result=0,
    )


#: Longest pause between two reconnection tries while Redis is unreachable.
RECONNECT_DELAY_CAP = 10.0


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    """Run the worker, and start its run loop again, for as long as it takes, if Redis goes away.

    arq's poll loop does not survive a lost connection in the middle of its WATCH/MULTI pickup, so a
    Redis restart or failover would stop the worker for good. Its running jobs finish (their
    commands retry), our loops are stopped, and a fresh run loop takes over once Redis answers. The
    process's own resources (HTTP endpoint, Ultravox pool) are created once, outside that loop.
    """
    process = WorkerProcess(settings)
    delay, restarts = 0.5, 0
    worker = build_worker(settings, burst=burst, process=process)
    freeze_startup_objects()
    try:
        while True:
            try:
                worker.run()
            except (RedisError, OSError) as exc:
                restarts += 1
                if process.health.redis_up:
                    delay = 0.5  # it ran fine until now: a new outage starts from the shortest pause
                process.health.loop_turned(redis_up=False)
                metrics.WORKER_RESTARTS.inc()
                log.warning(
                    'worker_lost_redis',
                    error=str(exc),
                    restart_in=delay,
                    restarts=restarts,
                    down_for=process.health.report()[1].get('redis_down_for', 0),
                )
                with contextlib.suppress(Exception):
                    worker.loop.run_until_complete(shutdown(worker.ctx))
                time.sleep(delay)
                delay = min(delay * 2, RECONNECT_DELAY_CAP)
                worker = build_worker(settings, burst=burst, process=process)
                continue
            return
    finally:
        with contextlib.suppress(Exception):
            worker.loop.run_until_complete(process.ultravox.aclose())
