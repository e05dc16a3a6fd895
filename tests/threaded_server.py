"""An ASGI app served by uvicorn in a thread on a free 127.0.0.1 port, for tests that need a peer."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Self

import uvicorn

from simulator.testing import free_port


if TYPE_CHECKING:
    from starlette.applications import Starlette


class ThreadedServer:
    """``with ThreadedServer(app) as server:`` serves ``app`` on ``server.port`` until the block ends."""

    def __init__(self, app: Starlette) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=self.port, log_level='warning'))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
