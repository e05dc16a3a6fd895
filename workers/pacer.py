"""The pacer: claims due contacts while their trunk has capacity and enqueues one dial job each.

Every worker runs one; they coordinate only through the claim script, which takes trunk and
account slots atomically with the contacts, so any number of pacers never exceed a limit. A full
trunk costs nothing: no job exists until capacity does, so no arq try is burnt and no worker slot
is held while waiting. With no campaign on any trunk it sleeps until one joins a trunk's rotation
(announced, ``workers/wakeups.py``), at most ``LONGEST_SLEEP``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog
from arq.constants import job_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms

from dialer import constants as k
from dialer import metrics
from dialer.logs import masked_attempt
from dialer.trunks import TrunkConfigError
from workers.faults import campaign_faults, check_trunks, probe_faults
from workers.wakeups import LONGEST_SLEEP, Sleeper


if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from arq.connections import ArqRedis

    from dialer.scripts import Claimed
    from dialer.trunks import Trunk
    from workers.runtime import Runtime


log = structlog.get_logger(__name__)

#: How often stale claims (a pacer that died between claim and enqueue) are looked for, and how
#: often the trunks file is checked for live edits.
HOUSEKEEPING_INTERVAL = 2.0
#: Most contacts claimed for one trunk in one script call.
CLAIM_BATCH = 50
#: Longest sleep while every trunk with campaigns refills its unsent set (a slow trunk's next
#: reservation may be a second away); trunks without campaigns are looked at after it.
LONGEST_REFILL_WAIT = 1.0


class Pacer:
    def __init__(
        self, rt: Runtime, arq: ArqRedis, worker_id: str = '', on_enqueued: Callable[[], None] | None = None
    ) -> None:
        self.rt = rt
        self.arq = arq
        self.worker_id = worker_id
        #: Tells this process's arq worker that jobs are queued (it starts them at once, not on its next poll).
        self.on_enqueued = on_enqueued
        self._housekept = 0.0
        #: Each trunk's campaigns as of the last claim (``claim.lua`` says when they changed).
        self._campaigns: dict[str, list[str]] = {}
        #: Woken when a campaign joins a trunk's rotation (``workers/wakeups.py``).
        self.sleeper = Sleeper()

    async def run(self, stop: asyncio.Event) -> None:
        await self.sleeper.run(stop, self._look)

    async def _look(self) -> float:
        """One tick (and housekeeping when due); the seconds until the next."""
        try:
            await self._housekeeping()
            _, delay = await self.tick()
        except Exception:
            log.exception('pacer_tick_failed')
            self._turned(redis_up=False)
            return 1.0
        self._turned(redis_up=True)
        return delay

    def _turned(self, *, redis_up: bool) -> None:
        if self.rt.health is not None:
            self.rt.health.loop_turned(redis_up=redis_up)

    async def tick(self) -> tuple[int, float]:
        """One claim per trunk that has active campaigns. Returns (claimed, seconds until the next tick):
        0 when a batch ran out with room left (tick again at once), else at most ``pacer_interval``, or
        longer while every trunk with campaigns is refilling its unsent set and says until when, or
        ``LONGEST_SLEEP`` when no trunk has any (a campaign joining one wakes the pacer).

        Each trunk's campaigns are kept from the last tick: the claim script checks them against Redis
        and answers with the real set when they differ. Only trunks with none are read every tick (a
        campaign loaded on them is seen on the next tick), all in one pipeline.
        """
        trunks = list(self.rt.trunks.trunks.values())
        unknown = [trunk.name for trunk in trunks if not self._campaigns.get(trunk.name)]
        if unknown:
            async with self.rt.redis.pipeline(transaction=False) as pipe:
                for name in unknown:
                    pipe.smembers(k.trunk_campaigns(name))
                for name, members in zip(unknown, await pipe.execute(), strict=True):
                    self._campaigns[name] = sorted(members)
        claimed, delays = 0, []
        for trunk in trunks:
            result = await self._claim(trunk)
            if result is None:
                continue
            if result.wait_ms == -1:
                metrics.LIMITER_WAITS.labels(trunk=trunk.name, limit='concurrency').inc()
            delays.append(self._next_look(result))
            await self._enqueue(result.job_refs)
            claimed += len(result.job_refs)
        # trunks without campaigns set no bound: one joining them is announced
        return claimed, min(delays, default=LONGEST_SLEEP)

    def _next_look(self, result: Claimed) -> float:
        """Seconds before this trunk needs another claim."""
        interval = self.rt.settings.pacer_interval
        if result.more:
            return 0.0
        if result.refilling and result.wait_ms > 0:
            # nothing can be claimed for this trunk before then, whatever else changes
            return min(result.wait_ms / 1000, LONGEST_REFILL_WAIT)
        if result.wait_ms > 0:
            # a hold lifting or a contact falling due: new contacts may come sooner
            return min(result.wait_ms / 1000, interval)
        return interval

    async def _claim(self, trunk: Trunk) -> Claimed | None:
        """Claim for one trunk with the campaigns it is known to have (None: it has none)."""
        for _ in range(2):  # the second pass only after the set changed under us
            campaigns = self._campaigns.get(trunk.name)
            if not campaigns:
                return None
            result = await self.rt.scripts.claim(
                trunk.name,
                campaigns,
                self.rt.slot_limits(trunk),
                unsent_cap=self.rt.unsent_cap(trunk),
                batch=CLAIM_BATCH,
                claim_lease_ms=self.rt.claim_lease_ms,
            )
            if result.campaigns is None:
                return result
            self._campaigns[trunk.name] = result.campaigns
        return None

    async def _enqueue(self, job_refs: list[str]) -> None:
        """Enqueue claimed attempts as arq jobs: one MULTI/EXEC for the whole batch.

        ``enqueue_job`` costs three round trips per job (WATCH, EXISTS, MULTI/EXEC). Here the job key
        (exactly what ``enqueue_job`` writes, so arq runs it the same) and the queue entry are written
        together, so a pacer killed in between can never leave a job key without its queue entry.
        Both writes are ``NX``: re-enqueueing a stale claim keeps a job that is still queued or
        deferred as it is; one that is running is skipped by arq's pickup until it finishes.
        """
        if not job_refs:
            return
        arq = self.arq
        now = timestamp_ms()
        async with arq.pipeline(transaction=True) as pipe:
            for job_ref in job_refs:
                job = serialize_job('dial_attempt', (job_ref,), {}, None, now, serializer=arq.job_serializer)
                pipe.set(job_key_prefix + job_ref, job, px=arq.expires_extra_ms, nx=True)
                pipe.zadd(arq.default_queue_name, {job_ref: now}, nx=True)
            await pipe.execute()
        if self.on_enqueued is not None:
            self.on_enqueued()

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._housekept < HOUSEKEEPING_INTERVAL:
            return
        self._housekept = now
        reloaded = False
        try:
            reloaded = self.rt.reload_trunks()
            if reloaded:
                log.info('trunks_reloaded', trunks=sorted(self.rt.trunks.trunks))
        except TrunkConfigError as exc:
            log.exception('trunks_reload_failed', error=str(exc))
        # one read of the campaigns' states and faults serves both checks
        campaigns = await campaign_faults(self.rt)
        await check_trunks(self.rt, campaigns, reloaded=reloaded)
        await probe_faults(self.rt, self.worker_id, campaigns)
        # A claim whose job never started (its pacer died before enqueueing, or the job was lost):
        # enqueue it again under the same job id; a job that still exists is left as it is.
        stale = await self.rt.scripts.lease_due(k.CLAIMED, 100, self.rt.claim_lease_ms)
        await self._enqueue(stale)
        for job_ref in stale:
            log.info('stale_claim_requeued', attempt_id=masked_attempt(job_ref.split('#', 1)[0]))
