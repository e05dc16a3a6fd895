"""Outbound HTTP: ``httpx.AsyncClient`` as the API, aiohttp underneath.

httpx's own transport (httpcore over anyio) costs a worker 1.5-3.7 ms of CPU per request at
concurrency 50: anyio's per-operation checks and httpcore re-checking every pooled connection on each
request (issue 16). aiohttp's pool does the same job for about a tenth of that. httpx stays the client
API (URLs, headers, JSON, ``MockTransport`` in tests); only the transport changes.

The exception classes keep their httpx meaning, because callers decide from them whether a request
may have reached the server (``dialer/ultravox.py``: a create that may have been sent is never sent
again blindly):

| what happened                                          | raised                 | request sent? |
|--------------------------------------------------------|------------------------|---------------|
| no free connection within the pool timeout             | httpx.PoolTimeout      | no            |
| connect refused / DNS / TLS handshake failed           | httpx.ConnectError     | no            |
| connect did not finish within the connect timeout      | httpx.ConnectTimeout   | no            |
| URL that is not http(s)                                | httpx.UnsupportedProtocol | no         |
| no response (or no more body) within the read timeout  | httpx.ReadTimeout      | maybe         |
| the server closed the connection or sent bad HTTP      | httpx.RemoteProtocolError | maybe      |
| the socket failed after connecting (reset, ...)        | httpx.ReadError        | maybe         |

The httpx-aiohttp package (0.2) was measured too, but it maps every ``ClientConnectionError`` (which
includes a server disconnecting mid-response) to ``ConnectTimeout``: a create that reached Ultravox
would be taken as never sent. Hence this small transport of our own.

Not carried over from httpx: HTTP/2, ``max_keepalive_connections`` (aiohttp keeps every idle
connection until ``keepalive_expiry``) and streaming: a response body is read whole before the
response is returned, which suits the small JSON bodies every outbound client here sends and reads.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx


if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping

#: Seconds an idle pooled connection is kept (see ``async_client``).
KEEPALIVE_EXPIRY = 4.0


class _DroppedCookies(httpx.Cookies):
    """A cookie jar that keeps nothing a response sets."""

    def extract_cookies(self, response: httpx.Response) -> None:
        del response


class ApiClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` that keeps no cookies.

    Every server the dialer calls authenticates each request (API key, basic auth, signatures), so a
    cookie some server or proxy sets must not follow later requests; and httpx parses every response
    for cookies through ``urllib`` objects, about a fifth of its own CPU per request.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._dropped = _DroppedCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._dropped

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        del cookies
        raise TypeError("the dialer's HTTP clients keep no cookies")


def async_client(
    *,
    base_url: str = '',
    headers: Mapping[str, str] | None = None,
    connect_timeout: float = 5.0,
    read_timeout: float = 15.0,
    max_connections: int = 100,
    transport: httpx.AsyncBaseTransport | None = None,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """The one way the dialer builds an outbound HTTP client (Ultravox, provider APIs, result webhooks).

    ``read_timeout`` bounds each wait for the server's bytes (aiohttp has no write timeout of its own:
    the bodies sent here fit a socket buffer); waiting for a free pooled connection is bounded by
    ``connect_timeout``. ``transport`` replaces the aiohttp transport (tests pass ``MockTransport``).
    """
    # An idle connection is dropped after 4 s, under the 5 s idle timeout common servers use (uvicorn's
    # default, which the simulator runs): aiohttp hands out the longest-idle connection first, and a
    # create sent on a connection the server is just closing is lost after sending (ambiguous).
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=KEEPALIVE_EXPIRY
    )
    return ApiClient(
        base_url=base_url,
        headers=headers,
        timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout),
        limits=limits,
        transport=transport or AiohttpTransport(limits=limits),
        follow_redirects=False,
        **kwargs,
    )


class _Pool:
    """One aiohttp ``ClientSession`` (its connection pool) behind a gate of ``max_connections``, made on first use.

    The gate is ours so that waiting for a free connection is told apart from connecting: aiohttp
    times both out as one "connect" phase.
    """

    def __init__(
        self, max_connections: int | None, keepalive_expiry: float | None, verify: ssl.SSLContext | bool
    ) -> None:
        self._max_connections = max_connections
        self._keepalive = keepalive_expiry
        self._verify = verify
        self.session: aiohttp.ClientSession | None = None
        self.gate: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def for_this_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self.session is None or self._loop is not loop:
            # A session belongs to the loop it was made on; a new loop (a restarted run loop, a test)
            # gets a new one. The old one's sockets went with its loop.
            ssl_context: ssl.SSLContext | bool = (
                httpx.create_ssl_context(verify=self._verify) if self._verify is not False else False
            )
            connector = aiohttp.TCPConnector(
                limit=self._max_connections or 0,
                limit_per_host=0,
                keepalive_timeout=self._keepalive or 0,
                force_close=self._keepalive == 0,
                ssl=ssl_context,
            )
            # No automatic headers (httpx already sets them) and no cookies (httpx has its own jar).
            self.session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=('User-Agent', 'Accept-Encoding', 'Accept', 'Content-Type'),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._loop = loop
            self.gate = asyncio.Semaphore(self._max_connections) if self._max_connections else None
        return self.session

    async def acquire(self, request: httpx.Request, wait: float | None) -> None:
        gate = self.gate
        if gate is None:
            return
        if not gate.locked():
            await gate.acquire()
            return
        try:
            async with asyncio.timeout(wait):
                await gate.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout('no free connection within the pool timeout', request=request) from None

    def release(self) -> None:
        if self.gate is not None:
            self.gate.release()

    async def aclose(self) -> None:
        if self.session is not None and not self.session.closed:
            await self.session.close()
        self.session = None


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an aiohttp connection pool."""

    def __init__(self, *, limits: httpx.Limits | None = None, verify: ssl.SSLContext | bool = True) -> None:
        limits = limits or httpx.Limits()
        self._pool = _Pool(limits.max_connections, limits.keepalive_expiry, verify)
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    def _timeout(self, connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
        key = (connect, read)
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=connect, sock_read=read)
            self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._pool.for_this_loop()
        timeouts = request.extensions.get('timeout') or {}
        await self._pool.acquire(request, timeouts.get('pool'))
        try:
            try:
                body: bytes | None = request.content or None
            except httpx.RequestNotRead:
                body = await request.aread() or None
            try:
                async with session.request(
                    request.method,
                    str(request.url),
                    headers=request.headers.multi_items(),
                    data=body,
                    allow_redirects=False,
                    timeout=self._timeout(timeouts.get('connect'), timeouts.get('read')),
                ) as response:
                    content = await response.read()
                    status, raw_headers, reason = response.status, response.raw_headers, response.reason
            except aiohttp.ClientError as exc:
                raise _httpx_error(exc, request) from exc
            except TimeoutError as exc:
                raise httpx.ReadTimeout(str(exc) or 'timed out', request=request) from exc
        finally:
            self._pool.release()
        extensions: dict[str, Any] = {'http_version': b'HTTP/1.1'}
        if reason:
            extensions['reason_phrase'] = reason.encode('latin-1', 'replace')
        return httpx.Response(
            status, headers=list(raw_headers), stream=httpx.ByteStream(content), request=request, extensions=extensions
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def _httpx_error(exc: aiohttp.ClientError, request: httpx.Request) -> httpx.TransportError:
    message = f'{type(exc).__name__}: {exc}' if str(exc) else type(exc).__name__
    return error_class(exc)(message, request=request)


def error_class(exc: aiohttp.ClientError) -> type[httpx.TransportError]:
    """The httpx exception class for an aiohttp error; the order matters (aiohttp's classes overlap)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout  # aiohttp raises it only before it had a connection
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError
    # Anything else happened on a connection we had: the request may have been sent.
    return httpx.ReadError
