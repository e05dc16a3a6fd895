"""The outbox's state for operators and Prometheus: depth, oldest age, given up and dropped events.

Read by ``dialer outbox status`` and, at scrape time, by ``dialer exporter`` (fleet-wide state comes
from the exporter alone, never multiplied by the number of workers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily

from dialer import constants as k


if TYPE_CHECKING:
    from collections.abc import Iterator

    import redis as redis_sync
    from prometheus_client import Metric

    from dialer.outbox import Outbox


def read_status(redis: redis_sync.Redis, outbox: Outbox) -> dict[str, Any]:
    """Per destination: undelivered events, the oldest one's age, given up, dropped by the cap."""
    ids = outbox.destination_ids
    with redis.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.get(k.CLOCK_OFFSET)
        pipe.zcard(k.OUTBOX_LOG)
        pipe.hgetall(k.OUTBOX_STATE)
        for dest in ids:
            pipe.zcard(k.outbox_pending(dest))
            pipe.zrange(k.outbox_pending(dest), 0, 0, withscores=True)
            pipe.zcard(k.outbox_dead(dest))
            pipe.hlen(k.outbox_tries(dest))
        replies = pipe.execute()
    (seconds, micros), offset, retained, state = replies[:4]
    now = int(seconds) * 1000 + int(micros) // 1000 + int(offset or 0)
    destinations = []
    for i, dest in enumerate(ids):
        pending, oldest, dead, failing = replies[4 + 4 * i : 8 + 4 * i]
        destinations.append(
            {
                'destination': dest,
                'pending': int(pending),
                'oldest_pending_seconds': round(max(0, now - oldest[0][1]) / 1000, 3) if oldest else 0.0,
                'failing': int(failing),
                'dead': int(dead),
                'dropped': int(state.get(f'dropped:{dest}', 0)),
            }
        )
    return {'retained_events': int(retained), 'max_events': outbox.max_events, 'destinations': destinations}


class OutboxCollector:
    """Outbox depth and age for ``dialer exporter`` (fleet-wide state, read from Redis at scrape time)."""

    def __init__(self, redis: redis_sync.Redis, outbox: Outbox) -> None:
        self.redis = redis
        self.outbox = outbox

    def collect(self) -> Iterator[Metric]:
        if not self.outbox.enabled:
            return
        status = read_status(self.redis, self.outbox)
        retained = GaugeMetricFamily('dialer_outbox_events', 'Result-webhook events retained in Redis (cap included).')
        retained.add_metric([], status['retained_events'])
        cap = GaugeMetricFamily('dialer_outbox_max_events', 'DIALER_OUTBOX_MAX_EVENTS.')
        cap.add_metric([], status['max_events'])
        families = {
            'pending': GaugeMetricFamily(
                'dialer_outbox_pending_events', 'Events not yet delivered to a destination.', labels=['destination']
            ),
            'oldest_pending_seconds': GaugeMetricFamily(
                'dialer_outbox_oldest_pending_seconds',
                'Age of the oldest event not yet delivered to a destination (0 when none).',
                labels=['destination'],
            ),
            'dead': GaugeMetricFamily(
                'dialer_outbox_dead_events',
                'Events given up after DIALER_OUTBOX_RETRY_HOURS of failures (replayable).',
                labels=['destination'],
            ),
            'dropped': GaugeMetricFamily(
                'dialer_outbox_dropped_events',
                'Undelivered events pushed out by DIALER_OUTBOX_MAX_EVENTS (lost for that destination).',
                labels=['destination'],
            ),
        }
        for row in status['destinations']:
            for field, family in families.items():
                family.add_metric([row['destination']], row[field])
        yield retained
        yield cap
        yield from families.values()


#: The names ``OutboxCollector`` can yield (the exporter's METRIC_NAMES includes them).
OUTBOX_METRIC_NAMES = frozenset(
    {
        'dialer_outbox_events',
        'dialer_outbox_max_events',
        'dialer_outbox_pending_events',
        'dialer_outbox_oldest_pending_seconds',
        'dialer_outbox_dead_events',
        'dialer_outbox_dropped_events',
    }
)
