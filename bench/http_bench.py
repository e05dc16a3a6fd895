"""CPU per request of the outbound HTTP stacks the worker could use, on the dialer's request pattern.

    python bench/http_bench.py [--pairs 2000] [--concurrency 50]

Against the Ultravox simulator (its own process, not measured): ``--pairs`` times a create POST and
a GET of the new call, ``--concurrency`` at a time, through each of: httpx with its own transport
(httpcore over anyio), httpx over the httpx-aiohttp package's transport (when installed), httpx over
``dialer.http`` (what the dialer uses), and bare aiohttp (the floor). Prints this process's CPU time
per request for each (time.process_time, so other processes on the machine do not count).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import time
from typing import TYPE_CHECKING, Any

import benchlib
import httpx


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

from cost_bench import create_body

from dialer.http import async_client


HEADERS = {'X-API-Key': 'bench-key', 'Accept': 'application/json'}
PATH, BODY = create_body(0)


async def _pairs(pairs: int, concurrency: int, pair: Callable[[int], Awaitable[None]]) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await pair(i)

    await asyncio.gather(*(one(i) for i in range(20)))  # warm: connections open, code paths loaded
    start = time.process_time()
    await asyncio.gather(*(one(i) for i in range(pairs)))
    return (time.process_time() - start) / (2 * pairs)


async def with_httpx(client: httpx.AsyncClient, pairs: int, concurrency: int) -> float:
    async def pair(i: int) -> None:
        body = {**BODY, 'metadata': {**BODY['metadata'], 'attempt_id': f'b:{i}'}}
        call = (await client.post(PATH, json=body)).json()
        (await client.get(f'/api/calls/{call["callId"]}')).raise_for_status()

    async with client:
        return await _pairs(pairs, concurrency, pair)


async def with_aiohttp(base_url: str, pairs: int, concurrency: int) -> float:
    import aiohttp  # noqa: PLC0415

    async with aiohttp.ClientSession(base_url, headers=HEADERS) as session:

        async def pair(i: int) -> None:
            body = {**BODY, 'metadata': {**BODY['metadata'], 'attempt_id': f'b:{i}'}}
            async with session.post(PATH, json=body) as response:
                call = await response.json()
            async with session.get(f'/api/calls/{call["callId"]}') as response:
                await response.read()

        return await _pairs(pairs, concurrency, pair)


def main() -> None:
    from simulator.testing import running_simulator  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pairs', type=int, default=2000)
    parser.add_argument('--concurrency', type=int, default=50)
    parser.add_argument('--uvloop', action='store_true', help='run the clients on uvloop')
    args = parser.parse_args()
    benchlib.print_machine()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    with running_simulator(**benchlib.ALL_ANSWERED, time_scale=0.0001, ring_min=0, ring_max=0) as sim:
        url = sim.base_url
        stacks: dict[str, Callable[[], Awaitable[float]]] = {
            'httpx (httpcore + anyio)': lambda: with_httpx(
                httpx.AsyncClient(base_url=url, headers=HEADERS, limits=limits), args.pairs, args.concurrency
            ),
            'httpx over dialer.http (aiohttp)': lambda: with_httpx(
                async_client(base_url=url, headers=HEADERS, max_connections=200), args.pairs, args.concurrency
            ),
            'bare aiohttp': lambda: with_aiohttp(url, args.pairs, args.concurrency),
        }
        if importlib.util.find_spec('httpx_aiohttp') is not None:
            from httpx_aiohttp import AiohttpTransport  # noqa: PLC0415

            stacks['httpx over httpx-aiohttp'] = lambda: with_httpx(
                httpx.AsyncClient(base_url=url, headers=HEADERS, transport=AiohttpTransport(limits=limits)),
                args.pairs,
                args.concurrency,
            )
        runner: Any = asyncio.run
        if args.uvloop:
            import uvloop  # noqa: PLC0415

            runner = uvloop.run
        for name, run in stacks.items():
            seconds = runner(run())
            print(f'{name}: {seconds * 1e6:.0f} µs CPU per request')


if __name__ == '__main__':
    main()
