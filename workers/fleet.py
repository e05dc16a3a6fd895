"""A fleet on one machine: the ``dialer`` CLI and worker processes against one Redis and one
Ultravox endpoint. Used by the demo, the multi-process tests and the benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from dialer import constants as k
from simulator.testing import free_port


if TYPE_CHECKING:
    from pathlib import Path


#: The ``dialer`` command as a child process of this interpreter.
DIALER = (sys.executable, '-m', 'workers')


@dataclass
class LocalFleet:
    redis_url: str
    ultravox_url: str
    trunks_file: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log_dir: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            'DIALER_REDIS_URL': self.redis_url,
            'DIALER_ULTRAVOX_BASE_URL': self.ultravox_url,
            'DIALER_ULTRAVOX_API_KEY': os.environ.get('DIALER_ULTRAVOX_API_KEY', 'local-fleet-key'),
            'DIALER_TRUNKS_FILE': str(self.trunks_file),
            'DIALER_LOG_LEVEL': 'warning',
            **self.env_extra,
        }

    def cli(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603  our own CLI
            [*DIALER, *args], env={**self.env, **env}, check=check, capture_output=True, text=True
        )

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        port = env.pop('DIALER_METRICS_PORT', str(free_port()))
        stderr: Any = subprocess.DEVNULL
        if self.log_dir is not None:
            stderr = (self.log_dir / f'worker-{len(self.workers)}.log').open('ab')
        process = subprocess.Popen(  # noqa: S603
            [*DIALER, 'worker'], env={**self.env, 'DIALER_METRICS_PORT': port, **env}, stderr=stderr
        )
        self.workers.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def start_webhooks(self, port: int, timeout: float = 60, **env: str) -> subprocess.Popen[bytes]:
        """``dialer webhooks`` on ``port`` (its log in ``log_dir``), returned once ``/health`` answers."""
        log: Any = subprocess.DEVNULL
        if self.log_dir is not None:
            log = (self.log_dir / 'webhooks.log').open('ab')
        process = subprocess.Popen(  # noqa: S603  our own CLI
            [*DIALER, 'webhooks', '--port', str(port)],
            env={**self.env, 'DIALER_METRICS_PORT': '0', **env},
            stderr=log,
        )
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            try:
                with urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=2):
                    return process
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        process.kill()
        raise RuntimeError(f'dialer webhooks did not answer on port {port} (exit code {process.poll()})')

    def stop_all(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers:
            self.stop(process)

    def campaign(self, name: str) -> dict[str, str]:
        with redis.Redis.from_url(self.redis_url, decode_responses=True) as client:
            return dict(client.hgetall(k.campaign(name)))

    def _log_tails(self, lines: int = 15) -> str:
        """The end of every worker's log (and whether it is still running), for a failure message."""
        if self.log_dir is None:
            return ''
        tails = []
        for i, process in enumerate(self.workers):
            path = self.log_dir / f'worker-{i}.log'
            text = path.read_text(errors='replace') if path.exists() else ''
            state = 'running' if process.poll() is None else f'exited {process.returncode}'
            tails.append(f'\n--- worker-{i} ({state}) ---\n' + '\n'.join(text.splitlines()[-lines:]))
        return ''.join(tails)

    def wait_until_finished(self, name: str, timeout: float = 300, poll: float = 0.25) -> dict[str, str]:
        """Block until the campaign is completed or cancelled with nothing in flight."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.campaign(name)
            in_flight = int(data.get('n:dialing', 0)) + int(data.get('n:in_call', 0))
            if data.get('state') == 'completed' or (data.get('state') == 'cancelled' and not in_flight):
                return data
            if time.monotonic() > deadline:
                raise TimeoutError(f'campaign {name!r} not finished after {timeout} s: {data}{self._log_tails()}')
            time.sleep(poll)
