"""Signed webhook delivery: one heap-driven loop schedules events, each delivery retries with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import hmac
import itertools
import json
import random
import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
import structlog

from dialer.http import async_client


if TYPE_CHECKING:
    from collections.abc import Callable

    from simulator.calls import CallPlan
    from simulator.config import SimulatorConfig


log = structlog.get_logger(__name__)


def sign(body: bytes, timestamp: str, secrets: list[str]) -> str:
    """``X-Ultravox-Webhook-Signature``: hex HMAC-SHA256 per secret over body + timestamp, comma-joined."""
    message = body + timestamp.encode()
    return ','.join(hmac.new(secret.encode(), message, hashlib.sha256).hexdigest() for secret in secrets)


def event_time(plan: CallPlan, event: str) -> float | None:
    """Real epoch time at which ``event`` happens for this call (None: it never does)."""
    if event == 'call.started':
        return plan.created
    if event == 'call.joined':
        return plan.joined_real
    if event == 'call.ended':
        return plan.ended_real
    return plan.billed_real


class WebhookDispatcher:
    def __init__(self, get_config: Callable[[], SimulatorConfig]) -> None:
        self.get_config = get_config
        self.heap: list[tuple[float, int, str, CallPlan]] = []
        self.counter = itertools.count()
        self.wake = asyncio.Event()
        self.client: httpx.AsyncClient | None = None
        self.loop_task: asyncio.Task[None] | None = None
        self.deliveries: set[asyncio.Task[None]] = set()
        self.stats: Counter[str] = Counter()
        self.rng = random.Random(get_config().seed)  # noqa: S311  simulation, not crypto

    def schedule(self, plan: CallPlan) -> None:
        config = self.get_config()
        if not config.webhook_url:
            return
        earliest = self.heap[0][0] if self.heap else None
        for event in config.webhook_events:
            due = event_time(plan, event)
            if due is not None:
                heapq.heappush(self.heap, (due, next(self.counter), event, plan))
        if earliest is None or self.heap[0][0] < earliest:
            self.wake.set()

    async def start(self) -> None:
        # the dialer's aiohttp transport: httpx's own (httpcore + anyio) saturated this loop at ~40 ends/s
        # with thousands of live calls (bench/tracking_bench.py)
        self.client = async_client(connect_timeout=10.0, read_timeout=10.0)
        self.loop_task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.loop_task is not None:
            self.loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.loop_task
        for task in list(self.deliveries):
            task.cancel()
        await asyncio.gather(*self.deliveries, return_exceptions=True)
        if self.client is not None:
            await self.client.aclose()

    async def _run(self) -> None:
        while True:
            self.wake.clear()
            now = time.time()
            while self.heap and self.heap[0][0] <= now:
                _, _, event, plan = heapq.heappop(self.heap)
                copies = 2 if self.rng.random() < self.get_config().webhook_duplicate_rate else 1
                self.stats['duplicated'] += copies - 1
                for _ in range(copies):
                    task = asyncio.create_task(self._deliver(event, plan))
                    self.deliveries.add(task)
                    task.add_done_callback(self.deliveries.discard)
            timeout = self.heap[0][0] - now if self.heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    async def _deliver(self, event: str, plan: CallPlan) -> None:
        config = self.get_config()
        if self.client is None or not config.webhook_url:
            return
        body = json.dumps({'event': event, 'call': plan.view(time.time())}, separators=(',', ':')).encode()
        delay = config.webhook_retry_base * config.time_scale
        for attempt in range(1, config.webhook_max_tries + 1):
            timestamp = datetime.now(UTC).isoformat().replace('+00:00', 'Z')
            headers = {'Content-Type': 'application/json', 'X-Ultravox-Webhook-Timestamp': timestamp}
            if config.webhook_secret:
                headers['X-Ultravox-Webhook-Signature'] = sign(body, timestamp, config.webhook_secret)
            try:
                response = await self.client.post(config.webhook_url, content=body, headers=headers)
                if response.is_success:
                    self.stats['delivered'] += 1
                    return
                self.stats['non_2xx'] += 1
            except httpx.HTTPError as error:
                self.stats['transport_errors'] += 1
                log.debug('webhook_delivery_failed', webhook_event=event, attempt=attempt, error=str(error))
            if attempt < config.webhook_max_tries:
                await asyncio.sleep(delay)
                delay *= 2
        self.stats['gave_up'] += 1
        log.warning('webhook_gave_up', webhook_event=event, call_id=plan.call_id)
