"""Dispatch benchmark: calls placed per second by one worker process, against a bare arq worker.

    python bench/dispatch_bench.py [--contacts 10000] [--jobs 20000] [--redis-url URL] [--poll-initial 0.05]

- baseline: ``--jobs`` no-op arq jobs enqueued, then one arq worker process in burst mode
  (max_jobs and poll_delay as the dialer's defaults): jobs per second.
- ours: ``--contacts`` contacts loaded with ``dialer campaign load``, then one ``dialer worker``
  process placing them against the simulator with zero-length calls and limits that never bind;
  calls are followed by polling (``DIALER_POLL_INITIAL``), so each attempt's figures include its end.

Both rates are taken over the steady part of the run (from 10% to 90% of the work done). For that
window it also prints the worker's CPU seconds per call (/proc), Redis round trips per attempt
(requests the worker process sent, counted in-process by ``bench/counting.py``; a pipeline or a
script is one) and Redis commands per attempt (INFO commandstats, which also counts the commands
run inside Lua scripts). With no ``--redis-url`` both run on a private ``redis-server`` so that no
other client shows up in commandstats.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import benchlib
import redis

from dialer import constants as k


if TYPE_CHECKING:
    from collections.abc import Callable


TARGET_RATIO = 0.5
TARGET_ROUND_TRIPS = 12


@dataclass
class Sample:
    at: float
    done: int
    cpu: float
    round_trips: int
    commands: dict[str, int]


@dataclass
class Window:
    done: int
    seconds: float
    cpu: float
    round_trips: int
    commands: dict[str, int]

    @property
    def rate(self) -> float:
        return self.done / self.seconds

    def per(self, value: float) -> float:
        return value / self.done if self.done else float('nan')


def steady(samples: list[Sample], total: int) -> Window:
    """The samples at 10% and 90% of ``total`` done, and what happened between them."""
    low = next(s for s in samples if s.done >= total * 0.1)
    high = next((s for s in samples if s.done >= total * 0.9), samples[-1])
    return Window(
        done=high.done - low.done,
        seconds=high.at - low.at,
        cpu=high.cpu - low.cpu,
        round_trips=high.round_trips - low.round_trips,
        commands=benchlib.counts_delta(low.commands, high.commands),
    )


def watch(
    process: subprocess.Popen[bytes],
    client: redis.Redis,
    counts: Path,
    done: Callable[[], int],
    total: int,
    timeout: float,
) -> list[Sample]:
    samples: list[Sample] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        finished = done()
        try:
            cpu = benchlib.cpu_seconds(process.pid)
        except FileNotFoundError:
            break
        samples.append(
            Sample(time.monotonic(), finished, cpu, benchlib.round_trips(counts), benchlib.command_calls(client))
        )
        if finished >= total or process.poll() is not None:
            break
        time.sleep(0.1)
    return samples


async def _enqueue(url: str, jobs: int) -> None:
    from arq import create_pool  # noqa: PLC0415
    from arq.connections import RedisSettings  # noqa: PLC0415

    pool = await create_pool(RedisSettings.from_dsn(url))
    for start in range(0, jobs, 500):
        await asyncio.gather(*(pool.enqueue_job('noop', i) for i in range(start, min(jobs, start + 500))))
    await pool.aclose()


def baseline(url: str, jobs: int, work: Path) -> Window:
    client = redis.Redis.from_url(url)
    client.flushdb()
    asyncio.run(_enqueue(url, jobs))
    queued = int(client.zcard('arq:queue'))
    counts = work / 'arq-counts.json'
    process = subprocess.Popen([sys.executable, str(Path(__file__).parent / 'counting.py'), str(counts), 'arq', url])
    try:
        samples = watch(process, client, counts, lambda: queued - int(client.zcard('arq:queue')), queued, 600)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    window = steady(samples, queued)
    client.flushdb()
    client.close()
    return window


def ours(url: str, contacts: int, work: Path, poll_initial: float) -> tuple[Window, dict[str, object]]:
    from simulator.testing import running_simulator  # noqa: PLC0415
    from workers.fleet import LocalFleet  # noqa: PLC0415

    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    simulator = {
        'time_scale': 0.0001,
        **benchlib.ALL_ANSWERED,
        'ring_min': 0,
        'ring_max': 0,
        'talk_min': 0,
        'talk_max': 0,
        'billing_delay': 0,
    }
    with running_simulator(**simulator) as sim:
        env = {
            **benchlib.UNLIMITED_ENV,
            'DIALER_POLL_INITIAL': str(poll_initial),
            'DIALER_POLL_INTERVAL': '0.5',
        }
        trunks = benchlib.write_trunks(work / 'trunks.toml', 'bench', concurrent=10000, cps=10000, burst=100)
        fleet = LocalFleet(url, sim.base_url, trunks, env)
        benchlib.load_campaign(fleet, work, 'dispatch', contacts)
        counts = work / 'worker-counts.json'
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / 'counting.py'), str(counts), 'dialer', 'worker'],
            env=fleet.env,
        )
        try:
            samples = watch(
                process, client, counts, lambda: int(client.hget(k.campaign('dispatch'), 'calls') or 0), contacts, 600
            )
            fleet.wait_until_finished('dispatch', timeout=120)
        finally:
            fleet.workers.append(process)
            fleet.stop_all()
        records = sim.records()
        stats = sim.stats()
    client.flushdb()
    client.close()
    created = sorted(r['created'] for r in records)
    low, high = created[len(created) // 10], created[len(created) * 9 // 10]
    extra: dict[str, object] = {
        'sim_rate': (len(created) * 8 // 10) / (high - low) if high > low else float('nan'),
        'calls': len(records),
        'requests': stats['requests'],
        'duplicates': stats['duplicate_attempts'],
    }
    return steady(samples, contacts), extra


def report(name: str, window: Window, unit: str) -> None:
    commands = sum(window.commands.values())
    scripts = window.commands.get('evalsha', 0) + window.commands.get('eval', 0)
    print(
        f'{name}: {window.rate:.0f} {unit}/s over {window.done} {unit} in {window.seconds:.1f} s; '
        f'worker CPU {window.per(window.cpu) * 1000:.2f} ms/{unit}; '
        f'Redis round trips {window.per(window.round_trips):.2f}/{unit}, '
        f'commands {window.per(commands):.1f}/{unit} (of which scripts {window.per(scripts):.2f})'
    )
    top = sorted(window.commands.items(), key=lambda item: -item[1])[:12]
    print('  commands per ' + unit + ': ' + ', '.join(f'{name} {window.per(n):.2f}' for name, n in top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--contacts', type=int, default=10_000)
    parser.add_argument('--jobs', type=int, default=20_000)
    parser.add_argument('--redis-url', default=None, help='default: a private redis-server on a free port')
    parser.add_argument('--poll-initial', type=float, default=0.05, help='DIALER_POLL_INITIAL for ours')
    parser.add_argument('--skip-baseline', action='store_true')
    args = parser.parse_args()
    benchlib.print_machine()
    with tempfile.TemporaryDirectory(prefix='dispatch-bench-') as tmp, benchlib.redis_server(args.redis_url) as url:
        work = Path(tmp)
        base = None
        if not args.skip_baseline:
            base = baseline(url, args.jobs, work)
            report('baseline (bare arq, no-op job)', base, 'job')
        mine, extra = ours(url, args.contacts, work, args.poll_initial)
        report('ours (dialer worker + simulator)', mine, 'call')
        print(
            f'  simulator: {extra["calls"]} calls, {extra["sim_rate"]:.0f} creates/s (10%-90% by created time), '
            f'duplicate attempts {extra["duplicates"]}, requests {extra["requests"]}'
        )
        if base is not None:
            print(f'ratio ours / baseline: {mine.rate / base.rate:.2f} (target >= {TARGET_RATIO})')
        rt = mine.per(mine.round_trips)
        verdict = 'met' if rt <= TARGET_ROUND_TRIPS else 'MISSED'
        print(f'round trips per attempt: {rt:.2f} (target <= {TARGET_ROUND_TRIPS}: {verdict})')
        benchlib.print_machine()


if __name__ == '__main__':
    main()
