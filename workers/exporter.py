"""The fleet-wide exporter: campaign, trunk, account and queue state read from Redis at scrape time.

Workers export only what they themselves did (``dialer/metrics.py``). State that lives in Redis is
exported here, by one process, so that it is never multiplied by the number of workers. The collector
has its own registry: it must not mix with the default registry's process metrics or a worker's.
A scrape costs two pipelined round trips, whatever the number of campaigns and trunks.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import TYPE_CHECKING, Final

import redis as redis_sync
import structlog
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from campaigns.results import to_float, to_int
from dialer import constants as k
from dialer.models import CampaignState, ContactStatus, Outcome
from dialer.outbox import Outbox
from dialer.trunks import TrunkConfigError, TrunkRegistry
from workers.outbox_status import OUTBOX_METRIC_NAMES, OutboxCollector


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import FrameType

    from prometheus_client import Metric

    from dialer.settings import AccountLimits, Settings


log = structlog.get_logger(__name__)

#: Every metric this exporter can yield (the names Prometheus stores, counters with ``_total``).
METRIC_NAMES: Final = frozenset(
    {
        'dialer_campaign_contacts',
        'dialer_campaign_outcomes',
        'dialer_campaign_attempt_outcomes',
        'dialer_campaign_sip_billed_seconds',
        'dialer_campaign_agent_billed_seconds',
        'dialer_campaign_state',
        'dialer_campaign_calls_created',
        'dialer_campaign_retries',
        'dialer_campaign_due_contacts',
        'dialer_trunk_calls_in_flight',
        'dialer_trunk_max_concurrent',
        'dialer_trunk_calls_per_second_limit',
        'dialer_trunk_breaker_open',
        'dialer_trunk_due_contacts',
        'dialer_account_calls_in_flight',
        'dialer_account_max_concurrent',
        'dialer_account_calls_per_minute_limit',
        'dialer_account_calls_last_minute',
        'dialer_account_hold',
        'dialer_account_fault',
        'dialer_campaign_blocked',
        'dialer_ambiguous_attempts',
        'dialer_ambiguous_oldest_seconds',
        'dialer_queue_depth',
        'dialer_calls_tracked',
        'dialer_exporter_scrape_duration_seconds',
        'dialer_exporter_scrape_errors_total',
    }
    | OUTBOX_METRIC_NAMES
)

MINUTE_MS = 60_000


def sync_redis_client(settings: Settings) -> redis_sync.Redis:
    """A blocking client: ``collect`` runs in the HTTP server's thread, not in an event loop."""
    if settings.redis_sentinels:
        from redis.sentinel import Sentinel  # noqa: PLC0415  only for Sentinel setups

        hosts = [(h.rsplit(':', 1)[0], int(h.rsplit(':', 1)[1])) for h in settings.redis_sentinels.split(',')]
        kwargs = redis_sync.Redis.from_url(settings.redis_url).connection_pool.connection_kwargs
        return Sentinel(hosts, decode_responses=True, socket_timeout=5).master_for(
            settings.redis_sentinel_master, db=kwargs.get('db', 0), password=kwargs.get('password')
        )
    return redis_sync.Redis.from_url(
        settings.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
    )


class DialerCollector(Collector):
    """Reads the fleet's shared state on every scrape; it keeps nothing but its own error count."""

    def __init__(
        self,
        redis: redis_sync.Redis,
        trunks: Callable[[], TrunkRegistry | None],
        account_limits: AccountLimits,
    ) -> None:
        self.redis = redis
        self.trunks = trunks
        self.account_limits = account_limits
        self.errors = 0
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            metrics = self._read()
        except Exception as exc:
            with self._lock:
                self.errors += 1
            log.warning('exporter.scrape_failed', error=type(exc).__name__, detail=str(exc)[:200])
            metrics = []
        yield from metrics
        errors = CounterMetricFamily(
            'dialer_exporter_scrape_errors', 'Scrapes whose Redis reads failed (their state metrics are absent).'
        )
        errors.add_metric([], self.errors)
        yield errors
        duration = GaugeMetricFamily('dialer_exporter_scrape_duration_seconds', 'Time the last scrape took.')
        duration.add_metric([], time.perf_counter() - started)
        yield duration

    def _read(self) -> list[Metric]:
        registry = self.trunks()
        trunk_names = sorted(registry.trunks) if registry is not None else []
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.get(k.CLOCK_OFFSET)
            pipe.smembers(k.CAMPAIGNS)
            pipe.zcard(k.QUEUE_NAME)
            pipe.zcard(k.TRACKING)
            pipe.pttl(k.ACCOUNT_HOLD)
            for trunk in trunk_names:
                pipe.smembers(k.trunk_campaigns(trunk))
                pipe.pttl(k.trunk_hold(trunk))
            pipe.get(k.ACCOUNT_HOLD)
            pipe.zcard(k.AMBIGUOUS)
            pipe.zrange(k.AMBIGUOUS, 0, 0, withscores=True)
            first = pipe.execute()
        seconds, micros = first[0]
        # the dialer's clock is Redis TIME plus the test-only offset, as in every Lua script
        now = int(seconds) * 1000 + int(micros) // 1000 + to_int(first[1])
        campaigns = sorted(first[2])
        queue_depth, tracked, account_ttl = first[3:6]
        trunk_replies = first[6:-3]
        hold_reason, ambiguous, oldest = first[-3:]

        with self.redis.pipeline(transaction=False) as pipe:
            for name in campaigns:
                pipe.hgetall(k.campaign(name))
                pipe.zcount(k.campaign_due(name), '-inf', now)
            for trunk in trunk_names:
                pipe.zcount(k.trunk_slots(trunk), f'({now}', '+inf')
            pipe.zcount(k.ACCOUNT_SLOTS, f'({now}', '+inf')
            pipe.zcount(k.ACCOUNT_RATE_MINUTE, now - MINUTE_MS, '+inf')
            second = pipe.execute()
        hashes = dict(zip(campaigns, second[0 : 2 * len(campaigns) : 2], strict=True))
        due = dict(zip(campaigns, (int(n) for n in second[1 : 2 * len(campaigns) : 2]), strict=True))
        trunk_in_flight = second[2 * len(campaigns) : 2 * len(campaigns) + len(trunk_names)]
        account_in_flight, account_minute = second[-2:]

        metrics = self._campaign_metrics(hashes, due)
        trunk_rows = [
            (name, int(flight), set(trunk_replies[2 * i]), int(trunk_replies[2 * i + 1]) > 0)
            for i, (name, flight) in enumerate(zip(trunk_names, trunk_in_flight, strict=True))
        ]
        if registry is not None:
            metrics += self._trunk_metrics(registry, trunk_rows, due)
        metrics += self._fleet_metrics(
            int(account_in_flight), int(account_minute), int(account_ttl) > 0, int(queue_depth), int(tracked)
        )
        oldest_ms = now - int(oldest[0][1]) if oldest else 0
        metrics += _fault_metrics(hashes, hold_reason if int(account_ttl) > 0 else None, int(ambiguous), oldest_ms)
        return metrics

    @staticmethod
    def _campaign_metrics(hashes: dict[str, dict[str, str]], due: dict[str, int]) -> list[Metric]:
        contacts = GaugeMetricFamily(
            'dialer_campaign_contacts', "Contacts by status (the campaign's counters).", labels=['campaign', 'status']
        )
        outcomes = GaugeMetricFamily(
            'dialer_campaign_outcomes', 'Contacts closed, by final outcome.', labels=['campaign', 'outcome']
        )
        attempt_outcomes = GaugeMetricFamily(
            'dialer_campaign_attempt_outcomes', 'Attempts ended, by outcome.', labels=['campaign', 'outcome']
        )
        sip = GaugeMetricFamily(
            'dialer_campaign_sip_billed_seconds', 'SIP seconds billed (final billing only).', labels=['campaign']
        )
        agent = GaugeMetricFamily(
            'dialer_campaign_agent_billed_seconds', 'Agent seconds billed (final billing only).', labels=['campaign']
        )
        state = GaugeMetricFamily(
            'dialer_campaign_state',
            '1 for the state the campaign is in, 0 for the others.',
            labels=['campaign', 'state'],
        )
        calls = GaugeMetricFamily('dialer_campaign_calls_created', 'Calls created.', labels=['campaign'])
        retries = GaugeMetricFamily('dialer_campaign_retries', 'Retries scheduled.', labels=['campaign'])
        due_now = GaugeMetricFamily(
            'dialer_campaign_due_contacts', 'Contacts due to be dialled now.', labels=['campaign']
        )
        for name, data in hashes.items():
            if not data:
                continue  # deleted between the two round trips
            for status in ContactStatus:
                contacts.add_metric([name, status.value], to_int(data.get(f'n:{status.value}')))
            for outcome in Outcome:
                outcomes.add_metric([name, outcome.value], to_int(data.get(f'o:{outcome.value}')))
                attempt_outcomes.add_metric([name, outcome.value], to_int(data.get(f'e:{outcome.value}')))
            sip.add_metric([name], to_float(data.get('sip_seconds')))
            agent.add_metric([name], to_float(data.get('agent_seconds')))
            for value in CampaignState:
                state.add_metric([name, value.value], 1 if data.get('state') == value.value else 0)
            calls.add_metric([name], to_int(data.get('calls')))
            retries.add_metric([name], to_int(data.get('retries')))
            due_now.add_metric([name], due.get(name, 0))
        return [contacts, outcomes, attempt_outcomes, sip, agent, state, calls, retries, due_now]

    @staticmethod
    def _trunk_metrics(
        registry: TrunkRegistry, rows: list[tuple[str, int, set[str], bool]], due: dict[str, int]
    ) -> list[Metric]:
        in_flight = GaugeMetricFamily('dialer_trunk_calls_in_flight', 'Trunk slots held now.', labels=['trunk'])
        max_concurrent = GaugeMetricFamily(
            'dialer_trunk_max_concurrent', 'Concurrent calls the trunk allows.', labels=['trunk']
        )
        cps = GaugeMetricFamily(
            'dialer_trunk_calls_per_second_limit', 'Call creations per second the trunk allows.', labels=['trunk']
        )
        breaker = GaugeMetricFamily(
            'dialer_trunk_breaker_open',
            '1 while creations on the trunk are held (circuit breaker or Retry-After back-off).',
            labels=['trunk'],
        )
        due_contacts = GaugeMetricFamily(
            'dialer_trunk_due_contacts', "Contacts due now in the trunk's active campaigns.", labels=['trunk']
        )
        for name, flight, campaigns, held in rows:
            trunk = registry.trunks[name]
            in_flight.add_metric([name], flight)
            max_concurrent.add_metric([name], trunk.max_concurrent)
            cps.add_metric([name], trunk.calls_per_second)
            breaker.add_metric([name], 1 if held else 0)
            due_contacts.add_metric([name], sum(due.get(c, 0) for c in campaigns))
        return [in_flight, max_concurrent, cps, breaker, due_contacts]

    def _fleet_metrics(
        self, in_flight: int, last_minute: int, held: bool, queue_depth: int, tracked: int
    ) -> list[Metric]:
        limits = self.account_limits
        metrics: list[Metric] = []
        for name, doc, value in (
            ('dialer_account_calls_in_flight', 'Account slots held now (0 when no concurrency cap).', in_flight),
            ('dialer_account_max_concurrent', 'Concurrent calls the account allows.', limits.max_concurrent),
            (
                'dialer_account_calls_per_minute_limit',
                'Creations per minute the account allows.',
                limits.calls_per_minute,
            ),
            ('dialer_account_calls_last_minute', 'Calls created on the account in the last 60 s.', last_minute),
            ('dialer_account_hold', '1 while creations on the account are held (429 or breaker).', int(held)),
            ('dialer_queue_depth', 'Dial jobs waiting in the arq queue.', queue_depth),
            ('dialer_calls_tracked', 'Calls being followed (polled) by the fleet.', tracked),
        ):
            if value is None:
                continue  # no account-wide concurrency cap on this plan
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], value)
            metrics.append(gauge)
        return metrics


#: Bounded values of ``dialer_account_fault{reason}`` (see dialer/ultravox.py ACCOUNT_FAULT_CODES).
ACCOUNT_FAULT_REASONS: Final = ('unauthorized', 'payment_required', 'forbidden', 'account_unusable')
CAMPAIGN_FAULT_REASONS: Final = ('agent_not_found', 'trunk_missing')


def _fault_metrics(
    hashes: dict[str, dict[str, str]], hold_reason: str | None, ambiguous: int, oldest_ms: int
) -> list[Metric]:
    """Why dialling is held, if it is: the account, a campaign, or creates of unknown outcome."""
    fault = GaugeMetricFamily(
        'dialer_account_fault',
        '1 while dialling is held fleet-wide because Ultravox refuses the account (bad key, payment, disabled).',
        labels=['reason'],
    )
    open_reason = None
    if hold_reason and hold_reason.startswith(k.FAULT_HOLD_PREFIX):
        open_reason = hold_reason.removeprefix(k.FAULT_HOLD_PREFIX).split(':', 1)[0]
    for reason in ACCOUNT_FAULT_REASONS:
        fault.add_metric([reason], 1 if reason == open_reason else 0)
    blocked = GaugeMetricFamily(
        'dialer_campaign_blocked',
        '1 while a campaign cannot dial: its agent is gone or its trunk is not in the trunks file.',
        labels=['campaign', 'reason'],
    )
    for name, data in hashes.items():
        blocked_by = _campaign_fault_reason(data.get('fault'))
        for candidate in CAMPAIGN_FAULT_REASONS:
            blocked.add_metric([name, candidate], 1 if candidate == blocked_by else 0)
    pending = GaugeMetricFamily(
        'dialer_ambiguous_attempts', 'Creates whose outcome is unknown, quarantined (never re-dialled) while looked up.'
    )
    pending.add_metric([], ambiguous)
    oldest = GaugeMetricFamily(
        'dialer_ambiguous_oldest_seconds', 'Age of the oldest quarantined ambiguous create (0 when none).'
    )
    oldest.add_metric([], max(0, oldest_ms) / 1000)
    return [fault, blocked, pending, oldest]


def _campaign_fault_reason(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        return str(json.loads(raw)['reason'])
    except (ValueError, KeyError, TypeError):
        return None


class _Trunks:
    """The trunks file, re-read when it changes; a broken edit keeps the last good trunks."""

    def __init__(self, registry: TrunkRegistry) -> None:
        self.registry = registry

    def __call__(self) -> TrunkRegistry:
        try:
            self.registry.refresh()
        except TrunkConfigError as exc:
            log.warning('exporter.trunks_file_invalid', error=str(exc))
        return self.registry


def build_registry(settings: Settings, redis: redis_sync.Redis | None = None) -> CollectorRegistry:
    """A registry holding only the dialer collector (no process or platform collectors).

    An unusable trunks file at start raises ``TrunkConfigError`` naming the file and field.
    """
    trunks = _Trunks(TrunkRegistry(settings.trunks_file))
    # auto_describe off: registering must not read Redis (the collector has no fixed description)
    registry = CollectorRegistry(auto_describe=False)
    client = redis or sync_redis_client(settings)
    registry.register(DialerCollector(client, trunks, settings.account_limits))
    # result-webhook outbox depth and age (nothing when no destination is configured)
    registry.register(OutboxCollector(client, Outbox.from_settings(settings)))
    return registry


def run_exporter(settings: Settings, host: str, port: int) -> None:
    """Serve ``/metrics`` on ``host:port`` until SIGTERM or SIGINT."""
    registry = build_registry(settings)
    server, thread = start_http_server(port, addr=host, registry=registry)
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info('exporter.stopping', signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info('exporter.started', host=host, port=port)
    try:
        while not stop.wait(3600):
            pass
    finally:
        server.shutdown()
        thread.join(timeout=5)
