"""The call tracker: follows every live call to its end by polling ``GET /api/calls/{id}``.

The calls to poll live in one fleet-wide ZSET (attempt|call -> next poll time). A tracker leases
the due ones (pushing them ``poll_visibility`` ahead), so a tracker that dies gives its calls back
to the fleet; polling alone is enough to finish every call. Between looks it sleeps until the next
call falls due, woken sooner by an announced one (``workers/wakeups.py``).

Webhook-first: while webhooks are being delivered (``WEBHOOKS_LIVE`` exists: a delivery within
``DIALER_WEBHOOKS_LIVE_WINDOW``), a ``call.ended`` makes its call due at once, so live calls are
polled only every ``DIALER_POLL_SAFETY_INTERVAL`` as a safety net for a lost webhook, and at once
when a call outlives its longest possible end. Without webhooks every live call is polled every
``DIALER_POLL_INTERVAL``. A call nudged while this tracker is polling it is not polled a second time
at once: the poll under way sees its end, and what it leaves behind is made due when it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from dialer import metrics
from dialer.logs import masked_attempt
from dialer.ultravox import AccountFault, CallNotFound, UltravoxError
from workers.callback_tracking import is_inbound_member, poll_inbound
from workers.calls import record_billing, record_end
from workers.faults import open_account_fault
from workers.phone_leg import is_leg_member, poll_leg
from workers.wakeups import Sleeper, longest_sleep


if TYPE_CHECKING:
    from workers.runtime import Runtime


log = structlog.get_logger(__name__)

#: Pause before the next look while polls hand back their next poll times (batched into that look)
#: or while every poll slot is taken.
BUSY_SLEEP = 0.05
#: Most calls leased in one look.
LEASE_BATCH = 500


def longest_end_ms(call: dict[str, Any]) -> float | None:
    """Epoch ms by which the call must have ended (created + joinTimeout + maxDuration), if known."""
    try:
        created = datetime.fromisoformat(str(call['created']))
        join = float(str(call.get('joinTimeout') or '30s').removesuffix('s'))
        longest = float(str(call.get('maxDuration') or '3600s').removesuffix('s'))
    except (KeyError, ValueError):
        return None
    return (created.timestamp() + join + longest) * 1000


class CallTracker:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._tasks: set[asyncio.Task[None]] = set()
        self._leased: set[str] = set()
        #: Members leased again while this tracker was polling them: nudged (a webhook) meanwhile.
        self._nudged: set[str] = set()
        #: Next poll times (member -> delay ms) handed back on the next look (``lease_due_calls``).
        self._later: dict[str, int] = {}
        #: Woken by an announced due call (``workers/wakeups.py``) or by a poll leaving work behind.
        self.sleeper = Sleeper()

    async def run(self, stop: asyncio.Event) -> None:
        await self.sleeper.run(stop, self._look, busy=self._busy_pause)
        await self._drain()

    @property
    def _busy_pause(self) -> float:
        """The shortest time between two looks (and until hand-backs go back on a look)."""
        return min(BUSY_SLEEP, self.rt.settings.poll_interval / 2)

    async def _look(self) -> float:
        """Lease the due calls and start their polls; returns the seconds to sleep before the next look
        (0: a full batch, more may be due)."""
        settings = self.rt.settings
        busy = self._busy_pause
        room = settings.tracker_concurrency - len(self._tasks)
        limit = max(min(room, LEASE_BATCH), 0)
        members: list[str] = []
        next_due_ms: int | None = None
        if room > 0 or self._later:
            later, self._later = self._later, {}
            try:
                # whether webhooks arrive is read on the same look (safety polls or the interval)
                look = await self.rt.scripts.lease_due_calls(limit, int(settings.poll_visibility * 1000), later)
            except Exception:
                self._later = {**later, **self._later}
                log.exception('tracker_lease_failed')
                return busy
            members, self.rt.webhooks_live, next_due_ms = look.members, look.webhooks_live, look.next_due_ms
        for member in members:
            if member in self._leased:
                # A webhook made it due while our poll of it runs: a second poll now would do the
                # same work twice (GET, messages, finish). The poll under way serves it, and the
                # entry it leaves (live, or billing) is made due again when it is done.
                self._nudged.add(member)
                continue
            self._leased.add(member)
            task = asyncio.create_task(self._poll(member))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if len(members) >= limit > 0:
            return 0  # a full batch may leave more due
        if room <= 0 or self._later:
            return busy  # a slot frees or hand-backs wait: look again soon
        # nothing due until the next member falls due, unless a due one is announced meanwhile
        longest = longest_sleep(settings)
        return longest if next_due_ms is None else min(longest, next_due_ms / 1000)

    async def _drain(self) -> None:
        """On shutdown: finish polls under way briefly, give the rest straight back to the fleet."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        for task in self._tasks:
            task.cancel()
        later = {**self._later, **dict.fromkeys(self._leased, 0)}
        if later:
            with contextlib.suppress(Exception):
                await self.rt.scripts.lease_due_calls(0, 0, later)

    async def _poll(self, member: str) -> None:
        attempt_id, call_id, *billing_only = member.split('|')
        try:
            with metrics.CALLS_IN_FLIGHT.track_inprogress():
                if is_leg_member(member):  # a direct-mode provider leg: workers/phone_leg.py follows it
                    await poll_leg(self.rt, member)
                    return
                if is_inbound_member(member):  # a call-back: workers/callback_tracking.py follows it
                    await poll_inbound(self.rt, member)
                    return
                await self._poll_call(member, attempt_id, call_id, billing_only=bool(billing_only))
        except Exception:
            log.exception('poll_failed', attempt_id=masked_attempt(attempt_id), call_id=call_id)
            self._later[member] = int(self.rt.settings.poll_interval * 1000)
        finally:
            self._leased.discard(member)
            if member in self._nudged:
                self._nudged.discard(member)
                # due now again, only where the entries still exist (rescheduling never adds)
                self._later.update({member: 0, f'{member}|b': 0})
            if self._later:
                # handed back on a look soon, batched with other polls ending meanwhile
                self.sleeper.wake_within(self._busy_pause)

    def _next_poll_ms(self, call: dict[str, Any]) -> int:
        """When to look at a live call again: the safety net with webhooks, the interval without."""
        interval_ms = self.rt.live_poll_ms
        if not self.rt.webhooks_live:
            return interval_ms
        end = longest_end_ms(call)
        if end is None:
            return interval_ms
        # a call that outlives its longest possible end is polled soon (never in a tight loop)
        until_end = end - time.time() * 1000
        return int(min(interval_ms, max(until_end, self.rt.settings.poll_interval * 1000)))

    async def _poll_call(self, member: str, attempt_id: str, call_id: str, *, billing_only: bool) -> None:
        interval_ms = self.rt.live_poll_ms
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
            self._later[member] = interval_ms
            return
        if billing_only:
            await record_billing(self.rt, attempt_id, call, member)
        elif not await record_end(self.rt, attempt_id, call, member) and call.get('ended') is None:
            self._later[member] = self._next_poll_ms(call)
