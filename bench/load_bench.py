"""Benchmark of the CSV campaign loader against a raw baseline (issue: load 1M contacts in <= 3x).

    python bench/load_bench.py [--rows 1000000] [--redis-url redis://127.0.0.1:6379/12]

Generates ``bench/data/contacts-<rows>.csv`` once (phone in mixed US/GB/DE/IN formats with ~1% invalid
and ~1% duplicate numbers, name, timezone and two extra columns), then against a flushed database:

- baseline: ``csv`` read + pipelined redis-py HSET of each raw row and ZADD of it to a due set (what
  any loader must write per contact), no validation; also the HSET-only floor of earlier rounds;
- loader: ``campaigns.loader.load_contacts`` in a child process, so its peak RSS can be measured.

Prints the seconds of each, the ratio to the HSET + ZADD baseline (target <= 3.0) and to the
HSET-only floor, the loader's peak RSS (target <= 300 MB) and Redis memory per accepted contact
(INFO used_memory delta / accepted; target <= 300 bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import phonenumbers
import redis


ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / 'data'
TARGET_RATIO = 3.0
TARGET_RSS_MB = 300
TARGET_BYTES_PER_CONTACT = 300

_US_ZONES = ['America/New_York', 'America/Chicago', 'America/Denver', 'America/Los_Angeles']
_FIRST = ['Ada', 'Grace', 'Alan', 'Linus', 'Margaret', 'Dennis', 'Barbara', 'Ken', 'Frances', 'Edsger']
_LAST = ['Lovelace', 'Hopper', 'Turing', 'Torvalds', 'Hamilton', 'Ritchie', 'Liskov', 'Thompson', 'Allen']
_SEGMENTS = ['gold', 'silver', 'bronze', 'trial']


def _valid_prefixes(rng: random.Random) -> list[tuple[str, str, int, str]]:
    """(region, E.164 prefix, random digits to append, zone) whose numbers phonenumbers accepts.

    The random tails are long enough that accidental duplicates are rare next to the planted ~1%.
    """
    candidates: list[tuple[str, str, int, str]] = [
        ('US', f'+1{area}{exchange}', 6, rng.choice(_US_ZONES)) for area in range(200, 1000) for exchange in '2345679'
    ]
    candidates += [('GB', f'+447{digits}', 7, 'Europe/London') for digits in range(40, 100)]
    candidates += [('IN', f'+919{digits}', 7, 'Asia/Kolkata') for digits in range(40, 100)]
    german = ('151', '152', '157', '159', '160', '162', '163', '170', '171', '172', '175', '176', '177')
    candidates += [('DE', f'+49{digits}', 8, 'Europe/Berlin') for digits in german]
    good = []
    for region, prefix, tail, zone in candidates:
        samples = [prefix + ''.join(rng.choice('0123456789') for _ in range(tail)) for _ in range(4)]
        if all(phonenumbers.is_valid_number(phonenumbers.parse(s)) for s in samples):
            good.append((region, prefix, tail, zone))
    # weight the mix towards the campaign's own region, as real lists are
    us = [p for p in good if p[0] == 'US']
    other = [p for p in good if p[0] != 'US']
    return us + rng.choices(other, k=len(us) // 2) if other else us


def _formatted(region: str, e164: str, rng: random.Random) -> str:
    style = rng.randrange(4)
    if region == 'US':
        digits = e164[2:]
        return [
            f'({digits[:3]}) {digits[3:6]}-{digits[6:]}',
            f'{digits[:3]}-{digits[3:6]}-{digits[6:]}',
            f'+1 {digits[:3]} {digits[3:6]} {digits[6:]}',
            e164,
        ][style]
    cc = {'GB': 2, 'DE': 2, 'IN': 2}[region]
    rest = e164[1 + cc :]
    return [f'+{e164[1 : 1 + cc]} {rest[:4]} {rest[4:]}', f'00{e164[1:]}', f'+{e164[1 : 1 + cc]}-{rest}', e164][style]


def generate(path: Path, rows: int, seed: int = 20240601) -> None:
    rng = random.Random(seed)
    prefixes = _valid_prefixes(rng)
    recent: list[str] = []
    tmp = path.with_suffix('.tmp')
    with tmp.open('w', newline='', encoding='utf-8') as handle:
        writer = csv.writer(handle)
        writer.writerow(['phone', 'name', 'timezone', 'segment', 'account_manager'])
        for i in range(rows):
            roll = rng.random()
            region, prefix, tail, zone = rng.choice(prefixes)
            if roll < 0.01:
                phone = rng.choice(['555-01', 'n/a', '+1 (999) 000', '12345678901234567', 'call me'])
            elif roll < 0.02 and recent:
                phone = rng.choice(recent)
            else:
                e164 = prefix + ''.join(rng.choice('0123456789') for _ in range(tail))
                phone = _formatted(region, e164, rng)
                if len(recent) < 1000:
                    recent.append(phone)
                else:
                    recent[i % 1000] = phone
            # ~10% of rows leave the zone to be derived from the number
            timezone = '' if rng.random() < 0.1 else zone
            name = f'{rng.choice(_FIRST)} {rng.choice(_LAST)}'
            writer.writerow([phone, name, timezone, rng.choice(_SEGMENTS), f'am{rng.randint(1, 40)}'])
    tmp.replace(path)


def baseline(path: Path, url: str, *, due: bool) -> tuple[float, float]:
    """The floor: read the CSV and HSET each raw row, pipelined, with no validation at all.

    ``due``: also ZADD each row to a due set, as the loader does for every contact (the target's
    baseline); without it, the HSET-only floor of earlier rounds. Returns (seconds, Redis CPU seconds).
    """
    client = redis.Redis.from_url(url)
    client.flushdb()
    cpu_before = _redis_cpu(client)
    start = time.perf_counter()
    with path.open(newline='', encoding='utf-8') as handle:
        reader = csv.reader(handle)
        next(reader)
        pipe = client.pipeline(transaction=False)
        for n, row in enumerate(reader, 1):
            pipe.hset('bench:baseline', row[0], ','.join(row[1:]))
            if due:
                pipe.zadd('bench:due', {row[0]: n})
            if n % 2000 == 0:
                pipe.execute()
        pipe.execute()
    elapsed = time.perf_counter() - start
    redis_cpu = _redis_cpu(client) - cpu_before
    client.flushdb()
    client.close()
    return elapsed, redis_cpu


def _redis_cpu(client: redis.Redis) -> float:
    """CPU seconds the whole Redis server has used (user + system)."""
    info = client.info('cpu')
    return float(info['used_cpu_user']) + float(info['used_cpu_sys'])


def _child(path: Path, url: str, workers: int | None) -> None:
    """Run in a subprocess: load the file and print a JSON result line."""
    sys.path.insert(0, str(ROOT))
    import redis.asyncio as aredis  # noqa: PLC0415

    from campaigns.loader import load_contacts  # noqa: PLC0415
    from dialer.models import CampaignConfig  # noqa: PLC0415

    async def run() -> dict[str, object]:
        client = aredis.Redis.from_url(url, decode_responses=True)
        config = CampaignConfig(name='bench', trunk='bench', agent_id='agent-bench')
        start = time.perf_counter()
        summary = await load_contacts(client, config, path, rejects_path=DATA / 'bench-rejects.csv', workers=workers)
        elapsed = time.perf_counter() - start
        await client.aclose()
        return {'seconds': elapsed, 'summary': summary.__dict__}

    result = asyncio.run(run())
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result['rss_mb'] = own.ru_maxrss / 1024
    result['worker_rss_mb'] = children.ru_maxrss / 1024
    result['cpu_main'] = own.ru_utime + own.ru_stime
    result['cpu_workers'] = children.ru_utime + children.ru_stime
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rows', type=int, default=1_000_000)
    parser.add_argument('--redis-url', default='redis://127.0.0.1:6379/12')
    parser.add_argument('--workers', type=int, default=None, help='parser processes (default: automatic)')
    parser.add_argument('--skip-baseline', action='store_true')
    parser.add_argument('--child', type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.redis_url, args.workers)
        return

    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f'contacts-{args.rows}.csv'
    if not path.exists():
        print(f'generating {path} ...', flush=True)
        generate(path, args.rows)
    print(f'file: {path} ({path.stat().st_size / 1e6:.1f} MB, {args.rows} rows)')

    base = hset_only = None
    if not args.skip_baseline:
        base, base_cpu = baseline(path, args.redis_url, due=True)
        print(f'baseline (csv + pipelined HSET + ZADD due): {base:.2f} s, Redis CPU {base_cpu:.1f} s', flush=True)
        hset_only, hset_cpu = baseline(path, args.redis_url, due=False)
        print(f'HSET-only floor (csv + pipelined HSET): {hset_only:.2f} s, Redis CPU {hset_cpu:.1f} s', flush=True)

    client = redis.Redis.from_url(args.redis_url)
    client.flushdb()
    before = int(client.info('memory')['used_memory'])
    cpu_before = _redis_cpu(client)
    command = [sys.executable, __file__, '--child', str(path), '--redis-url', args.redis_url]
    if args.workers is not None:
        command += ['--workers', str(args.workers)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    after = int(client.info('memory')['used_memory'])
    redis_cpu = _redis_cpu(client) - cpu_before
    client.flushdb()  # leave the benchmark database as it was found
    client.close()

    summary = result['summary']
    accepted = summary['accepted']
    print(f'loader: {result["seconds"]:.2f} s')
    print(
        f'  rows {summary["rows"]}, accepted {accepted}, rejected {summary["rejected"]} '
        f'{json.dumps(summary["rejects_by_reason"])}'
    )
    # CPU seconds do not depend on what else the machine runs; wall time on a shared machine does.
    print(
        f'  CPU: {result["cpu_main"]:.1f} s main process, {result["cpu_workers"]:.1f} s parser processes, '
        f'{redis_cpu:.1f} s Redis (whole server); {os.cpu_count()} CPUs'
    )
    if base is not None and hset_only is not None:
        ratio = result['seconds'] / base
        verdict = 'met' if ratio <= TARGET_RATIO else 'MISSED'
        print(f'ratio loader / baseline (HSET + ZADD): {ratio:.2f} (target <= {TARGET_RATIO}: {verdict})')
        print(f'ratio loader / HSET-only floor: {result["seconds"] / hset_only:.2f}')
    print(
        f'loader peak RSS: {result["rss_mb"]:.0f} MB main process, {result["worker_rss_mb"]:.0f} MB largest '
        f'parser process (target <= {TARGET_RSS_MB})'
    )
    per_contact = (after - before) / accepted if accepted else 0.0
    print(f'Redis memory per contact: {per_contact:.0f} bytes (target <= {TARGET_BYTES_PER_CONTACT})')


if __name__ == '__main__':
    main()
