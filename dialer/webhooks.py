"""Checking that a webhook delivery comes from Ultravox (pure functions; the receiver lives in workers/).

Ultravox signs ``raw_body + timestamp`` with HMAC-SHA256 under each of the webhook's secrets and sends
``X-Ultravox-Webhook-Timestamp`` (ISO-8601) and ``X-Ultravox-Webhook-Signature`` (comma-separated hex
digests, one per secret, so that secrets can be rotated). A delivery is accepted when its timestamp
is fresh and any signature matches any of our secrets.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydantic import SecretStr


TIMESTAMP_HEADER = 'X-Ultravox-Webhook-Timestamp'
SIGNATURE_HEADER = 'X-Ultravox-Webhook-Signature'


class WebhookRejected(Exception):  # noqa: N818 - reads as the verdict it is
    """A delivery that must not be trusted. ``reason`` is a short, bounded code (a metric label)."""

    def __init__(self, reason: str, detail: str = '') -> None:
        super().__init__(f'{reason}: {detail}' if detail else reason)
        self.reason = reason
        self.detail = detail


def sign_webhook(body: bytes, timestamp: str, secret: str) -> str:
    """The hex signature Ultravox sends for ``body`` at ``timestamp`` under ``secret``."""
    return hmac.new(secret.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def verify_webhook(
    body: bytes,
    timestamp: str | None,
    signatures: str | None,
    secrets: Sequence[SecretStr],
    *,
    now: datetime,
    max_age: float,
) -> None:
    """Return if the delivery is authentic and fresh, raise ``WebhookRejected`` otherwise."""
    if not timestamp or not signatures:
        raise WebhookRejected('missing_headers', f'{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required')
    try:
        sent = _aware(datetime.fromisoformat(timestamp.strip()))
    except ValueError:
        raise WebhookRejected('bad_timestamp', 'the timestamp is not ISO-8601') from None
    age = (_aware(now) - sent).total_seconds()
    # Both directions are bounded: a far-future timestamp would let a captured delivery be replayed later.
    if age > max_age:
        raise WebhookRejected('stale', f'signed {age:.0f}s ago, more than {max_age:.0f}s')
    if age < -max_age:
        raise WebhookRejected('future', f'signed {-age:.0f}s in the future, more than {max_age:.0f}s')
    # An empty secret would let anyone sign: it never counts.
    keys = [s.get_secret_value() for s in secrets if s.get_secret_value()]
    if not keys:
        raise WebhookRejected('no_secret', 'no webhook secret is configured')
    given = [s.strip().lower() for s in signatures.split(',') if s.strip()]
    expected = [sign_webhook(body, timestamp, key) for key in keys]
    # Every pair is compared (no early exit) so timing reveals nothing about which secret matched.
    matched = False
    for candidate in given:
        for digest in expected:
            matched |= hmac.compare_digest(candidate.encode(), digest.encode())
    if not matched:
        raise WebhookRejected('bad_signature', 'no signature matches a configured secret')
