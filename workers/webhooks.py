"""``dialer webhooks``: the one HTTP app for everything that calls *us*.

Each inbound route lives in its own module (Ultravox's call webhooks, the agent tool, the SIP fallback
handler, provider status callbacks and provider inbound calls); this module only
assembles them and serves the app with limits that keep a slow or idle client from taking the
receiver offline: a deadline for each request's headers, one for its body, and a connection cap.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from workers.provider_inbound import provider_inbound_route
from workers.provider_webhooks import provider_routes
from workers.serving import freeze_startup_objects
from workers.sip_fallback import sip_fallback_route
from workers.tool_route import tool_route
from workers.ultravox_webhook import receive_ultravox_webhook


if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncIterator

    from starlette.requests import Request

    from dialer.settings import Settings
    from workers.runtime import Runtime


def build_webhook_app(rt: Runtime) -> Starlette:
    async def ultravox(request: Request) -> Response:
        return await receive_ultravox_webhook(rt, request)

    async def health(_: Request) -> Response:
        return Response('ok')

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await rt.close()

    return Starlette(
        routes=[
            Route('/webhooks/ultravox', ultravox, methods=['POST']),
            tool_route(rt),
            sip_fallback_route(rt),
            provider_inbound_route(rt),
            Route('/health', health),
            *provider_routes(rt),
        ],
        lifespan=lifespan,
    )


class _HeaderDeadline:
    """A deadline for each request's headers, for either of uvicorn's HTTP/1.1 protocols.

    uvicorn's keep-alive timer is cancelled by any byte received, so a client that sends a header a
    byte at a time (or connects and says nothing) would hold a connection forever; here each request
    must have its headers in within ``header_timeout`` of the connection opening (or of the previous
    response), or the connection is closed.
    """

    header_timeout = 10.0
    _deadline: asyncio.TimerHandle | None = None
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class HeaderDeadlineProtocol(_HeaderDeadline, H11Protocol):
    """uvicorn's h11 protocol (pure Python) with the header deadline; used where httptools is missing."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a new request's headers are complete
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()


def _httptools_protocol() -> type[asyncio.Protocol] | None:
    """uvicorn's httptools protocol (the C parser of Node's llhttp) with the header deadline, if installed.

    It parses a request for a fraction of h11's CPU; the receiver's cost per delivery is what a fleet
    with webhooks pays twice per call (bench/RESULTS.md, issue 16).
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415  optional C extension
    except ImportError:
        return None

    class HttpToolsHeaderDeadlineProtocol(_HeaderDeadline, HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_headers_complete(self) -> None:
            self._disarm()  # this request's headers are in; the body has its own deadline (inbound.py)
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

    return HttpToolsHeaderDeadlineProtocol


def serve_webhooks(app: Starlette, settings: Settings, host: str, port: int) -> None:
    base = _httptools_protocol() or HeaderDeadlineProtocol
    protocol = type('Protocol', (base,), {'header_timeout': settings.webhook_header_timeout})
    freeze_startup_objects()
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=protocol,
        limit_concurrency=settings.webhook_max_connections,
        timeout_keep_alive=5,
        log_level=settings.log_level,
        access_log=False,
    )
