"""How long ``dialer campaign report`` takes for a 10,000-contact campaign (gather + render), and its size.

    .venv/bin/python bench/report_bench.py [--contacts 10000] [--redis-url redis://127.0.0.1:6379/14]

Without ``--redis-url`` a private redis-server is started. The campaign's records are written
directly (as the Lua scripts leave them): 1-3 attempts per contact over a week, on two trunks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

import redis.asyncio as aredis


ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.benchlib import print_machine, redis_server  # noqa: E402
from campaigns.report import gather, render  # noqa: E402
from dialer import constants as k  # noqa: E402


OUTCOMES = ('answered', 'no_answer', 'busy', 'failed', 'voicemail')
DISPOSITIONS = ('interested', 'not_interested', 'callback_requested', None)


async def craft_campaign(client: aredis.Redis, name: str, contacts: int, *, seed: int = 7) -> None:
    """A finished campaign of ``contacts`` contacts, its records as the scripts write them."""
    rng = random.Random(seed)
    start_ms = 1_767_225_600_000  # 2026-01-01T00:00Z
    config = {'name': name, 'trunk': 'carrier-a', 'agent_id': '6f9a1c3e-8a39-4bb6-9a55-0f3d5d8e2a10'}
    await client.hset(k.campaign(name), mapping={'config': json.dumps(config), 'state': 'completed'})
    async with client.pipeline(transaction=False) as pipe:
        for i in range(contacts):
            number = f'+1212{2000000 + i:07d}'
            pipe.hset(k.campaign_contacts(name), number, json.dumps({'i': f'c{i}', 'l': i + 2}))
            attempts = rng.randint(1, 3)
            times = []
            for n in range(1, attempts + 1):
                created = start_ms + rng.randint(0, 7 * 86_400_000)
                times.append(created)
                outcome = rng.choice(OUTCOMES) if n == attempts else 'no_answer'
                joined = outcome in {'answered', 'voicemail'}
                talk = rng.randint(10, 300) if joined else 0
                record = {
                    'st': 'ended', 'call': f'call-{i}-{n}', 'cr': created, 'o': outcome, 'eo': created + 30_000,
                    'jn': '2026-01-01T00:00:10Z' if joined else None, 'sip': -(-talk // 6) * 6, 'agent': talk,
                    'trunk': 'carrier-a' if i % 3 else 'carrier-b', 'dsp': rng.choice(DISPOSITIONS) if joined else None,
                }  # fmt: skip
                pipe.hset(k.campaign_attempts(name), f'{number}:{n}', json.dumps(record))
            progress = {'s': 'done', 'a': attempts, 'c': 0, 'o': outcome, 'ts': times}
            pipe.hset(k.campaign_progress(name), number, json.dumps(progress))
            if i % 1000 == 999:
                await pipe.execute()
        await pipe.execute()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--contacts', type=int, default=10_000)
    parser.add_argument('--redis-url')
    args = parser.parse_args()
    print_machine()
    with redis_server(args.redis_url) as url:
        client = aredis.Redis.from_url(url, decode_responses=True)
        try:
            await craft_campaign(client, 'bench', args.contacts)
            started = time.perf_counter()
            data = await gather(client, 'bench')
            gathered = time.perf_counter()
            page = render(data)
            rendered = time.perf_counter()
        finally:
            await client.aclose()
    print(
        f'report for {args.contacts} contacts: gather {gathered - started:.2f} s, render {rendered - gathered:.2f} s, '
        f'total {rendered - started:.2f} s, {len(page.encode()) / 1024:.0f} KiB'
    )


if __name__ == '__main__':
    asyncio.run(main())
