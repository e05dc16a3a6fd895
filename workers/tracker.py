"""The call tracker: follows every live call to its end by polling ``GET /api/calls/{id}``.

The calls to poll live in one fleet-wide ZSET (attempt|call -> next poll time). A tracker leases
the due ones (pushing them ``poll_visibility`` ahead), so a tracker that dies gives its calls back
to the fleet; polling alone is enough to finish every call, webhooks only make it faster.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from dialer import constants as k
from dialer import metrics
from dialer.logs import masked_attempt
from dialer.ultravox import AccountFault, CallNotFound, UltravoxError
from workers.calls import record_billing, record_end
from workers.faults import open_account_fault


if TYPE_CHECKING:
    from workers.runtime import Runtime


log = structlog.get_logger(__name__)

#: Longest pause between two looks at the tracking set when nothing is due.
IDLE_SLEEP = 0.25


class CallTracker:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._tasks: set[asyncio.Task[None]] = set()
        self._leased: set[str] = set()

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.rt.settings
        visibility_ms = int(settings.poll_visibility * 1000)
        idle = min(IDLE_SLEEP, settings.poll_interval / 2)
        while not stop.is_set():
            room = settings.tracker_concurrency - len(self._tasks)
            members: list[str] = []
            if room > 0:
                try:
                    members = await self.rt.scripts.lease_due(k.TRACKING, min(room, 500), visibility_ms)
                except Exception:
                    log.exception('tracker_lease_failed')
            for member in members:
                self._leased.add(member)
                task = asyncio.create_task(self._poll(member))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if not members or room <= 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), idle)
        await self._drain()

    async def _drain(self) -> None:
        """On shutdown: finish polls under way briefly, give the rest straight back to the fleet."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        for task in self._tasks:
            task.cancel()
        if self._leased:
            with contextlib.suppress(Exception):
                await self.rt.scripts.reschedule(k.TRACKING, sorted(self._leased), 0)

    async def _poll(self, member: str) -> None:
        attempt_id, call_id, *billing_only = member.split('|')
        try:
            with metrics.CALLS_IN_FLIGHT.track_inprogress():
                await self._poll_call(member, attempt_id, call_id, billing_only=bool(billing_only))
        except Exception:
            log.exception('poll_failed', attempt_id=masked_attempt(attempt_id), call_id=call_id)
            with contextlib.suppress(Exception):
                await self.rt.scripts.reschedule(k.TRACKING, [member], int(self.rt.settings.poll_interval * 1000))
        finally:
            self._leased.discard(member)

    async def _poll_call(self, member: str, attempt_id: str, call_id: str, *, billing_only: bool) -> None:
        interval_ms = int(self.rt.settings.poll_interval * 1000)
        try:
            call = await self.rt.ultravox.get_call(call_id)
        except CallNotFound:
            # Ultravox no longer knows the call (deleted, or retention): record what we can.
            ended = datetime.now(UTC).isoformat()
            call = {'callId': call_id, 'ended': ended, 'joined': None, 'endReason': 'system_error'}
            log.warning('call_not_found', attempt_id=masked_attempt(attempt_id), call_id=call_id)
        except UltravoxError as exc:
            if isinstance(exc, AccountFault):
                await open_account_fault(self.rt, exc)
            log.info('poll_deferred', attempt_id=masked_attempt(attempt_id), reason=str(exc))
            await self.rt.scripts.reschedule(k.TRACKING, [member], interval_ms)
            return
        if billing_only:
            await record_billing(self.rt, attempt_id, call, member)
        elif not await record_end(self.rt, attempt_id, call, member) and call.get('ended') is None:
            await self.rt.scripts.reschedule(k.TRACKING, [member], interval_ms)
