"""Result webhooks: a durable outbox of events in Redis, delivered signed, in order per contact.

Events (``attempt.ended``, ``contact.completed``, ``contact.opted_out``, ``campaign.completed``) are
appended by the Lua script that records the fact they report (``dialer/lua/_outbox.lua``), so a fact
never exists without its event, and only when destinations are configured (``DIALER_RESULT_WEBHOOKS``).
The workers deliver them (``workers/outbox_delivery.py``).

**Taking part from a script.** Every script is loaded with ``_outbox.lua`` in front of the prelude.
A script that records a fact appends :meth:`Outbox.keys` to the end of its KEYS and :meth:`Outbox.args`
to the end of its ARGV, calls ``outbox_open(first_tail_key_index, first_tail_arg_index)`` once, then
``outbox_append(type, ordering_key, data_table, now)``; ``maybe_complete`` (the prelude) appends
``campaign.completed`` on its own once the outbox is open. Producers outside a script use
:func:`append_event` (its own atomic script, not atomic with anything else).

**Signature** (the same shape as Ultravox's webhooks): each POST carries

- ``X-Dialer-Timestamp``: ISO 8601 UTC time of this delivery attempt;
- ``X-Dialer-Signature``: hex HMAC-SHA256 of ``raw body + timestamp`` under the destination's secret
  (several, comma-separated, while secrets rotate);
- ``X-Dialer-Event-Id`` and ``X-Dialer-Event-Type``: the event's stable id (the same on every retry
  and replay: deduplicate on it) and its type.

A receiver recomputes the HMAC over the bytes it received and the timestamp header, compares it in
constant time with any of the signatures, and refuses timestamps older than a few minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from dialer import constants as k


if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from redis.asyncio import Redis

    from dialer.scripts import Scripts


TIMESTAMP_HEADER: Final = 'X-Dialer-Timestamp'
SIGNATURE_HEADER: Final = 'X-Dialer-Signature'
EVENT_ID_HEADER: Final = 'X-Dialer-Event-Id'
EVENT_TYPE_HEADER: Final = 'X-Dialer-Event-Type'

#: Every event type the dialer emits.
EVENT_TYPES: Final = ('attempt.ended', 'contact.completed', 'contact.opted_out', 'campaign.completed')

#: First retry after this long, doubling per failure up to the cap (``DIALER_OUTBOX_BACKOFF_CAP``; plus up
#: to 20 % jitter).
BACKOFF_BASE_MS: Final = 1_000
BACKOFF_CAP_MS: Final = 15 * 60_000

_NAME = re.compile(r'^[a-z0-9][a-z0-9_-]{0,31}$')


class ResultWebhook(BaseModel):
    """One destination of ``DIALER_RESULT_WEBHOOKS``."""

    model_config = ConfigDict(extra='forbid', frozen=True)

    url: str = Field(pattern=r'^https?://[^\s#]+$')
    #: One secret, or several while rotating (each delivery is signed with all of them).
    secret: list[SecretStr] = Field(min_length=1)
    #: Bounded label for metrics and ``dialer outbox status``; default: a digest of the URL (URLs
    #: may hold tokens, so they are never logged or used as labels).
    name: str | None = None

    @field_validator('secret', mode='before')
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | SecretStr) else value

    @field_validator('secret')
    @classmethod
    def _long_enough(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(len(s.get_secret_value()) < 16 for s in value):
            raise ValueError('a result webhook secret needs 16 characters or more')
        return value

    @field_validator('name')
    @classmethod
    def _bounded_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError('name: 1-32 of a-z 0-9 _ - (it becomes a Redis key part and a metric label)')
        return value

    @property
    def destination_id(self) -> str:
        return self.name or 'd' + hashlib.sha256(self.url.encode()).hexdigest()[:10]


@dataclass(frozen=True, slots=True)
class Outbox:
    """The configured destinations and cap, as the scripts' outbox tail."""

    destinations: tuple[ResultWebhook, ...] = ()
    max_events: int = 500_000

    @classmethod
    def from_settings(cls, settings: Any) -> Outbox:
        return cls(tuple(settings.result_webhooks), settings.outbox_max_events)

    @property
    def enabled(self) -> bool:
        return bool(self.destinations)

    @property
    def destination_ids(self) -> list[str]:
        return [d.destination_id for d in self.destinations]

    def keys(self) -> list[str]:
        """The tail a script appends to its KEYS (see the module docstring)."""
        keys = [k.OUTBOX_EVENTS, k.OUTBOX_LOG, k.OUTBOX_STATE]
        for dest in self.destination_ids:
            keys += k.outbox_destination_keys(dest)
        return keys

    def args(self) -> list[object]:
        """The tail a script appends to its ARGV."""
        ids = self.destination_ids
        return ['1' if ids else '0', self.max_events, len(ids), *ids]


#: The closed outbox: scripts run with it append nothing.
NO_OUTBOX: Final = Outbox()


async def append_event(
    scripts: Scripts, outbox: Outbox, event_type: str, ordering_key: str, data: Mapping[str, Any]
) -> str | None:
    """Append one event from Python (its own atomic script); the event id, or None when closed.

    ``ordering_key`` orders it: ``<campaign>:<number>`` for a contact's events (see :func:`contact_key`).
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f'unknown event type {event_type!r}')
    return await scripts.outbox_append(outbox, event_type, ordering_key, data)


def contact_key(campaign: str, number: str) -> str:
    """The ordering key of a contact's events (the same one ``finish.lua`` uses)."""
    return f'{campaign}:{number}'


def iso_ms(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec='milliseconds').replace('+00:00', 'Z')


def event_body(raw: str) -> tuple[str, str, bytes]:
    """(event id, type, the JSON body POSTed) of a stored event: the same bytes on every retry."""
    event = json.loads(raw)
    body = {
        'id': event['id'],
        'type': event['type'],
        'created_at': iso_ms(event['at']),
        'data': event.get('data') or {},
    }
    return event['id'], event['type'], json.dumps(body, separators=(',', ':'), sort_keys=True).encode()


def sign(body: bytes, timestamp: str, secret: str) -> str:
    """Hex HMAC-SHA256 of ``body + timestamp``."""
    return hmac.new(secret.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest()


def signed_headers(
    event_id: str, event_type: str, body: bytes, secrets: Sequence[SecretStr], now: datetime
) -> dict[str, str]:
    timestamp = now.astimezone(UTC).isoformat(timespec='milliseconds').replace('+00:00', 'Z')
    return {
        'Content-Type': 'application/json',
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: ','.join(sign(body, timestamp, s.get_secret_value()) for s in secrets),
        EVENT_ID_HEADER: event_id,
        EVENT_TYPE_HEADER: event_type,
    }


def verify(body: bytes, timestamp: str, signatures: str, secret: str, *, now: datetime, max_age: float = 300) -> bool:
    """What a receiver does: a fresh timestamp and any signature matching ``secret`` (constant time)."""
    try:
        sent = datetime.fromisoformat(timestamp)
    except ValueError:
        return False
    if sent.tzinfo is None or abs((now - sent).total_seconds()) > max_age:
        return False
    expected = sign(body, timestamp, secret).encode()
    matched = False
    for candidate in signatures.split(','):
        matched |= hmac.compare_digest(candidate.strip().lower().encode(), expected)
    return matched


def backoff_ms(failures: int, jitter: float, cap_ms: int = BACKOFF_CAP_MS) -> int:
    """Delay before the next try after ``failures`` failed ones; ``jitter`` in [0, 1)."""
    delay = min(cap_ms, BACKOFF_BASE_MS * 2 ** min(max(failures - 1, 0), 30))
    return int(delay * (1 + 0.2 * jitter))


async def adopt_destinations(redis: Redis, destinations: Sequence[str]) -> None:
    """Register the destinations this process delivers to and keep their keys (a TTL set while one was
    out of the settings is taken off again)."""
    if not destinations:
        return
    async with redis.pipeline(transaction=False) as pipe:
        pipe.sadd(k.OUTBOX_DESTINATIONS, *destinations)
        for dest in destinations:
            for key in k.outbox_destination_keys(dest):
                pipe.persist(key)
        await pipe.execute()


async def expire_removed_destinations(redis: Redis, destinations: Sequence[str], retention_ms: int) -> list[str]:
    """Give the keys of every served destination that is no longer configured the retention period as TTL
    (once: a later call does not push it back), and forget the ids whose keys are gone. Returns the
    destinations whose keys were given their TTL by this call."""
    removed = sorted(set(await redis.smembers(k.OUTBOX_DESTINATIONS)) - set(destinations))
    expiring = []
    for dest in removed:
        keys = k.outbox_destination_keys(dest)
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.pexpire(key, retention_ms, nx=True)
            pipe.exists(*keys)
            *newly, left = await pipe.execute()
        if not left:
            await redis.srem(k.OUTBOX_DESTINATIONS, dest)
        elif any(newly):
            expiring.append(dest)
    return expiring
