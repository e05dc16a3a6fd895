"""Call-back routing latency: the SIP fallback handler answering with 1,000,000 indexed numbers.

Fills a Redis database with ``--numbers`` dialled numbers spread over ``--campaigns`` campaigns (the
index entries ``send.lua`` writes and the contacts they point to), then sends ``--requests`` signed
fallback-handler requests for random indexed numbers (and a share of unknown callers) to the webhook
app in process (ASGI, no network hop) and prints p50/p99/max of the handler's answer time.

    python bench/callback_bench.py --redis-url redis://127.0.0.1:6379/15 --numbers 1000000

The database given is flushed first: never point it at a live one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pydantic import SecretStr
from redis.asyncio import Redis

from campaigns.lifecycle import save_config
from dialer import constants as k
from dialer.logs import configure_logging
from dialer.models import CampaignConfig, ContactRecord
from dialer.settings import Settings
from dialer.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook
from workers.runtime import Runtime
from workers.webhooks import build_webhook_app


SECRET = 'bench-fallback-secret-0123456789'
AGENT = '6f9a1c3e-8a39-4bb6-9a55-0f3d5d8e2a10'
BATCH = 10_000


def number(i: int) -> str:
    # valid US numbers: area codes 201-989, exchange 200-999
    area, rest = divmod(i, 8_000_000)
    exchange, line = divmod(rest, 10_000)
    return f'+1{201 + area}{200 + exchange}{line:04d}'


async def fill(redis: Redis, numbers: int, campaigns: int) -> None:
    await redis.flushdb()
    names = [f'bench{c}' for c in range(campaigns)]
    for name in names:
        await save_config(redis, CampaignConfig(name=name, trunk='t', agent_id=AGENT))
        await redis.hset(k.campaign(name), 'state', 'active')
    now = int(time.time() * 1000)
    for start in range(0, numbers, BATCH):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + BATCH, numbers)):
                phone, name = number(i), names[i % campaigns]
                contact = ContactRecord(contact_id=f'id{i}', line=i + 2, context={'plan': 'gold'}).dump()
                pipe.hset(k.campaign_contacts(name), phone, contact)
                entry = {'c': name, 'i': f'id{i}', 'a': f'{name}:{phone}:1', 'f': '+14155550100', 't': now}
                pipe.set(k.callback(phone), json.dumps(entry), px=86_400_000)
            await pipe.execute()
        print(f'\rindexed {min(start + BATCH, numbers):,} numbers', end='', file=sys.stderr)
    print(file=sys.stderr)


async def measure(settings: Settings, numbers: int, requests: int, unknown_share: float) -> list[float]:
    rt = Runtime.create(settings)
    app = build_webhook_app(rt)
    rng = random.Random(7)
    timings: list[float] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url='http://bench') as client:
        for n in range(requests):
            unknown = rng.random() < unknown_share
            caller = '+12025550199' if unknown else number(rng.randrange(numbers))
            body = json.dumps({'callerId': caller, 'fromDisplayName': None, 'fromUri': f'sip:{caller}@c.example',
                               'toUri': 'sip:callbacks@x', 'sipHeaders': {}, 'n': n}).encode()  # fmt: skip
            stamp = datetime.now(UTC).isoformat()
            headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign_webhook(body, stamp, SECRET)}
            started = time.perf_counter()
            response = await client.post('/sip/fallback', content=body, headers=headers)
            timings.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise SystemExit(f'unexpected answer {response.status_code}: {response.text}')
    await rt.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--redis-url', default='redis://127.0.0.1:6379/15')
    parser.add_argument('--numbers', type=int, default=1_000_000)
    parser.add_argument('--campaigns', type=int, default=10)
    parser.add_argument('--requests', type=int, default=5_000)
    parser.add_argument('--unknown-share', type=float, default=0.1)
    parser.add_argument('--skip-fill', action='store_true', help='reuse the numbers indexed by a previous run')
    args = parser.parse_args()
    configure_logging('warning')
    trunks = Path(tempfile.mkdtemp()) / 'trunks.toml'
    trunks.write_text(
        '[trunks.t]\nhost = "sip.bench.example"\nfrom = "+14155550100"\nmax_concurrent = 10\ncalls_per_second = 10\n'
    )
    settings = Settings(
        redis_url=args.redis_url,
        trunks_file=trunks,
        sip_fallback_secrets=[SecretStr(SECRET)],
        webhook_secrets=[SecretStr(SECRET)],
        ultravox_base_url='http://127.0.0.1:9',
        metrics_port=0,
        poll_initial=3600,
    )

    async def go() -> list[float]:
        if not args.skip_fill:
            redis = Redis.from_url(args.redis_url)
            await fill(redis, args.numbers, args.campaigns)
            await redis.aclose()
        return await measure(settings, args.numbers, args.requests, args.unknown_share)

    timings = sorted(asyncio.run(go()))
    p50 = statistics.median(timings) * 1000
    p99 = timings[int(len(timings) * 0.99) - 1] * 1000
    print(f'{args.numbers:,} indexed numbers, {len(timings):,} requests: '
          f'p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {timings[-1] * 1000:.2f} ms')  # fmt: skip


if __name__ == '__main__':
    main()
