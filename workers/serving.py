"""Serving ``/metrics`` from a process (workers, webhook receiver, exporter)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.registry import REGISTRY


def start_metrics_server(host: str, port: int, registry: CollectorRegistry = REGISTRY) -> None:
    """Serve metrics in a daemon thread; each process has its own port (one process per pod)."""
    start_http_server(port, addr=host, registry=registry)
