"""Latency benchmark: from a contact becoming due to its create request reaching Ultravox, with free capacity.

    python bench/latency_bench.py [--waves 40] [--wave-size 10] [--gap 0.5] [--redis-url URL]

The contacts are loaded with ``dialer campaign load`` before any worker runs, then taken out of the
campaign's due ZSET. With one idle worker running, they are put back in waves of ``--wave-size``,
each scored 300 ms in the future (Redis time): that score is the instant the contact becomes
eligible. The latency of a contact is the simulator's receipt time of its create (``created`` in
/_sim/records, same host clock) minus that score. Calls last no time and limits never bind.
The baseline beside the figures is the floor set by configuration: the pacer's idle interval
(``DIALER_PACER_INTERVAL``, 50 ms) plus arq's poll delay (``DIALER_WORKER_POLL_DELAY``, 20 ms).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import benchlib
import redis

from dialer import constants as k


TARGET_P99_MS = 100
AHEAD_MS = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--waves', type=int, default=40)
    parser.add_argument('--wave-size', type=int, default=10)
    parser.add_argument('--gap', type=float, default=0.5, help='seconds between waves')
    parser.add_argument('--redis-url', default=None, help='default: a private redis-server on a free port')
    args = parser.parse_args()

    from simulator.testing import running_simulator  # noqa: PLC0415
    from workers.fleet import LocalFleet  # noqa: PLC0415

    benchlib.print_machine()
    total = args.waves * args.wave_size
    simulator = {
        'time_scale': 0.0001,
        **benchlib.ALL_ANSWERED,
        'ring_min': 0,
        'ring_max': 0,
        'talk_min': 0,
        'talk_max': 0,
        'billing_delay': 0,
    }
    due_at: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix='latency-bench-') as tmp,
        benchlib.redis_server(args.redis_url) as url,
        running_simulator(**simulator) as sim,
    ):
        work = Path(tmp)
        client = redis.Redis.from_url(url, decode_responses=True)
        env = {**benchlib.UNLIMITED_ENV, 'DIALER_POLL_INITIAL': '0.05', 'DIALER_POLL_INTERVAL': '0.5'}
        trunks = benchlib.write_trunks(work / 'trunks.toml', 'bench', concurrent=10000, cps=10000, burst=100)
        fleet = LocalFleet(url, sim.base_url, trunks, env)
        benchlib.load_campaign(fleet, work, 'latency', total)
        due = k.campaign_due('latency')
        numbers = client.zrange(due, 0, -1)
        client.delete(due)
        fleet.start_worker(DIALER_METRICS_PORT='0')
        try:
            time.sleep(4)  # the worker is up and idle
            for wave in range(args.waves):
                seconds, micros = client.time()
                score = seconds * 1000 + micros // 1000 + AHEAD_MS
                members = numbers[wave * args.wave_size : (wave + 1) * args.wave_size]
                client.zadd(due, dict.fromkeys(members, score))
                due_at.update(dict.fromkeys(members, score / 1000))
                time.sleep(args.gap)
            fleet.wait_until_finished('latency', timeout=120)
        finally:
            fleet.stop_all()
            client.close()
        records = sim.records()

    latencies = [(r['created'] - due_at[k.parse_attempt_id(r['metadata']['attempt_id'])[1]]) * 1000 for r in records]
    early = sum(1 for ms in latencies if ms < 0)
    p50, p95, p99 = (benchlib.percentile(latencies, q) for q in (50, 95, 99))
    print(f'{len(latencies)} creates of {total} contacts, in {args.waves} waves of {args.wave_size}')
    print(
        f'due -> create received: p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms '
        f'(target p99 <= {TARGET_P99_MS} ms; baseline floor: pacer interval 50 ms + arq poll delay 20 ms = 70 ms)'
    )
    if early:
        print(f'  {early} creates arrived before their due time (clock skew?)')
    benchlib.print_machine()


if __name__ == '__main__':
    main()
