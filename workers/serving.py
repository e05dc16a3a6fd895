"""Each process's own HTTP endpoint: ``/metrics`` for Prometheus and ``/healthz`` for liveness probes.

It is bound once per process, before anything else starts, and lives as long as the process: a worker
that restarts its run loop after a Redis outage keeps the same server (binding again would fail with
"address already in use" and blame Redis). A port that is already taken at start is a clear error
naming the setting, not a retry loop. Also here: what each long-running process does once it has
started (:func:`freeze_startup_objects`).
"""

from __future__ import annotations

import errno
import gc
import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import REGISTRY

from dialer import metrics


if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from prometheus_client import CollectorRegistry


class PortInUseError(OSError):
    """The process's HTTP port is taken (another process on this host, or a second worker)."""


@dataclass
class Health:
    """What ``/healthz`` reports: is the process's main loop still turning, and does Redis answer?

    Liveness means progress: a loop that has not completed a turn for ``stall_after`` seconds is
    stuck and the probe fails (503). Redis being down is reported but is not a failure in itself:
    the worker is busy reconnecting, and restarting it would not bring Redis back.
    """

    stall_after: float = 60.0
    redis_up: bool = True
    last_loop: float = field(default_factory=time.monotonic)
    redis_down_since: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def loop_turned(self, *, redis_up: bool) -> None:
        now = time.monotonic()
        with self._lock:
            self.last_loop = now
            if redis_up:
                self.redis_down_since = None
            elif self.redis_down_since is None:
                self.redis_down_since = now
            self.redis_up = redis_up
        metrics.WORKER_REDIS_UP.set(1 if redis_up else 0)

    def report(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            age = now - self.last_loop
            down = None if self.redis_down_since is None else now - self.redis_down_since
            redis_up = self.redis_up
        healthy = age <= self.stall_after
        body: dict[str, Any] = {
            'status': 'ok' if healthy and redis_up else ('degraded' if healthy else 'stalled'),
            'redis': redis_up,
            'last_loop_age': round(age, 3),
        }
        if down is not None:
            body['redis_down_for'] = round(down, 3)
        return healthy, body


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  the standard library's name
        """Probes and scrapes every few seconds are not news."""


def _app(registry: CollectorRegistry, health: Health | None) -> Callable[..., Iterable[bytes]]:
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get('PATH_INFO') == '/healthz' and health is not None:
            healthy, body = health.report()
            status = '200 OK' if healthy else '503 Service Unavailable'
            start_response(status, [('Content-Type', 'application/json'), ('Cache-Control', 'no-store')])
            return [json.dumps(body).encode()]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    return app


def start_metrics_server(
    host: str,
    port: int,
    registry: CollectorRegistry = REGISTRY,
    *,
    health: Health | None = None,
    setting: str = 'DIALER_METRICS_PORT',
) -> ThreadingWSGIServer:
    """Serve ``/metrics`` (and ``/healthz`` when given a :class:`Health`) in a daemon thread."""
    try:
        server = make_server(host, port, _app(registry, health), ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                exc.errno,
                f'{setting}={port}: {host}:{port} is already in use (another process on this host?); '
                f'give each process its own port, or {setting}=0 to disable it',
            ) from None
        raise
    thread = threading.Thread(target=server.serve_forever, name=f'http-{port}', daemon=True)
    thread.start()
    return server


def freeze_startup_objects() -> None:
    """Keep what the process has built so far (modules, classes, settings, pools) out of every later
    garbage collection. Without it each full collection walks those ~80,000 objects again, up to
    0.2 ms of a worker's CPU per call (bench/cost_bench.py); they live as long as the process does
    anyway. Once per process: a restarted run loop's objects are not frozen."""
    gc.collect()
    gc.freeze()
