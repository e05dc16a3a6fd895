"""A real Prometheus server (Debian's ``prometheus`` package) on loopback, for integration tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from simulator.testing import free_port


if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def prometheus_tool(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``: CI must have it, elsewhere the test is skipped."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get('CI') == 'true':
            pytest.fail(f"{name} is required in CI (install Debian's prometheus package)")
        pytest.skip(f'{name} not installed (apt-get install prometheus)')
    return found


class Prometheus:
    """A Prometheus server scraping ``jobs`` (job name -> loopback ports), queried through its HTTP API."""

    def __init__(self, tmp_path: Path, jobs: dict[str, list[int]], scrape_interval: float = 1.0) -> None:
        self.port = free_port()
        self.log = tmp_path / 'prometheus.log'
        config = {
            'global': {
                # Prometheus durations take whole units only
                'scrape_interval': f'{round(scrape_interval * 1000)}ms',
                'scrape_timeout': f'{round(scrape_interval * 900)}ms',
                'evaluation_interval': f'{round(scrape_interval * 1000)}ms',
            },
            'scrape_configs': [
                {'job_name': job, 'static_configs': [{'targets': [f'127.0.0.1:{port}' for port in ports]}]}
                for job, ports in jobs.items()
            ],
        }
        (tmp_path / 'prometheus.yml').write_text(yaml.safe_dump(config), encoding='utf-8')
        with self.log.open('w', encoding='utf-8') as log:
            self.process = subprocess.Popen(
                [
                    prometheus_tool('prometheus'),
                    f'--config.file={tmp_path / "prometheus.yml"}',
                    f'--storage.tsdb.path={tmp_path / "prometheus-data"}',
                    f'--web.listen-address=127.0.0.1:{self.port}',
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self, timeout: float = 60) -> None:
        # Prometheus listens before its storage is open and answers 503 until then.
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f'http://127.0.0.1:{self.port}/-/ready', timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, self.log.read_text(encoding='utf-8')
            assert time.monotonic() < deadline, self.log.read_text(encoding='utf-8')[-2000:]
            time.sleep(0.1)

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f'http://127.0.0.1:{self.port}/api/v1/query', params={'query': expr}, timeout=10)
        assert response.status_code == 200, (expr, response.status_code, response.text)
        reply = response.json()
        assert reply['status'] == 'success', (expr, reply)
        return list(reply['data']['result'])

    def scalar(self, expr: str) -> float:
        (sample,) = self.query(expr)
        return float(sample['value'][1])

    def wait_for(
        self, expr: str, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
    ) -> list[dict[str, Any]]:
        """Query ``expr`` until ``predicate(result)`` holds (a deadline only guards against a hang)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            assert self.process.poll() is None, self.log.read_text(encoding='utf-8')
            assert time.monotonic() < deadline, f'{expr}: {result}\n{self.log.read_text(encoding="utf-8")[-2000:]}'
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
