"""Tracking benchmark: one worker holding ``--calls`` live calls; its memory and its polling rate.

    python bench/tracking_bench.py [--calls 10000] [--measure 60] [--redis-url URL]

The simulator runs in real time (time_scale 1) and every call is answered at once and talks for
600 s, so calls pile up until ``--calls`` are live; then for ``--measure`` seconds it samples the
worker's RSS and counts the simulator's ``GET /api/calls/{id}`` requests. ``DIALER_POLL_INTERVAL``
and ``DIALER_POLL_INITIAL`` are 5 s (the documented polling budget is one GET per call per 5 s).
The baseline beside the figures is the same worker's RSS when idle, before the first call.
Everything is stopped at the end; nothing waits for the calls to finish.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import benchlib
import redis

from dialer import constants as k


TARGET_RSS_MB = 300
TARGET_GETS_PER_CALL_PER_5S = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--calls', type=int, default=10_000)
    parser.add_argument('--measure', type=float, default=60.0)
    parser.add_argument('--redis-url', default=None, help='default: a private redis-server on a free port')
    args = parser.parse_args()

    from simulator.testing import running_simulator  # noqa: PLC0415
    from workers.fleet import LocalFleet  # noqa: PLC0415

    benchlib.print_machine()
    simulator = {
        'time_scale': 1.0,
        **benchlib.ALL_ANSWERED,
        'ring_min': 0,
        'ring_max': 0,
        'talk_min': 600,
        'talk_max': 600,
        'billing_delay': 0,
    }
    with (
        tempfile.TemporaryDirectory(prefix='tracking-bench-') as tmp,
        benchlib.redis_server(args.redis_url) as url,
        running_simulator(**simulator) as sim,
    ):
        work = Path(tmp)
        client = redis.Redis.from_url(url, decode_responses=True)
        env = {**benchlib.UNLIMITED_ENV, 'DIALER_POLL_INITIAL': '5', 'DIALER_POLL_INTERVAL': '5'}
        trunks = benchlib.write_trunks(work / 'trunks.toml', 'bench', concurrent=20000, cps=10000, burst=100)
        fleet = LocalFleet(url, sim.base_url, trunks, env)
        benchlib.load_campaign(fleet, work, 'tracking', args.calls)
        worker = fleet.start_worker(DIALER_METRICS_PORT='0')
        try:
            time.sleep(3)
            idle_rss = benchlib.rss_mb(worker.pid)
            started = time.monotonic()
            peak = idle_rss
            while int(client.hget(k.campaign('tracking'), 'calls') or 0) < args.calls:
                if worker.poll() is not None:
                    raise SystemExit(f'the worker exited with {worker.returncode}')
                peak = max(peak, benchlib.rss_mb(worker.pid))
                time.sleep(0.5)
            ramp = time.monotonic() - started
            print(f'{args.calls} calls live after {ramp:.0f} s ({args.calls / ramp:.0f} calls/s while tracking)')

            gets_before = sim.stats()['requests'].get('get_call', 0)
            cpu_before, t0 = benchlib.cpu_seconds(worker.pid), time.monotonic()
            rss: list[float] = []
            while time.monotonic() - t0 < args.measure:
                rss.append(benchlib.rss_mb(worker.pid))
                time.sleep(1)
            elapsed = time.monotonic() - t0
            cpu = benchlib.cpu_seconds(worker.pid) - cpu_before
            stats = sim.stats()
            gets = stats['requests'].get('get_call', 0) - gets_before
            live = int(client.hget(k.campaign('tracking'), 'n:in_call') or 0)
        finally:
            # 10,000 calls in flight: do not wait out the worker's shutdown grace for them
            fleet.stop(worker, timeout=15)
            client.close()

    per_call = gets / elapsed * 5 / max(live, 1)
    print(f'measured {elapsed:.0f} s with {live} calls in flight:')
    print(
        f'  worker RSS: {max(rss):.0f} MB peak while tracking, {peak:.0f} MB peak while ramping '
        f'(baseline: {idle_rss:.0f} MB idle; target < {TARGET_RSS_MB} MB)'
    )
    print(
        f'  Ultravox GETs: {gets} in {elapsed:.0f} s = {gets / elapsed:.0f}/s = {per_call:.2f} per call per 5 s '
        f'(target <= {TARGET_GETS_PER_CALL_PER_5S}; baseline: the polling interval allows exactly 1.00)'
    )
    print(f'  worker CPU: {cpu / elapsed * 100:.0f}% of one core ({cpu / max(gets, 1) * 1000:.2f} ms per poll)')
    print(f'  simulator requests: {stats["requests"]}')
    benchlib.print_machine()


if __name__ == '__main__':
    main()
