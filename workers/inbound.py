"""What every inbound route shares: a bounded, timed body read, the signature check of a delivery
signed like Ultravox's webhooks, the refusal every route answers with, and the shape of our ids."""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dialer.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookRejected, verify_webhook


if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydantic import SecretStr
    from starlette.requests import Request

    from dialer.settings import Settings


#: ``campaign:+E164:attempt``: names are ``[A-Za-z0-9_.-]``, numbers E.164, attempts small integers.
ATTEMPT_ID = re.compile(r'[A-Za-z0-9_.-]{1,64}:\+[1-9][0-9]{1,14}:[1-9][0-9]{0,3}')
CALL_ID = re.compile(r'[A-Za-z0-9_-]{1,64}')


class BadDelivery(Exception):  # noqa: N818 - the verdict it is
    """A request we answer with ``status`` and a short, bounded reason (a metric label)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The whole body, refused (413) past ``limit`` bytes and (408) past ``seconds``."""
    declared = request.headers.get('content-length')
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BadDelivery(413, 'too_large')
    body = bytearray()
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BadDelivery(413, 'too_large')
    except TimeoutError:
        raise BadDelivery(408, 'too_slow') from None
    return bytes(body)


async def signed_body(request: Request, settings: Settings, secrets: Sequence[SecretStr]) -> tuple[bytes, str]:
    """The body of a fresh delivery signed with one of ``secrets``, and the delivery's digest (body +
    timestamp: what a replay guard keys on, however the signature header is spelled)."""
    body = await read_body(request, settings.webhook_max_body, settings.webhook_body_timeout)
    timestamp = request.headers.get(TIMESTAMP_HEADER)
    try:
        verify_webhook(
            body,
            timestamp,
            request.headers.get(SIGNATURE_HEADER),
            secrets,
            now=datetime.now(UTC),
            max_age=settings.webhook_max_age,
        )
    except WebhookRejected as exc:
        raise BadDelivery(401, exc.reason) from None
    return body, hashlib.sha256(body + b'\0' + (timestamp or '').encode()).hexdigest()
