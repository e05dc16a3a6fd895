"""The outbound HTTP transport (httpx over aiohttp), against real local servers.

Callers decide from the exception class whether a request may have reached the server, so every way
a request can fail is provoked for real here and checked against that promise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import TYPE_CHECKING

import aiohttp
import httpx
import pytest
from aiohttp import client_exceptions
from pydantic import SecretStr

from dialer.http import AiohttpTransport, async_client, error_class
from dialer.ultravox import CreateCallRequest, TransientError, UltravoxClient


if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


@contextlib.asynccontextmanager
async def tcp_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A raw TCP server on 127.0.0.1; yields its base URL."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, '127.0.0.1', 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f'http://127.0.0.1:{port}'
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b'\r\n\r\n')
    length = 0
    for line in head.split(b'\r\n'):
        if line.lower().startswith(b'content-length:'):
            length = int(line.split(b':', 1)[1])
    return head, await reader.readexactly(length) if length else b''


def respond(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f'HTTP/1.1 {status} Whatever', f'Content-Length: {len(body)}', 'Content-Type: application/json']
    lines += [f'{name}: {value}' for name, value in (headers or {}).items()]
    return ('\r\n'.join(lines) + '\r\n\r\n').encode() + body


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    return f'http://127.0.0.1:{port}'  # nothing listens there any more


async def test_requests_and_responses_pass_through_unchanged() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                return
            writer.write(respond(429, b'{"ok": true}', {'Retry-After': '7', 'X-Multi': 'a'}))
            await writer.drain()

    async with tcp_server(echo) as url, async_client(base_url=url, headers={'X-API-Key': 'k'}) as client:
        response = await client.post('/api/calls', params=(('a', '1'), ('a', '2')), json={'x': 1})
        again = await client.get('/api/calls/1')
    assert response.status_code == 429
    assert response.headers['Retry-After'] == '7'
    assert response.json() == {'ok': True}
    assert again.status_code == 429
    head, body = seen[0]
    assert head.startswith(b'POST /api/calls?a=1&a=2 HTTP/1.1\r\n')
    assert b'\r\nx-api-key: k\r\n' in head.lower()
    assert b'content-type: application/json' in head.lower()
    assert json.loads(body) == {'x': 1}
    assert seen[1][0].startswith(b'GET /api/calls/1 HTTP/1.1\r\n')
    assert len(seen) == 2  # one connection, kept alive, and nothing sent twice


async def test_a_cookie_a_server_sets_is_never_sent_back() -> None:
    heads: list[bytes] = []

    async def sets_cookies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            heads.append(head)
            writer.write(respond(200, b'{}', {'Set-Cookie': 'session=abc; Path=/'}))
            await writer.drain()

    async with tcp_server(sets_cookies) as url, async_client(base_url=url) as client:
        for _ in range(2):
            assert (await client.get('/api/calls/1')).status_code == 200
        with pytest.raises(TypeError, match='keep no cookies'):
            client.cookies = {'session': 'abc'}
    assert len(heads) == 2
    assert not any(b'cookie:' in head.lower() for head in heads)
    assert not client.cookies


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with async_client(base_url=refused_url()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post('/api/calls', json={})


async def test_a_server_that_never_answers_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.Event().wait()

    async with tcp_server(silent) as url, async_client(base_url=url, read_timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post('/api/calls', json={})


@pytest.mark.parametrize(
    'reply',
    [
        b'',  # closes right after reading the request
        b'HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{"callId"',  # closes in the middle of the body
        b'HTTP/1.1 201 Cre',  # closes in the middle of the status line
        b'this is not HTTP\r\n\r\n',
    ],
    ids=['no-response', 'half-body', 'half-status-line', 'garbage'],
)
async def test_a_server_that_closes_mid_response_is_a_protocol_or_read_error(reply: bytes) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()

    async with tcp_server(broken) as url, async_client(base_url=url) as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)) as caught:
            await client.post('/api/calls', json={})
    assert not isinstance(caught.value, NOT_SENT)


async def test_a_full_pool_is_a_pool_timeout_and_sends_nothing() -> None:
    arrived: list[bytes] = []
    first_in = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived.append((await read_request(reader))[0])
        first_in.set()
        await asyncio.Event().wait()

    async with tcp_server(hold) as url, async_client(base_url=url, max_connections=1, connect_timeout=0.2) as client:
        holder = asyncio.create_task(client.post('/first', json={}))
        await first_in.wait()
        with pytest.raises(httpx.PoolTimeout):
            await client.post('/second', json={})
        holder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holder
    assert len(arrived) == 1


async def test_a_freed_connection_serves_the_next_waiting_request() -> None:
    async def slow_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(respond(200, b'{}'))
            await writer.drain()

    async with tcp_server(slow_ok) as url, async_client(base_url=url, max_connections=1) as client:
        responses = await asyncio.gather(*(client.get(f'/{i}') for i in range(5)))
    assert [r.status_code for r in responses] == [200] * 5


def _aiohttp_errors() -> list[type[BaseException]]:
    found = []
    for name in client_exceptions.__all__:
        cls = getattr(client_exceptions, name)
        if isinstance(cls, type) and issubclass(cls, aiohttp.ClientError):
            found.append(cls)
    return found


#: The aiohttp errors that can only happen before a request was written.
_BEFORE_SENDING = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
    aiohttp.InvalidURL,
    aiohttp.NonHttpUrlClientError,
)


@pytest.mark.parametrize('aiohttp_error', _aiohttp_errors(), ids=lambda cls: cls.__name__)
def test_every_aiohttp_error_becomes_an_httpx_error_that_says_whether_it_was_sent(
    aiohttp_error: type[aiohttp.ClientError],
) -> None:
    mapped = error_class(aiohttp_error.__new__(aiohttp_error))  # only the class matters: no constructor runs
    assert issubclass(mapped, httpx.TransportError)
    assert issubclass(mapped, NOT_SENT) == issubclass(aiohttp_error, _BEFORE_SENDING)


async def test_ultravox_creates_say_whether_the_call_may_exist_over_the_real_transport() -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    request = CreateCallRequest(path='/api/calls', params={}, body={'systemPrompt': 'hi'})
    async with UltravoxClient(refused_url(), SecretStr('key')) as client:
        with pytest.raises(TransientError) as refused:
            await client.create_call(request)
    assert refused.value.maybe_created is False
    async with tcp_server(broken) as url, UltravoxClient(url, SecretStr('key')) as client:
        with pytest.raises(TransientError) as dropped:
            await client.create_call(request)
    assert dropped.value.maybe_created is True


async def test_the_transport_follows_a_new_event_loop() -> None:
    transport = AiohttpTransport()

    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(respond(200, b'{}'))
        await writer.drain()

    async with tcp_server(ok) as url:
        async with httpx.AsyncClient(transport=transport, base_url=url) as client:
            assert (await client.get('/')).status_code == 200
        # closed: a later use (say, on a restarted run loop) opens a fresh pool
        async with httpx.AsyncClient(transport=transport, base_url=url) as client:
            assert (await client.get('/')).status_code == 200
