"""Shared pieces of the fleet benchmarks: a private Redis, input files, process figures, machine facts.

Not a benchmark itself; ``dispatch_bench``, ``tracking_bench`` and ``latency_bench`` import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import redis


if TYPE_CHECKING:
    from collections.abc import Iterator

    from workers.fleet import LocalFleet

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

AGENT_ID = '6f9a1c3e-8a39-4bb6-9a55-0f3d5d8e2a10'
_TICKS = os.sysconf('SC_CLK_TCK')
_PAGE = os.sysconf('SC_PAGE_SIZE')

#: Limits that never bind: the benchmarks measure the dialer's own cost, not a configured limit.
UNLIMITED_ENV = {
    'DIALER_ACCOUNT_CALLS_PER_SECOND': '1000000',
    'DIALER_ACCOUNT_CALLS_PER_MINUTE': '100000000',
    'DIALER_ACCOUNT_MAX_CONCURRENT': '1000000',
    'DIALER_RATE_SAFETY_MARGIN': '0',
    'DIALER_METRICS_PORT': '0',
    'DIALER_LOG_LEVEL': 'warning',
}


#: The secret the simulator signs its webhooks with, and ``dialer webhooks`` checks them against.
WEBHOOK_SECRET = 'bench-webhook-secret'


#: Simulator outcome rates: every call is answered (the other rates default to non-zero).
ALL_ANSWERED = {
    'answer_rate': 1.0,
    'no_answer_rate': 0.0,
    'busy_rate': 0.0,
    'invalid_number_rate': 0.0,
    'rejected_rate': 0.0,
    'unavailable_rate': 0.0,
    'failure_rate': 0.0,
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    """``url`` flushed before and after; None: a private ``redis-server`` (clean INFO commandstats)."""
    if url is not None:
        client = redis.Redis.from_url(url)
        client.flushdb()
        try:
            yield url
        finally:
            client.flushdb()
            client.close()
        return
    binary = shutil.which('redis-server') or shutil.which('valkey-server')
    if binary is None:
        raise SystemExit('no redis-server on PATH: pass --redis-url redis://127.0.0.1:6379/14')
    port = free_port()
    process = subprocess.Popen(
        [binary, '--port', str(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
        stdout=subprocess.DEVNULL,
    )
    private = f'redis://127.0.0.1:{port}/0'
    try:
        client = redis.Redis.from_url(private)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                break
            time.sleep(0.05)
        client.close()
        yield private
    finally:
        process.terminate()
        process.wait(timeout=10)


def write_trunks(path: Path, name: str, *, concurrent: int, cps: float, burst: int = 1) -> Path:
    path.write_text(
        f'[trunks.{name}]\nhost = "sip.bench.example:5060"\ntransport = "tcp"\nfrom = "+14155550100"\n'
        f'username = "bench"\npassword = "bench-s3cret"\nmax_concurrent = {concurrent}\n'
        f'calls_per_second = {cps}\nburst = {burst}\n',
        encoding='utf-8',
    )
    return path


def write_campaign(path: Path, name: str, trunk: str, *, max_duration: int = 3600) -> Path:
    path.write_text(
        f'name = "{name}"\ntrunk = "{trunk}"\nagent_id = "{AGENT_ID}"\n'
        f'max_duration = {max_duration}\njoin_timeout = 30\n'
        '[hours]\nstart = "00:00"\nend = "24:00"\nlegal_bound = false\n'
        '[retry]\nretry_on = []\nmax_attempts = 1\nmax_per_24h = 10\n',
        encoding='utf-8',
    )
    return path


def write_contacts(path: Path, count: int, *, first: int = 0) -> Path:
    lines = ['phone,name,contact_id,timezone']
    lines += [f'+1212{2000000 + i:07d},Person {i},c{i},America/New_York' for i in range(first, first + count)]
    path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return path


def load_campaign(fleet: LocalFleet, work: Path, name: str, contacts: int, *, first: int = 0) -> None:
    """``dialer campaign load`` of ``contacts`` new contacts (numbers from ``first`` on) into ``name``."""
    done = fleet.cli(
        'campaign', 'load', str(write_contacts(work / f'{name}-{first}.csv', contacts, first=first)),
        '--campaign-file', str(write_campaign(work / f'{name}.toml', name, 'bench')),
        '--rejects', str(work / f'{name}-rejects.csv'),
        check=False,
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f'campaign load failed: {done.stderr.strip()}')


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc)."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_mb(pid: int) -> float:
    pages = int(Path(f'/proc/{pid}/statm').read_text().split()[1])
    return pages * _PAGE / 1e6


def command_calls(client: redis.Redis) -> dict[str, int]:
    """INFO commandstats: calls per command (commands run inside Lua scripts are counted too)."""
    stats = client.info('commandstats')
    return {name.removeprefix('cmdstat_'): int(value['calls']) for name, value in stats.items()}


def counts_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}


def round_trips(path: Path) -> int:
    """Requests sent to Redis by a process started through ``counting.py`` (0 before its first report)."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int(json.loads(path.read_text())['round_trips'])
    return 0


def machine() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {
        'date': time.strftime('%Y-%m-%d %H:%M %Z'),
        'nproc': os.cpu_count(),
        'python': platform.python_version(),
        'load': f'{load1:.2f} / {load5:.2f} (1 / 5 min)',
    }


def print_machine() -> None:
    facts = machine()
    print(f'machine: {facts["nproc"]} CPUs, Python {facts["python"]}, load {facts["load"]}, {facts["date"]}')


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float('nan')
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


#: The events the README tells a deployment to register (``call.billed`` is optional: one more delivery
#: per call for final billing within seconds of the end instead of at the next safety poll).
RECOMMENDED_EVENTS = ('call.ended',)


def webhook_config(port: int, events: tuple[str, ...] = RECOMMENDED_EVENTS) -> dict[str, object]:
    """Simulator settings that send signed ``events`` webhooks to a receiver on ``port``."""
    return {
        'webhook_url': f'http://127.0.0.1:{port}/webhooks/ultravox',
        'webhook_secret': [WEBHOOK_SECRET],
        'webhook_events': list(events),
    }


def start_webhooks(fleet: LocalFleet, port: int, log_dir: Path) -> subprocess.Popen[bytes]:
    """``dialer webhooks`` on ``port``, returned once it answers its health check."""
    from workers.fleet import DIALER  # noqa: PLC0415  the repo root is put on sys.path above

    env = {**fleet.env, 'DIALER_WEBHOOK_SECRETS': json.dumps([WEBHOOK_SECRET]), 'DIALER_METRICS_PORT': '0'}
    with (log_dir / 'webhooks.log').open('ab') as log:
        process = subprocess.Popen(
            [*DIALER, 'webhooks', '--host', '127.0.0.1', '--port', str(port)], env=env, stderr=log, stdout=log
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f'http://127.0.0.1:{port}/health', timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f'webhook receiver did not start: {(log_dir / "webhooks.log").read_text()}')
