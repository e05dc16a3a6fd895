"""Benchmark of per-trunk limits across a fleet (issue 3): no limit exceeded, and the trunks kept busy.

    python bench/limits_bench.py [--workers 4] [--contacts 2000] [--redis-url redis://127.0.0.1:6379/12]

Runs N worker processes (``workers.fleet.LocalFleet``), the webhook receiver (``dialer webhooks``)
and the Ultravox simulator (time scale 0.02: 50 simulated seconds a real second) with two trunks,
each on its own SIP host:port so that the simulator's per-host statistics tell them apart:

- ``slow``: 5 concurrent calls, 2 creations per second;
- ``fast``: 20 concurrent calls, 10 creations per second.

Every call is answered; ring 2-8 s and talk 180-320 s simulated, so a call lasts ~5.1 s real
(created -> ended) and both trunks are bound by concurrency (5 / 5.1 = 1.0 calls/s < 2 and
20 / 5.1 = 3.9 calls/s < 10). Contacts are split over two campaigns per trunk in proportion to those
capacities, so both trunks finish together; the default 2000 contacts take about 7 minutes.
Calls are long enough next to the rate limit that ends which cluster rarely wait for it: even a
perfect dialer (no latency at all, replayed by ``ideal_cps`` on the same call lengths) reaches only
~97 % on ``slow`` (5 channels) and ~99.5 % on ``fast``; with 3.5 s calls it would be ~93 % / 98.5 %.
Calls end through the simulator's signed ``call.ended`` webhooks (slot freed at once); polling
is only a safety net (first poll after ``--poll-initial`` s, well after the longest call).

Prints per trunk, from the simulator's own records: the most concurrent calls and the most
creations in any 1 s window against the limits, the achieved calls per second over the steady part
(the 10th to 90th percentile of that trunk's creations), the mean call length, the utilisation
(achieved / min(cps limit, max_concurrent / mean length)), the mean number of calls up against the
limit, the utilisation of that perfect dialer and ours relative to it, and the gap from a call's end
to the next creation on the trunk (slot time lost). Exit code
1 when any limit was exceeded. Target: utilisation >= 95 % with no violation.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import statistics
import sys
import tempfile
import time
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Any

import benchlib
import redis


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulator.testing import free_port, running_simulator  # noqa: E402
from workers.fleet import LocalFleet  # noqa: E402


SIP_HOST = 'sip.bench.example'
#: name -> (max_concurrent, calls_per_second, SIP port)
TRUNKS = {'slow': (5, 2, 5060), 'fast': (20, 10, 5061)}
TIME_SCALE = 0.02
SIMULATOR: dict[str, Any] = {
    'time_scale': TIME_SCALE,
    'answer_rate': 1.0,
    'no_answer_rate': 0,
    'busy_rate': 0,
    'invalid_number_rate': 0,
    'rejected_rate': 0,
    'unavailable_rate': 0,
    'failure_rate': 0,
    'ring_min': 2,
    'ring_max': 8,
    'talk_min': 180,
    'talk_max': 320,
    'billing_delay': 5,
    'seed': 7,
}
TARGET_UTILISATION = 0.95
AGENT = '6f9a1c3e-8a39-4bb6-9a55-0f3d5d8e2a10'


def write_trunks(path: Path) -> Path:
    blocks = [
        f'[trunks.{name}]\nhost = "{SIP_HOST}:{port}"\ntransport = "tcp"\nfrom = "+14155550100"\n'
        f'username = "user-{name}"\npassword = "pw-{name}-bench"\n'
        f'max_concurrent = {concurrent}\ncalls_per_second = {cps}\n'
        for name, (concurrent, cps, port) in TRUNKS.items()
    ]
    path.write_text('\n'.join(blocks), encoding='utf-8')
    return path


def write_campaign(path: Path, name: str, trunk: str) -> Path:
    path.write_text(
        f'name = "{name}"\ntrunk = "{trunk}"\nagent_id = "{AGENT}"\nmax_duration = 600\njoin_timeout = 30\n'
        '[hours]\nstart = "00:00"\nend = "24:00"\nlegal_bound = false\n'
        '[retry]\nretry_on = ["no_answer", "busy", "failed"]\nmax_attempts = 2\nmax_per_24h = 10\n'
        'delays = { no_answer = 0.2, busy = 0.2, failed = 0.2 }\n',
        encoding='utf-8',
    )
    return path


def write_contacts(path: Path, count: int, prefix: str) -> Path:
    lines = ['phone,contact_id'] + [f'+1{prefix}{2000000 + i:07d},{prefix}-{i}' for i in range(count)]
    path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return path


def split_contacts(total: int, mean_call: float) -> dict[str, int]:
    """Contacts per trunk in proportion to its capacity, so that both trunks finish together."""
    capacity = {name: min(cps, concurrent / mean_call) for name, (concurrent, cps, _) in TRUNKS.items()}
    slow = round(total * capacity['slow'] / sum(capacity.values()))
    return {'slow': slow, 'fast': total - slow}


def mean_concurrency(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """Time-averaged number of calls up between ``start`` and ``end``."""
    covered = sum(max(0.0, min(b, end) - max(a, start)) for a, b in intervals)
    return covered / (end - start)


def end_to_next_create(intervals: list[tuple[float, float]], start: float, end: float) -> list[float]:
    """For every call ending inside [start, end], the time until the trunk's next creation."""
    creates = sorted(a for a, _ in intervals)
    gaps = []
    for _, ended in intervals:
        if start <= ended <= end:
            i = bisect_left(creates, ended)
            if i < len(creates):
                gaps.append(creates[i] - ended)
    return gaps


def ideal_cps(durations: list[float], concurrent: int, cps: float) -> float:
    """Calls per second of a perfect dialer (no latency at all) placing the same calls in the same order
    under the same limits: what is left of the capacity once ends that cluster wait for the rate limit."""
    free = [0.0] * concurrent
    interval, last, creates = 1 / cps, -math.inf, []
    for length in durations:
        start = max(heapq.heappop(free), last + interval)
        heapq.heappush(free, start + length)
        creates.append(last := start)
    first, final = creates[len(creates) // 10], creates[(len(creates) * 9) // 10]
    return ((len(creates) * 9) // 10 - len(creates) // 10) / (final - first)


def trunk_figures(name: str, records: list[dict[str, Any]], host_stats: dict[str, Any]) -> dict[str, Any]:
    concurrent, cps, _ = TRUNKS[name]
    intervals = sorted((r['created'], r['ended']) for r in records)
    creates = [a for a, _ in intervals]
    first, last = creates[len(creates) // 10], creates[(len(creates) * 9) // 10]
    in_window = bisect_right(creates, last) - bisect_left(creates, first)
    achieved = (in_window - 1) / (last - first)
    steady = [(a, b) for a, b in intervals if first <= a <= last]
    mean_call = statistics.fmean(b - a for a, b in steady)
    capacity = min(cps, concurrent / mean_call)
    gaps = sorted(end_to_next_create(intervals, first, last))
    ideal = ideal_cps([b - a for a, b in intervals], concurrent, cps)
    over = [t for i, t in enumerate(creates) if bisect_left(creates, t + 1.0) - i > cps]
    densest = max(range(len(creates)), key=lambda i: bisect_left(creates, creates[i] + 1.0) - i)
    burst = creates[densest : bisect_left(creates, creates[densest] + 1.0)]
    return {
        'trunk': name,
        'calls': len(records),
        'max_concurrent': host_stats['max_concurrent'],
        'concurrent_limit': concurrent,
        'max_creates_in_1s': host_stats['max_creates_in_1s'],
        'cps_limit': cps,
        'steady_seconds': round(last - first, 1),
        'achieved_cps': round(achieved, 3),
        'mean_call_seconds': round(mean_call, 3),
        'capacity_cps': round(capacity, 3),
        'utilisation': round(achieved / capacity, 4),
        'ideal_cps': round(ideal, 3),
        'ideal_utilisation': round(ideal / capacity, 4),
        'vs_ideal': round(achieved / ideal, 4),
        'windows_over_cps': len(over),
        'over_cps_at': sorted({round(t - creates[0], 1) for t in over}),
        'mean_concurrent': round(mean_concurrency(intervals, first, last), 2),
        'gap_ms_p50': round(1000 * gaps[len(gaps) // 2]),
        'gap_ms_p90': round(1000 * gaps[(len(gaps) * 9) // 10]),
        'gap_ms_mean': round(1000 * statistics.fmean(gaps)),
        'densest_1s_ms': [round(1000 * (t - burst[0])) for t in burst],
        'densest_1s_at': round(burst[0] - creates[0], 3),
        'violations': int(host_stats['max_concurrent'] > concurrent) + int(host_stats['max_creates_in_1s'] > cps),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--workers', type=int, default=4)
    parser.add_argument('--contacts', type=int, default=2000)
    parser.add_argument('--redis-url', default=os.environ.get('DIALER_REDIS_URL', 'redis://127.0.0.1:6379/12'))
    parser.add_argument('--no-webhooks', action='store_true', help='end calls by polling only')
    parser.add_argument('--poll-initial', type=float, default=10.0, help='first poll of a call (s)')
    parser.add_argument('--poll-interval', type=float, default=2.0, help='later polls (s)')
    parser.add_argument('--pacer-interval', type=float, default=0.05, help='DIALER_PACER_INTERVAL')
    parser.add_argument('--poll-delay', type=float, default=0.2, help='DIALER_WORKER_POLL_DELAY (the default)')
    parser.add_argument('--rate-margin', type=float, default=0.03, help='DIALER_RATE_SAFETY_MARGIN')
    parser.add_argument('--talk-min', type=float, default=SIMULATOR['talk_min'], help='simulated s')
    parser.add_argument('--talk-max', type=float, default=SIMULATOR['talk_max'], help='simulated s')
    parser.add_argument('--json', action='store_true', help='also print the figures as JSON')
    args = parser.parse_args()

    sim_config = {**SIMULATOR, 'talk_min': args.talk_min, 'talk_max': args.talk_max}
    mean_call = TIME_SCALE * sum(sim_config[key] for key in ('ring_min', 'ring_max', 'talk_min', 'talk_max')) / 2
    split = split_contacts(args.contacts, mean_call)
    env = {
        'DIALER_POLL_INITIAL': str(args.poll_initial),
        'DIALER_POLL_INTERVAL': str(args.poll_interval),
        'DIALER_BILLING_WAIT': '2',
        'DIALER_AMBIGUOUS_CREATE_DELAY': '0.5',
        'DIALER_ACCOUNT_CALLS_PER_SECOND': '1000',
        'DIALER_ACCOUNT_CALLS_PER_MINUTE': '100000',
        'DIALER_CLAIM_LEASE': '10',
        'DIALER_SLOT_LEASE_MARGIN': '5',
        'DIALER_WORKER_SHUTDOWN_GRACE': '5',
        'DIALER_PACER_INTERVAL': str(args.pacer_interval),
        'DIALER_WORKER_POLL_DELAY': str(args.poll_delay),
        'DIALER_RATE_SAFETY_MARGIN': str(args.rate_margin),
        'DIALER_METRICS_HOST': '127.0.0.1',
    }
    hooks_port = free_port()
    if not args.no_webhooks:
        sim_config |= benchlib.webhook_config(hooks_port)
    with redis.Redis.from_url(args.redis_url) as client:
        client.flushdb()

    with tempfile.TemporaryDirectory(prefix='limits-bench-') as tmp_name, running_simulator(**sim_config) as sim:
        tmp = Path(tmp_name)
        fleet = LocalFleet(args.redis_url, sim.base_url, write_trunks(tmp / 'trunks.toml'), env, log_dir=tmp)
        campaigns = []
        for trunk, prefix_pair in (('slow', ('212', '312')), ('fast', ('415', '646'))):
            for half, prefix in enumerate(prefix_pair):
                count = split[trunk] // 2 + (split[trunk] % 2 if half == 0 else 0)
                name = f'{trunk}-{"ab"[half]}'
                fleet.cli(
                    'campaign', 'load', str(write_contacts(tmp / f'{name}.csv', count, prefix)),
                    '--campaign-file', str(write_campaign(tmp / f'{name}.toml', name, trunk)),
                )  # fmt: skip
                campaigns.append(name)
        hooks = None if args.no_webhooks else benchlib.start_webhooks(fleet, hooks_port, tmp)
        started = time.monotonic()
        for _ in range(args.workers):
            fleet.start_worker()
        try:
            for name in campaigns:
                fleet.wait_until_finished(name, timeout=3600)
        finally:
            fleet.stop_all()
            if hooks is not None:
                fleet.stop(hooks)
        wall = time.monotonic() - started
        records, stats = sim.records(), sim.stats()

    rows = []
    for trunk, (_, _, port) in TRUNKS.items():
        host = f'{SIP_HOST}:{port}'
        rows.append(trunk_figures(trunk, [r for r in records if r['sip_host'] == host], stats['hosts'][host]))
    print(
        f'limits bench: {args.workers} workers, {args.contacts} contacts ({split["slow"]} slow / {split["fast"]} fast),'
        f' webhooks {"off" if args.no_webhooks else "on"}, pacer {args.pacer_interval}s,'
        f' arq poll {args.poll_delay}s, rate margin {args.rate_margin}, talk {args.talk_min:g}-{args.talk_max:g} sim s,'
        f' wall {wall:.0f}s'
    )
    header = (
        f'{"trunk":6} {"max conc":>9} {"max/1s":>7} {"cps":>6} {"capacity":>8} {"util":>6} {"mean conc":>9}'
        f' {"call s":>6} {"gap p50/p90/mean ms":>20} {"ideal":>6} {"vs ideal":>8} {"violations":>10}'
    )
    print(header)
    for row in rows:
        gaps = f'{row["gap_ms_p50"]}/{row["gap_ms_p90"]}/{row["gap_ms_mean"]}'
        print(
            f'{row["trunk"]:6} {row["max_concurrent"]:>4}/{row["concurrent_limit"]:<4}'
            f' {row["max_creates_in_1s"]:>3}/{row["cps_limit"]:<3} {row["achieved_cps"]:>6.2f}'
            f' {row["capacity_cps"]:>8.2f} {row["utilisation"]:>6.1%} {row["mean_concurrent"]:>9.2f}'
            f' {row["mean_call_seconds"]:>6.2f}'
            f' {gaps:>20} {row["ideal_utilisation"]:>6.1%} {row["vs_ideal"]:>8.1%} {row["violations"]:>10}'
        )
    for row in rows:
        if row['violations']:
            print(
                f'{row["trunk"]}: densest 1 s of creations at +{row["densest_1s_at"]}s: {row["densest_1s_ms"]} ms;'
                f' {row["windows_over_cps"]} windows over the limit, starting at +s {row["over_cps_at"]}'
            )
    violations = sum(row['violations'] for row in rows)
    print(
        f'calls {stats["calls"]}, duplicates {stats["duplicate_attempts"]}, webhooks {stats["webhooks"]},'
        f' requests {stats["requests"]}, rejected {stats["rejected"]}'
    )
    worst = min(row['utilisation'] for row in rows)
    print(
        f'violations {violations}; lowest utilisation {worst:.1%} (target >= {TARGET_UTILISATION:.0%}):'
        f' {"OK" if violations == 0 and worst >= TARGET_UTILISATION else "MISSED"}'
    )
    if args.json:
        print(json.dumps({'rows': rows, 'wall_seconds': round(wall, 1), 'stats': stats}, default=str))
    return 1 if violations else 0


if __name__ == '__main__':
    sys.exit(main())
