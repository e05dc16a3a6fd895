"""``dialer webhooks``: receives Ultravox ``call.ended`` / ``call.billed`` webhooks.

Optional: polling alone finishes every call. A webhook only records the end sooner (freeing the
trunk slot at once). Deliveries are checked (HMAC signature over body + timestamp, timestamp fresh,
body size bounded) and idempotent: the same event twice, or an event racing a poll, records once.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dialer import constants as k
from dialer import metrics
from dialer.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookRejected, verify_webhook
from workers.calls import record_billing, record_end, tracking_member


if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request

    from workers.runtime import Runtime


log = structlog.get_logger(__name__)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get('content-length')
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _refused(reason: str) -> Response:
    metrics.WEBHOOKS_RECEIVED.labels(event='unknown', verdict=reason).inc()
    log.warning('webhook_refused', reason=reason)
    return JSONResponse({'error': reason}, status_code=401)


def build_webhook_app(rt: Runtime) -> Starlette:
    settings = rt.settings

    async def receive(request: Request) -> Response:
        body = await _read_limited(request, settings.webhook_max_body)
        if body is None:
            metrics.WEBHOOKS_RECEIVED.labels(event='unknown', verdict='too_large').inc()
            return JSONResponse({'error': 'body too large'}, status_code=413)
        try:
            verify_webhook(
                body,
                request.headers.get(TIMESTAMP_HEADER),
                request.headers.get(SIGNATURE_HEADER),
                settings.webhook_secrets,
                now=datetime.now(UTC),
                max_age=settings.webhook_max_age,
            )
        except WebhookRejected as exc:
            return _refused(exc.reason)
        # the same signed delivery seen again within its freshness window is a replay
        signature = request.headers.get(SIGNATURE_HEADER, '')
        fresh = await rt.redis.set(k.webhook_seen(signature), '1', nx=True, px=int(settings.webhook_max_age * 2000))
        if not fresh:
            return _refused('replayed')
        try:
            payload: dict[str, Any] = json.loads(body)
            event, call = str(payload['event']), payload['call']
            attempt_id = str(call['metadata']['attempt_id'])
            call_id = str(call['callId'])
        except (ValueError, KeyError, TypeError):
            metrics.WEBHOOKS_RECEIVED.labels(event='unknown', verdict='malformed').inc()
            return JSONResponse({'error': 'not a dialer call event'}, status_code=400)
        member = tracking_member(attempt_id, call_id)
        news = False
        if event == 'call.ended':
            news = await record_end(rt, attempt_id, call, member)
        elif event == 'call.billed':
            await record_end(rt, attempt_id, call, member)
            news = await record_billing(rt, attempt_id, call, f'{member}|b')
        metrics.WEBHOOKS_RECEIVED.labels(event=event, verdict='recorded' if news else 'duplicate').inc()
        return Response(status_code=204)

    async def health(_: Request) -> Response:
        return Response('ok')

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await rt.close()

    return Starlette(
        routes=[Route('/webhooks/ultravox', receive, methods=['POST']), Route('/health', health)],
        lifespan=lifespan,
    )
