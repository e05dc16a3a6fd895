"""Chaos benchmark (issue 6): workers SIGKILLed at random while Ultravox misbehaves; nothing lost, nothing
dialled twice, no limit exceeded.

    python bench/chaos_bench.py [--contacts 3000] [--workers 4] [--kill-every 3] [--redis-url redis://127.0.0.1:6379/12]

The scenario of ``tests/test_chaos.py`` at a larger scale, with figures. One campaign (3 attempts per
contact, retries on no_answer/busy/failed) on one trunk (40 concurrent calls, 60 per second) against
the simulator at time scale 0.002 with faults on every request: 4 % 5xx and 2 % dropped connections
on creates, 3 % lost responses (the call is created, the response never arrives), 3 % 5xx on reads,
and an account limit of 50 creates/s at Ultravox while the dialer believes it may send 80/s (so
Ultravox answers 429). A killer thread SIGKILLs a random worker every ``--kill-every`` seconds and
starts a new one, until the campaign is finished.

Prints: contacts, kills, faults injected by kind and requests rejected (simulator), creates,
duplicates (attempt ids created more than once), lost (contacts not terminal at the end), the most
concurrent calls and creations in any 1 s against the trunk's limits, and the wall time. Exit code
1 when anything was lost or duplicated or a limit exceeded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dialer import constants as k  # noqa: E402
from simulator.testing import running_simulator  # noqa: E402
from workers.fleet import LocalFleet  # noqa: E402


SIP_HOST = 'sip.chaos.example:5060'
TRUNK = ('chaos', 40, 60)  # name, max concurrent, calls per second
SIMULATOR: dict[str, Any] = {
    'time_scale': 0.002,
    'ring_min': 2,
    'ring_max': 20,
    'talk_min': 10,
    'talk_max': 120,
    'billing_delay': 5,
    'seed': 11,
    'error_5xx_rate': 0.04,
    'lost_response_rate': 0.03,
    'drop_rate': 0.02,
    'get_error_rate': 0.03,
    'creates_per_second': 50,
}
ENV = {
    'DIALER_POLL_INITIAL': '0.05',
    'DIALER_POLL_INTERVAL': '0.1',
    'DIALER_BILLING_WAIT': '0.5',
    'DIALER_AMBIGUOUS_CREATE_DELAY': '0.5',
    'DIALER_ACCOUNT_CALLS_PER_SECOND': '80',  # above the simulator's 50/s: Ultravox answers 429
    'DIALER_ACCOUNT_CALLS_PER_MINUTE': '100000',
    'DIALER_CLAIM_LEASE': '10',
    'DIALER_SLOT_LEASE_MARGIN': '5',
    'DIALER_WORKER_SHUTDOWN_GRACE': '5',
    'DIALER_DIAL_JOB_TIMEOUT': '8',
    'DIALER_ULTRAVOX_READ_TIMEOUT': '2',
    'DIALER_METRICS_HOST': '127.0.0.1',
}
AGENT = '6f9a1c3e-8a39-4bb6-9a55-0f3d5d8e2a10'


def write_files(tmp: Path, contacts: int) -> tuple[Path, Path, Path]:
    name, concurrent, cps = TRUNK
    trunks = tmp / 'trunks.toml'
    trunks.write_text(
        f'[trunks.{name}]\nhost = "{SIP_HOST}"\ntransport = "tcp"\nfrom = "+14155550100"\n'
        f'username = "user-chaos"\npassword = "pw-chaos-bench"\nmax_concurrent = {concurrent}\n'
        f'calls_per_second = {cps}\n',
        encoding='utf-8',
    )
    campaign = tmp / 'chaos.toml'
    campaign.write_text(
        f'name = "chaos"\ntrunk = "{name}"\nagent_id = "{AGENT}"\nmax_duration = 180\njoin_timeout = 30\n'
        '[hours]\nstart = "00:00"\nend = "24:00"\nlegal_bound = false\n'
        '[retry]\nretry_on = ["no_answer", "busy", "failed"]\nmax_attempts = 3\nmax_per_24h = 10\n'
        'delays = { no_answer = 0.2, busy = 0.2, failed = 0.2 }\n',
        encoding='utf-8',
    )
    csv = tmp / 'contacts.csv'
    rows = ['phone,contact_id'] + [f'+1212{2000000 + i:07d},c{i}' for i in range(contacts)]
    csv.write_text('\n'.join(rows) + '\n', encoding='utf-8')
    return trunks, campaign, csv


def kill_workers(fleet: LocalFleet, stop: threading.Event, every: float, kills: list[float], seed: int) -> None:
    rng = random.Random(seed)
    while not stop.wait(every):
        alive = [p for p in fleet.workers if p.poll() is None]
        if alive:
            fleet.stop(rng.choice(alive), signal.SIGKILL)
            kills.append(time.monotonic())
        fleet.start_worker()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--contacts', type=int, default=3000)
    parser.add_argument('--workers', type=int, default=4)
    parser.add_argument('--kill-every', type=float, default=3.0, help='seconds between two kills')
    parser.add_argument('--seed', type=int, default=5)
    parser.add_argument('--timeout', type=float, default=900, help='give up waiting after this many seconds')
    parser.add_argument('--redis-url', default=os.environ.get('DIALER_REDIS_URL', 'redis://127.0.0.1:6379/12'))
    parser.add_argument('--json', action='store_true', help='also print the figures as JSON')
    args = parser.parse_args()

    with redis.Redis.from_url(args.redis_url, decode_responses=True) as client:
        client.flushdb()
    with tempfile.TemporaryDirectory(prefix='chaos-bench-') as tmp_name, running_simulator(**SIMULATOR) as sim:
        tmp = Path(tmp_name)
        trunks, campaign, csv = write_files(tmp, args.contacts)
        fleet = LocalFleet(args.redis_url, sim.base_url, trunks, dict(ENV), log_dir=tmp)
        fleet.cli('campaign', 'load', str(csv), '--campaign-file', str(campaign))
        started = time.monotonic()
        for _ in range(args.workers):
            fleet.start_worker()
        stop, kills = threading.Event(), list[float]()
        killer = threading.Thread(target=kill_workers, args=(fleet, stop, args.kill_every, kills, args.seed))
        killer.start()
        finished = True
        try:
            final = fleet.wait_until_finished('chaos', timeout=args.timeout)
        except TimeoutError:
            finished, final = False, fleet.campaign('chaos')
        finally:
            stop.set()
            killer.join()
            wall = time.monotonic() - started
            fleet.stop_all()
        records, stats = sim.records(), sim.stats()
        with redis.Redis.from_url(args.redis_url, decode_responses=True) as client:
            slots_left = int(client.zcard(k.trunk_slots(TRUNK[0])))

    per_attempt = Counter(r['metadata']['attempt_id'] for r in records)
    duplicates = sum(1 for n in per_attempt.values() if n > 1)
    lost = args.contacts - int(final.get('n:done', 0))
    host = stats['hosts'][SIP_HOST]
    _, concurrent, cps = TRUNK
    figures = {
        'contacts': args.contacts,
        'workers': args.workers,
        'kills': len(kills),
        'finished': finished,
        'wall_seconds': round(wall, 1),
        'creates': len(records),
        'attempts_per_contact': round(len(records) / args.contacts, 2),
        'duplicates': duplicates,
        'simulator_duplicate_attempts': stats['duplicate_attempts'],
        'lost': lost,
        'faults': stats['faults'],
        'rejected': stats['rejected'],
        'requests': stats['requests'],
        'max_concurrent': host['max_concurrent'],
        'concurrent_limit': concurrent,
        'max_creates_in_1s': host['max_creates_in_1s'],
        'cps_limit': cps,
        'slots_left': slots_left,
        'outcomes': {key.removeprefix('o:'): int(v) for key, v in final.items() if key.startswith('o:') and v != '0'},
    }
    print(
        f'chaos bench: {args.contacts} contacts, {args.workers} workers, a kill every {args.kill_every}s,'
        f' wall {wall:.0f}s{"" if finished else " (NOT FINISHED)"}'
    )
    print(f'kills {len(kills)}; creates {len(records)} ({figures["attempts_per_contact"]} per contact)')
    print(f'faults injected {dict(sorted(stats["faults"].items()))}')
    print(f'requests rejected {dict(sorted(stats["rejected"].items()))}; requests {stats["requests"]}')
    print(
        f'duplicates {duplicates} (simulator: {stats["duplicate_attempts"]}); lost {lost}; slots left held {slots_left}'
    )
    print(f'max concurrent {host["max_concurrent"]}/{concurrent}; max creates in 1 s {host["max_creates_in_1s"]}/{cps}')
    print(f'final outcomes {figures["outcomes"]}')
    if args.json:
        print(json.dumps(figures))
    bad = duplicates or lost or host['max_concurrent'] > concurrent or host['max_creates_in_1s'] > cps
    return 1 if bad or not finished else 0


if __name__ == '__main__':
    sys.exit(main())
