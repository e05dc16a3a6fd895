"""A small receiving server for result webhooks: checks signatures, records every event, and can be
taken down, brought back on the same port, or made to hold requests and then fail them."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dialer.outbox import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from simulator.testing import free_port


class ResultReceiver:
    def __init__(self, secret: str, port: int | None = None) -> None:
        self.secret = secret
        self.port = port or free_port()
        self.events: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.held = 0
        #: 'ok' records and answers 204; 'hold' keeps each request until ``release`` then answers 503.
        self.mode = 'ok'
        self._gate = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.port}/hooks/results'

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get('Content-Length', '0')))
                if not verify(
                    body,
                    self.headers.get(TIMESTAMP_HEADER, ''),
                    self.headers.get(SIGNATURE_HEADER, ''),
                    receiver.secret,
                    now=datetime.now(UTC),
                ):
                    with receiver._lock:
                        receiver.bad_signatures += 1
                    self._answer(401)
                    return
                if receiver.mode == 'hold':
                    with receiver._lock:
                        receiver.held += 1
                    receiver._gate.wait(30)
                    self._answer(503)
                    return
                event = json.loads(body)
                assert event['id'] == self.headers[EVENT_ID_HEADER]
                with receiver._lock:
                    receiver.events.append(event)
                self._answer(204)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._gate.clear()
        self._server = ThreadingHTTPServer(('127.0.0.1', self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._gate.set()

    def stop(self) -> None:
        self._gate.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)
