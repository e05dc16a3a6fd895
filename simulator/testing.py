"""Run the simulator as a subprocess for tests: ``with running_simulator(answer_rate=1.0) as sim: ...``."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from simulator.config import SimulatorConfig


if TYPE_CHECKING:
    from collections.abc import Iterator


PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SimulatorHandle:
    """A running simulator: its base URL and a sync client for the ``/_sim`` endpoints."""

    base_url: str
    process: subprocess.Popen[bytes]
    client: httpx.Client = field(repr=False)

    def records(self) -> list[dict[str, Any]]:
        response = self.client.get('/_sim/records')
        response.raise_for_status()
        records: list[dict[str, Any]] = response.json()
        return records

    def stats(self) -> dict[str, Any]:
        response = self.client.get('/_sim/stats')
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def configure(self, **fields: Any) -> dict[str, Any]:
        response = self.client.post('/_sim/config', json=fields)
        response.raise_for_status()
        config: dict[str, Any] = response.json()
        return config


@contextlib.contextmanager
def running_simulator(startup_timeout: float = 20.0, **config_fields: Any) -> Iterator[SimulatorHandle]:
    """Start ``python -m simulator`` on a free 127.0.0.1 port with these SimulatorConfig fields."""
    config = SimulatorConfig.model_validate(config_fields)  # fail here, not in the child, on a typo
    with tempfile.TemporaryDirectory(prefix='uvsim-') as tmp:
        config_path = Path(tmp) / 'simulator.json'
        config_path.write_text(json.dumps(config.model_dump(mode='json', exclude_unset=True)), encoding='utf-8')
        port = free_port()
        env = {
            **os.environ,
            'PYTHONPATH': os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get('PYTHONPATH')])),
        }
        log_path = Path(tmp) / 'simulator.log'
        with log_path.open('wb') as log:
            process = subprocess.Popen(  # noqa: S603  our own interpreter and module
                [
                    sys.executable,
                    '-m',
                    'simulator',
                    '--host',
                    '127.0.0.1',
                    '--port',
                    str(port),
                    '--config',
                    str(config_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        base_url = f'http://127.0.0.1:{port}'
        client = httpx.Client(base_url=base_url, timeout=10.0)
        try:
            _wait_until_healthy(client, process, startup_timeout, log_path)
            yield SimulatorHandle(base_url=base_url, process=process, client=client)
        finally:
            client.close()
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_healthy(client: httpx.Client, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f'simulator exited with {process.returncode}:\n{log.read_text(errors="replace")}')
        with contextlib.suppress(httpx.HTTPError):
            if client.get('/_sim/health', timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f'simulator did not answer /_sim/health within {timeout}s:\n{log.read_text(errors="replace")}')
