"""Delivering result webhooks: every worker leases due outbox events and POSTs them, signed.

A loop of its own beside the pacer and the tracker, with its own HTTP pool, bounded concurrency and
timeouts, so a destination that is slow or down never slows dialling. Per destination only each
contact's oldest undelivered event is ever leased (``outbox_lease.lua``), so a contact's events reach
a destination in order; a failure retries the same event with exponential backoff (later events of
that contact wait), for ``DIALER_OUTBOX_RETRY_HOURS``, then gives it up to the dead-letter set
(``dialer outbox replay`` sends it again). A lease outlives a delivery's timeout several times; a
worker killed mid-delivery gives its events back when the lease runs out (the receiver may then see
an event twice: it deduplicates on the event id).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import random
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
import structlog

from dialer import constants as k
from dialer import metrics
from dialer.http import async_client
from dialer.outbox import (
    Outbox,
    adopt_destinations,
    backoff_ms,
    event_body,
    expire_removed_destinations,
    signed_headers,
)
from workers.wakeups import Sleeper, longest_sleep


if TYPE_CHECKING:
    from dialer.outbox import ResultWebhook
    from dialer.scripts import Leased
    from workers.runtime import Runtime


log = structlog.get_logger(__name__)

#: Shortest time between two looks at the outbox: what used to be its fixed poll.
BUSY_SLEEP = 0.2
#: How often one worker trims delivered events past their retention.
TRIM_INTERVAL = 60.0
#: A ``Retry-After`` longer than this is not waited for beyond the normal backoff cap.
MAX_RETRY_AFTER_MS = 3_600_000


def lease_ms(timeout: float) -> int:
    """A leased event comes back to the fleet after this long: three delivery timeouts."""
    return max(1000, math.ceil(timeout * 3 * 1000))


def retry_after_ms(response: httpx.Response) -> int:
    """A 429/503's ``Retry-After`` (seconds or an HTTP date) in ms; 0 when absent or unreadable."""
    value = response.headers.get('Retry-After', '').strip()
    if not value:
        return 0
    if value.isdigit():
        return min(MAX_RETRY_AFTER_MS, int(value) * 1000)
    with contextlib.suppress(TypeError, ValueError):
        moment = email.utils.parsedate_to_datetime(value)
        return min(MAX_RETRY_AFTER_MS, max(0, int((moment - datetime.now(UTC)).total_seconds() * 1000)))
    return 0


class OutboxDelivery:
    def __init__(self, rt: Runtime, client: httpx.AsyncClient | None = None) -> None:
        self.rt = rt
        self.outbox = Outbox.from_settings(rt.settings)
        settings = rt.settings
        self.client = client or async_client(
            connect_timeout=settings.outbox_timeout,
            read_timeout=settings.outbox_timeout,
            max_connections=settings.outbox_concurrency,
        )
        self._owns_client = client is None
        #: Woken by an announced due event (``workers/wakeups.py``) or a delivery ending.
        self.sleeper = Sleeper()
        self._tasks: set[asyncio.Task[None]] = set()
        self._leased: dict[str, set[str]] = {d.destination_id: set() for d in self.outbox.destinations}
        self._lease_ms = lease_ms(settings.outbox_timeout)
        self._retry_window_ms = math.ceil(settings.outbox_retry_hours * 3_600_000)
        #: When this loop last trimmed (monotonic seconds; 0: not yet).
        self._trimmed = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Lease and deliver until ``stop``. Between looks the loop sleeps until the next event falls due
        (each look says when), at most its longest sleep: an event made due sooner is announced
        (``outbox_due`` in ``dialer/lua/_outbox.lua``), and a delivery ending wakes it too (its slot is free,
        and the contact's next event may be due). At most one look per ``BUSY_SLEEP``, so events appended
        one by one are leased together."""
        # Runs without destinations too: events and destination keys left from when some were configured
        # are still trimmed and expired.
        with contextlib.suppress(Exception):
            await adopt_destinations(self.rt.scripts.redis, self.outbox.destination_ids)
        try:
            await self.sleeper.run(stop, self._look, busy=BUSY_SLEEP)
        finally:
            await self._drain()

    async def _look(self) -> float:
        """Lease at every destination, trim when due; the seconds until the next look."""
        pause = longest_sleep(self.rt.settings) if self.outbox.enabled else TRIM_INTERVAL
        for dest in self.outbox.destinations:
            pause = min(pause, await self._lease(dest))
        if time.monotonic() - self._trimmed >= TRIM_INTERVAL:
            self._trimmed = time.monotonic()
            await self._trim()
        return pause

    async def _lease(self, dest: ResultWebhook) -> float:
        """Lease what is due at one destination and start its deliveries; returns the seconds until it
        needs another look (0: a full batch, more may be due)."""
        room = self.rt.settings.outbox_concurrency - len(self._tasks)
        if room <= 0:
            return TRIM_INTERVAL  # every slot busy: a delivery ending wakes the loop
        try:
            look = await self.rt.scripts.outbox_lease(dest.destination_id, room, self._lease_ms)
        except Exception:
            log.exception('outbox_lease_failed', destination=dest.destination_id)
            return BUSY_SLEEP
        for lease in look.leases:
            self._leased[dest.destination_id].add(lease.ordering_key)
            task = asyncio.create_task(self._deliver(dest, lease))
            self._tasks.add(task)
            task.add_done_callback(self._delivered)
        if len(look.leases) >= room:
            return 0.0
        return TRIM_INTERVAL if look.next_due_ms is None else look.next_due_ms / 1000

    def _delivered(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.sleeper.wake()

    async def _trim(self) -> None:
        retention_ms = math.ceil(self.rt.settings.outbox_retention_hours * 3_600_000)
        with contextlib.suppress(Exception):
            await self.rt.scripts.outbox_trim(self.outbox.destination_ids, retention_ms)
            for dest in await expire_removed_destinations(
                self.rt.scripts.redis, self.outbox.destination_ids, retention_ms
            ):
                log.warning('outbox_destination_removed', destination=dest, expires_in_hours=retention_ms / 3_600_000)

    async def _drain(self) -> None:
        """On shutdown: let deliveries under way finish briefly, give the rest straight back."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.rt.settings.outbox_timeout)
        unfinished = {dest: set(keys) for dest, keys in self._leased.items()}
        for task in self._tasks:
            task.cancel()
        for dest, keys in unfinished.items():
            if keys:
                with contextlib.suppress(Exception):
                    await self.rt.scripts.reschedule(k.outbox_heads(dest), sorted(keys), 0)
        if self._owns_client:
            await self.client.aclose()

    async def _deliver(self, dest: ResultWebhook, lease: Leased) -> None:
        dest_id = dest.destination_id
        event_id, event_type, body = event_body(lease.event)
        delay_ms = 0
        started = time.perf_counter()
        try:
            headers = signed_headers(event_id, event_type, body, dest.secret, datetime.now(UTC))
            try:
                response = await self.client.post(dest.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                delivered, status = False, type(exc).__name__
            else:
                delivered, status = response.is_success, str(response.status_code)
                if response.status_code in {429, 503}:
                    delay_ms = retry_after_ms(response)
            metrics.OUTBOX_DELIVERY_SECONDS.labels(destination=dest_id).observe(time.perf_counter() - started)
            if delivered:
                await self.rt.scripts.outbox_ack(dest_id, lease, event_id)
                metrics.OUTBOX_DELIVERIES.labels(destination=dest_id, result='delivered').inc()
                return
            cap_ms = math.ceil(self.rt.settings.outbox_backoff_cap * 1000)
            delay_ms = max(delay_ms, backoff_ms(lease.failures + 1, random.random(), cap_ms))  # noqa: S311  jitter only
            verdict = await self.rt.scripts.outbox_nack(
                dest_id, lease, event_id, retry_window_ms=self._retry_window_ms, delay_ms=delay_ms
            )
            result = 'dead' if verdict == 'dead' else 'failed'
            metrics.OUTBOX_DELIVERIES.labels(destination=dest_id, result=result).inc()
            log_event = log.error if result == 'dead' else log.info
            # never the URL (it may carry a token) nor the body (it names a person)
            log_event(
                'outbox_delivery_given_up' if result == 'dead' else 'outbox_delivery_failed',
                destination=dest_id,
                event_id=event_id,
                event_type=event_type,
                status=status,
                failures=lease.failures + 1,
                retry_in_ms=delay_ms if result == 'failed' else None,
            )
        except Exception:
            # Redis went away mid-step: the lease runs out and the event is tried again
            log.exception('outbox_delivery_error', destination=dest_id, event_id=event_id)
        finally:
            self._leased[dest_id].discard(lease.ordering_key)
