"""What a completed call costs the fleet: worker CPU per completed call under a trunk rate limit (issue 16).

    python bench/cost_bench.py [--calls 400] [--cps 20] [--time-scale 0.05] [--repeat 3] [--redis-url URL]

Each scenario runs one ``dialer worker`` (through ``counting.py``, which also counts Lua script runs
by name and arq pickups) against the Ultravox simulator, on one trunk limited to ``--cps`` creates per
second with room for every call (so the rate limit binds), every call answered at once and talking
30 s or 2 minutes (simulated). With ``webhooks``, the simulator sends signed ``call.ended`` webhooks
(the README's registration; ``--billed-webhooks`` adds ``call.billed``) to ``dialer webhooks``;
without, calls end by polling only.

Webhook runs come twice: **warm** (a 20-call campaign runs first, so the receiver has delivered
before the measured campaign starts, as in a fleet that keeps dialling: its calls are on safety polls
from the start) and **cold start** (an empty Redis: until the first call ends no webhook has been
seen, and live calls are polled every ``DIALER_POLL_INTERVAL``). ``--warm-only`` skips the cold one.

Time is scaled to keep the run short: the simulator runs at ``--time-scale`` real seconds per
simulated second, and the dialer's poll settings (``DIALER_POLL_INITIAL``, ``_POLL_INTERVAL``,
``_POLL_SAFETY_INTERVAL``, ``_BILLING_WAIT``, ``_WEBHOOKS_LIVE_WINDOW``) are scaled by the same
factor, so each call sees as many polls as it would in real time. Worker CPU = CPU of every dialer
process (the worker, and the webhook receiver when used; the simulator and Redis excluded), from the
moment the idle worker is given the campaign until the last call is finished, / the calls completed.

Baseline, in the same run: a bare arq worker whose job makes the same create POST and one GET of the
call with aiohttp (the least any dialer must do per call), its jobs spaced at the same rate.
Targets: <= 3x the baseline with webhooks, <= 5x without; <= 4 ms per completed 2-minute call with
webhooks; rate script runs per created call <= 1.2; arq pickups per call <= 2. ``--repeat N`` runs
everything N times, interleaved, and gives the verdicts on the medians too (the figures of a VM move
by +-15 % from one run to the next).

Floor, after the warm 2-minute run with webhooks (the absolute target's scenario; ``--no-floor`` skips
it): the same bare arq job, polling like a dialer worker (every 0.2 s), making exactly the Ultravox
requests that run made per call (the create, its GETs of the call and of the messages; the simulator
ends and bills each call at once, so the reads parse what the dialer's parse) through the client the
dialer must use (httpx over ``dialer.http``), and a bare receiver on the same stack as ``dialer
webhooks`` (uvicorn, Starlette, redis-py) that checks each ``call.ended`` webhook's signature, parses
it and hands it on with one Redis write. What a dialer spends above the floor is its coordination:
fleet-wide limits, records, tracking, retries.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib
import httpx
import psutil
import redis


TALKS = {'30s': 30, '2min': 120}
#: Calls of the warm-up campaign of a warm run (they end before the measured campaign starts).
WARM_UP_CALLS = 20
TARGET_WEBHOOKS, TARGET_POLLING, TARGET_ABSOLUTE_MS = 3.0, 5.0, 4.0


@dataclass
class Figures:
    name: str
    calls: int
    cpu: float
    seconds: float
    scripts: dict[str, int]
    pickups: int
    gets: int
    #: Wake-up announcements the worker received (one pub/sub message each).
    wakeups: int = 0
    receiver_cpu: float = 0.0
    round_trips: int = 0
    requests: dict[str, int] | None = None
    by_command: dict[str, int] | None = None
    #: The worker's garbage collections during the campaign: generation -> (collections, seconds).
    gc: dict[str, tuple[int, float]] | None = None
    #: CPU seconds per second of the idle worker before the campaign (what a fleet costs between campaigns).
    idle_cpu_per_second: float | None = None

    @property
    def ms_per_call(self) -> float:
        return self.cpu / self.calls * 1000 if self.calls else float('nan')


def webhook_events(args: argparse.Namespace) -> tuple[str, ...]:
    """What the simulator delivers: the README's registration, or with ``call.billed`` as well."""
    return (*benchlib.RECOMMENDED_EVENTS, 'call.billed') if args.billed_webhooks else benchlib.RECOMMENDED_EVENTS


def scenario_label(*, webhooks: bool, warm: bool, events: tuple[str, ...]) -> str:
    if not webhooks:
        return 'polling only'
    hooks = f'webhooks ({", ".join(events)})'
    if warm:
        return f'{hooks}, warm (webhooks delivered before the campaign, as in a fleet that keeps dialling)'
    return f'{hooks}, cold start (empty Redis: no webhook seen until the first call ends)'


def cpu_of(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and all their children."""
    total = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            for member in [process, *process.children(recursive=True)]:
                times = member.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def simulator_config(
    talk: int, scale: float, webhook_port: int | None, events: tuple[str, ...] = benchlib.RECOMMENDED_EVENTS
) -> dict[str, Any]:
    config: dict[str, Any] = {
        **benchlib.ALL_ANSWERED,
        'time_scale': scale,
        'ring_min': 0,
        'ring_max': 0,
        'talk_min': talk,
        'talk_max': talk,
        'billing_delay': 5,
        'max_concurrent_calls': 100_000,
    }
    if webhook_port is not None:
        config.update(benchlib.webhook_config(webhook_port, events))
    return config


def scaled_env(scale: float) -> dict[str, str]:
    """The dialer's own timings of a real deployment, run at the simulator's time scale."""
    real = {'DIALER_POLL_INITIAL': 5.0, 'DIALER_POLL_INTERVAL': 5.0, 'DIALER_POLL_SAFETY_INTERVAL': 60.0}
    real['DIALER_BILLING_WAIT'] = 120.0
    real['DIALER_WEBHOOKS_LIVE_WINDOW'] = 900.0
    return {name: f'{value * scale:g}' for name, value in real.items()}


def wait_idle(pids: list[int], settle: float = 1.0, timeout: float = 60) -> None:
    """Until these processes burn (almost) no CPU: imports, connections and warm-up are done."""
    deadline = time.monotonic() + timeout
    last = cpu_of(pids)
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = cpu_of(pids)
        if now - last < 0.1 * settle:
            return
        last = now


def idle_cpu_per_second(pid: int, seconds: float = 5.0) -> float:
    """CPU seconds per second a process burns while it has nothing to do (to 2 ms/s: the kernel counts
    CPU time in 10-ms ticks)."""
    before, started = cpu_of([pid]), time.monotonic()
    time.sleep(seconds)
    return (cpu_of([pid]) - before) / (time.monotonic() - started)


def read_counts(path: Path, pid: int) -> dict[str, Any]:
    """The worker's counts as of now: ``counting.py`` writes them on SIGUSR1 (no periodic writer runs)."""

    def current() -> dict[str, Any]:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return {'scripts': {}, 'pickups': 0, 'round_trips': 0, 'seq': -1}

    seen = current()['seq']
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while (counts := current())['seq'] == seen:
        if time.monotonic() > deadline:
            raise SystemExit('the worker did not write its counts')
        time.sleep(0.02)
    return counts


def warm_up(fleet: Any, work: Path, client: redis.Redis, name: str) -> None:
    """A short campaign before the measured one, so the receiver has delivered (like a fleet that keeps
    dialling): its calls are tracked on safety polls from the start instead of after the first end."""
    from dialer import constants as k  # noqa: PLC0415

    benchlib.load_campaign(fleet, work, f'{name}-warm-up', WARM_UP_CALLS, first=100_000)
    fleet.wait_until_finished(f'{name}-warm-up', timeout=120, poll=0.1)
    deadline = time.monotonic() + 30
    while not client.exists(k.WEBHOOKS_LIVE):
        if time.monotonic() > deadline:
            raise SystemExit('no webhook arrived during the warm-up')
        time.sleep(0.1)


def ours(url: str, work: Path, args: argparse.Namespace, talk: int, *, webhooks: bool, warm: bool = False) -> Figures:
    from simulator.testing import running_simulator  # noqa: PLC0415
    from workers.fleet import LocalFleet  # noqa: PLC0415

    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    hook_port = benchlib.free_port() if webhooks else None
    name = f'cost-{talk}-{"wh" if webhooks else "poll"}{"-warm" if warm else ""}'
    with running_simulator(**simulator_config(talk, args.time_scale, hook_port, webhook_events(args))) as sim:
        env = {
            **benchlib.UNLIMITED_ENV,
            **scaled_env(args.time_scale),
            'DIALER_RATE_SAFETY_MARGIN': '0.05',
        }
        trunks = benchlib.write_trunks(work / 'trunks.toml', 'bench', concurrent=10_000, cps=args.cps)
        fleet = LocalFleet(url, sim.base_url, trunks, env)
        pids: list[int] = []
        receiver = None
        if hook_port is not None:
            receiver = benchlib.start_webhooks(fleet, hook_port, work)
            pids.append(receiver.pid)
        counts = work / f'{name}.json'
        worker_env = {**fleet.env, 'COUNTING_INTERVAL': '0'}
        if args.unfiltered_pickups:
            worker_env['COUNTING_ARQ_UNFILTERED'] = '1'
        worker = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / 'counting.py'), str(counts), 'dialer', 'worker'],
            env=worker_env,
        )
        pids.append(worker.pid)
        try:
            if warm:
                warm_up(fleet, work, client, name)
            wait_idle(pids)
            idle = idle_cpu_per_second(worker.pid)
            # the warm-up's calls and requests are not the measured campaign's
            calls_before, requests_before = len(sim.records()), dict(sim.stats()['requests'])
            before_cpu, before = cpu_of(pids), read_counts(counts, worker.pid)
            receiver_before = cpu_of(pids[:-1])
            started = time.monotonic()
            benchlib.load_campaign(fleet, work, name, args.calls)
            fleet.wait_until_finished(name, timeout=120 + args.calls / args.cps + 5 * talk * args.time_scale, poll=0.1)
            seconds = time.monotonic() - started
            cpu = cpu_of(pids) - before_cpu
            receiver_cpu = cpu_of(pids[:-1]) - receiver_before
            after = read_counts(counts, worker.pid)
        finally:
            fleet.workers.append(worker)
            fleet.stop_all()
            if receiver is not None:
                fleet.stop(receiver)
        requests = {name: n - requests_before.get(name, 0) for name, n in sim.stats()['requests'].items()}
        calls = len(sim.records()) - calls_before
    client.close()
    scripts = {n: after['scripts'].get(n, 0) - before['scripts'].get(n, 0) for n in after['scripts']}
    return Figures(
        name=f'ours, {talk}-s calls, {scenario_label(webhooks=webhooks, warm=warm, events=webhook_events(args))}',
        calls=calls,  # the campaign is completed: every call created has ended and been recorded
        cpu=cpu,
        seconds=seconds,
        scripts=scripts,
        pickups=after['pickups'] - before['pickups'],
        wakeups=after.get('wakeups', 0) - before.get('wakeups', 0),
        gc={
            generation: (
                int(n - before.get('gc', {}).get(generation, (0, 0.0))[0]),
                seconds - before.get('gc', {}).get(generation, (0, 0.0))[1],
            )
            for generation, (n, seconds) in after.get('gc', {}).items()
        },
        gets=int(requests.get('get_call', 0)),
        receiver_cpu=receiver_cpu,
        round_trips=after['round_trips'] - before['round_trips'],
        by_command={
            name: n - before.get('by_command', {}).get(name, 0) for name, n in after.get('by_command', {}).items()
        },
        requests={name: int(n) for name, n in requests.items() if n},
        idle_cpu_per_second=idle,
    )


# --- the baseline: a bare arq job that creates a call and reads it once, with aiohttp ------------------


@dataclass(frozen=True)
class RequestPattern:
    """The Ultravox requests one dialer call made (per completed call, from a measured run)."""

    gets: float
    messages: float

    def label(self) -> str:
        return f'1 create, {self.gets:.2f} GETs of the call, {self.messages:.2f} messages GETs'


def baseline(url: str, args: argparse.Namespace, talk: int, pattern: RequestPattern | None = None) -> Figures:
    """The baseline; with a ``pattern``, the floor: the same bare job making the dialer's requests
    through the client the dialer must use (httpx over ``dialer.http``), and a bare receiver taking
    each call's ``call.ended`` webhook, with no coordination at all."""
    from simulator.testing import running_simulator  # noqa: PLC0415

    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    hook_port = benchlib.free_port() if pattern is not None else None
    config = simulator_config(talk, args.time_scale, hook_port)
    if pattern is not None:
        # calls that end and are billed at once: the floor's reads parse what the dialer's parse (an
        # ended, billed call), without a job waiting for the end (arq re-checks running jobs it holds)
        config.update(talk_min=0, talk_max=0, billing_delay=0)
    with running_simulator(**config) as sim:
        env = {**os.environ, 'COST_BENCH_BASE_URL': sim.base_url, 'COST_BENCH_REDIS_URL': url}
        if pattern is not None:
            env.update(COST_BENCH_GETS=str(pattern.gets), COST_BENCH_MESSAGES=str(pattern.messages))
        processes = [subprocess.Popen([sys.executable, __file__, '--baseline-worker'], env=env)]
        if hook_port is not None:
            processes.append(start_bare_receiver(hook_port, env))
        pids = [process.pid for process in processes]
        try:
            wait_idle(pids)
            before, receiver_before = cpu_of(pids), cpu_of(pids[1:])
            started = time.monotonic()
            asyncio.run(_enqueue_spaced(url, args.calls, args.cps))
            counters = ['bench:done', 'bench:delivered'][: len(processes)]
            deadline = started + 120 + args.calls / args.cps
            while any(int(client.get(counter) or 0) < args.calls for counter in counters):
                if any(process.poll() is not None for process in processes):
                    raise SystemExit('a baseline process stopped')
                if time.monotonic() > deadline:
                    raise SystemExit(f'the baseline did not finish its {args.calls} calls (a job failed?)')
                time.sleep(0.1)
            seconds = time.monotonic() - started
            cpu = cpu_of(pids) - before
            receiver_cpu = cpu_of(pids[1:]) - receiver_before
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
    client.flushdb()
    client.close()
    if pattern is None:
        return Figures('baseline, bare arq + aiohttp POST + GET', args.calls, cpu, seconds, {}, 0, 0)
    name = f'floor, bare arq + httpx over dialer.http making the same requests ({pattern.label()})'
    return Figures(name, args.calls, cpu, seconds, {}, 0, 0, receiver_cpu=receiver_cpu)


async def _enqueue_spaced(url: str, calls: int, cps: float) -> None:
    from arq import create_pool  # noqa: PLC0415
    from arq.connections import RedisSettings  # noqa: PLC0415

    pool = await create_pool(RedisSettings.from_dsn(url))
    await asyncio.gather(*(pool.enqueue_job('create_and_get', i, _defer_by=i / cps) for i in range(calls)))
    await pool.aclose()


def create_body(index: int) -> tuple[str, dict[str, Any]]:
    from pydantic import SecretStr  # noqa: PLC0415

    from dialer.models import CampaignConfig, ContactRecord  # noqa: PLC0415
    from dialer.trunks import TrunkRegistry  # noqa: PLC0415
    from dialer.ultravox import build_create_request  # noqa: PLC0415

    work = Path(tempfile.mkdtemp(prefix='cost-baseline-'))
    registry = TrunkRegistry(benchlib.write_trunks(work / 'trunks.toml', 'bench', concurrent=10, cps=10))
    trunk = next(iter(registry.trunks.values()))
    config = CampaignConfig.model_validate(
        {'name': 'baseline', 'trunk': 'bench', 'agent_id': benchlib.AGENT_ID, 'max_duration': 3600, 'join_timeout': 30}
    )
    contact = ContactRecord(contact_id=f'c{index}', line=index + 2, name='Person', timezone='UTC')
    request = build_create_request(
        config, trunk, SecretStr('bench-s3cret'), '+12122000000', contact, attempt_id=f'baseline:{index}:1', attempt=1
    )
    return request.path, request.body


def start_bare_receiver(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The floor's webhook receiver (a child process), returned once it answers."""
    process = subprocess.Popen([sys.executable, __file__, '--bare-receiver', str(port)], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f'http://127.0.0.1:{port}/health', timeout=1).status_code == 200:
                return process
        time.sleep(0.1)
    process.kill()
    raise SystemExit('the bare receiver did not start')


def bare_receiver(port: int) -> None:
    """The least a receiver of ``call.ended`` webhooks must do: read the body, check its HMAC signature
    and parse it, then hand it on with one Redis write. uvicorn with httptools and uvloop, Starlette,
    redis-py: the stack ``dialer webhooks`` runs on."""
    from datetime import UTC, datetime  # noqa: PLC0415

    import redis.asyncio  # noqa: PLC0415
    import uvicorn  # noqa: PLC0415
    from pydantic import SecretStr  # noqa: PLC0415
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.responses import Response  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    from dialer.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookRejected, verify_webhook  # noqa: PLC0415

    store = redis.asyncio.Redis.from_url(os.environ['COST_BENCH_REDIS_URL'])
    secrets = [SecretStr(benchlib.WEBHOOK_SECRET)]

    async def delivery(request: Any) -> Response:
        body = await request.body()
        headers = request.headers
        try:
            # the signature and freshness check every receiver owes (../shared/ultravox/NOTES.md)
            verify_webhook(
                body,
                headers.get(TIMESTAMP_HEADER),
                headers.get(SIGNATURE_HEADER),
                secrets,
                now=datetime.now(UTC),
                max_age=60,
            )
        except WebhookRejected:
            return Response(status_code=401)
        json.loads(body)
        await store.incr('bench:delivered')
        return Response(status_code=202)

    async def health(_request: Any) -> Response:
        return Response(status_code=200)

    app = Starlette(routes=[Route('/webhooks/ultravox', delivery, methods=['POST']), Route('/health', health)])
    uvicorn.run(
        app, host='127.0.0.1', port=port, loop='uvloop', http='httptools', access_log=False, log_level='warning'
    )


def baseline_worker() -> None:
    """The bare arq worker of the baseline (run as a child process)."""
    import aiohttp  # noqa: PLC0415
    from arq.connections import RedisSettings  # noqa: PLC0415
    from arq.worker import Worker, func  # noqa: PLC0415

    base_url, url = os.environ['COST_BENCH_BASE_URL'], os.environ['COST_BENCH_REDIS_URL']
    path, body = create_body(0)
    headers = {'X-API-Key': 'local-fleet-key', 'Accept': 'application/json'}

    async def startup(ctx: dict[str, Any]) -> None:
        ctx['http'] = aiohttp.ClientSession(base_url)

    async def shutdown(ctx: dict[str, Any]) -> None:
        await ctx['http'].close()

    async def create_and_get(ctx: dict[str, Any], index: int) -> None:
        session: aiohttp.ClientSession = ctx['http']
        payload = {**body, 'metadata': {**body['metadata'], 'attempt_id': f'baseline:{index}:1'}}
        async with session.post(path, json=payload, headers=headers) as response:
            call = await response.json()
        async with session.get(f'/api/calls/{call["callId"]}', headers=headers) as response:
            await response.json()
        await ctx['redis'].incr('bench:done')

    floor = 'COST_BENCH_GETS' in os.environ
    gets, messages = (float(os.environ.get(name, '0')) for name in ('COST_BENCH_GETS', 'COST_BENCH_MESSAGES'))

    async def floor_startup(ctx: dict[str, Any]) -> None:
        from dialer.http import async_client  # noqa: PLC0415

        ctx['http'] = async_client(base_url=base_url, headers=headers)

    async def floor_shutdown(ctx: dict[str, Any]) -> None:
        await ctx['http'].aclose()

    def times(per_call: float, index: int) -> int:
        """Whole requests for this job, so that the jobs together make ``per_call`` each on average."""
        return int(per_call * (index + 1)) - int(per_call * index)

    async def floor_job(ctx: dict[str, Any], index: int) -> None:
        http: httpx.AsyncClient = ctx['http']
        payload = {**body, 'metadata': {**body['metadata'], 'attempt_id': f'baseline:{index}:1'}}
        # raise_for_status: a refused request would make the floor cheaper than the work it stands for
        call_path = f'/api/calls/{(await http.post(path, json=payload)).raise_for_status().json()["callId"]}'
        for _ in range(times(gets, index)):
            (await http.get(call_path)).raise_for_status().json()
        for _ in range(times(messages, index)):
            (await http.get(f'{call_path}/messages')).raise_for_status().json()
        await ctx['redis'].incr('bench:done')

    worker = Worker(
        functions=[func(floor_job if floor else create_and_get, name='create_and_get', keep_result=0)],
        redis_settings=RedisSettings.from_dsn(url),
        on_startup=floor_startup if floor else startup,
        on_shutdown=floor_shutdown if floor else shutdown,
        max_jobs=200,
        # the floor polls like a dialer worker (DIALER_WORKER_POLL_DELAY's default): a job starts up to
        # 0.2 s late, but the floor is not charged for the baseline's 50 polls a second
        poll_delay=0.2 if floor else 0.02,
        keep_result=0,
    )
    worker.run()


def report(figures: Figures, base: Figures | None, created: int) -> None:
    line = f'{figures.name}: {figures.calls} calls in {figures.seconds:.1f} s, CPU {figures.ms_per_call:.2f} ms/call'
    if base is not None:
        line += f' = {figures.ms_per_call / base.ms_per_call:.2f}x the baseline ({base.ms_per_call:.2f} ms)'
    print(line)
    if figures.receiver_cpu:
        worker_ms = (figures.cpu - figures.receiver_cpu) / figures.calls * 1000
        receiver_ms = figures.receiver_cpu / figures.calls * 1000
        print(f'  of which the worker {worker_ms:.2f} ms, the webhook receiver {receiver_ms:.2f} ms')
    if figures.idle_cpu_per_second is not None:
        print(f'  the idle worker before the campaign: {figures.idle_cpu_per_second * 1000:.1f} ms of CPU per second')
    if figures.gc:
        spent = sum(seconds for _, seconds in figures.gc.values()) / max(figures.calls, 1) * 1000
        runs = ', '.join(f'gen {generation} {n}' for generation, (n, _) in sorted(figures.gc.items()))
        print(f'  garbage collection in the worker: {spent:.2f} ms per call ({runs})')
    if figures.scripts:
        per = {name: n / max(created, 1) for name, n in sorted(figures.scripts.items(), key=lambda x: -x[1])}
        print('  script runs per call: ' + ', '.join(f'{name} {value:.2f}' for name, value in per.items()))
        print(
            f'  arq pickups per call: {figures.pickups / max(created, 1):.2f}; '
            f'Ultravox GETs per call: {figures.gets / max(figures.calls, 1):.2f}; '
            f'worker Redis round trips per call: {figures.round_trips / max(figures.calls, 1):.1f}; '
            f'wake-up messages per call: {figures.wakeups / max(figures.calls, 1):.2f}'
        )
    if figures.by_command:
        ranked = sorted(figures.by_command.items(), key=lambda x: -x[1])
        per = ', '.join(f'{name} {n / max(figures.calls, 1):.2f}' for name, n in ranked if n)
        print(f'  worker round trips per call by first command: {per}')
    if figures.requests:
        per = ', '.join(f'{name} {n / max(figures.calls, 1):.2f}' for name, n in sorted(figures.requests.items()))
        print(f'  simulator requests per call: {per}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--calls', type=int, default=400, help='calls per scenario')
    parser.add_argument('--cps', type=float, default=20, help="the trunk's rate limit (creates per second)")
    parser.add_argument('--time-scale', type=float, default=0.05, help='real seconds per simulated second')
    parser.add_argument('--talks', default='30s,2min', help=f'comma-separated, of {sorted(TALKS)}')
    parser.add_argument('--no-polling-runs', action='store_true', help='only the runs with webhooks')
    parser.add_argument('--warm-only', action='store_true', help='webhook runs: only the warm one, not the cold start')
    parser.add_argument(
        '--billed-webhooks', action='store_true', help='register call.billed too (one more delivery per call)'
    )
    parser.add_argument('--unfiltered-pickups', action='store_true', help="arq's own pickup (before issue 16)")
    parser.add_argument(
        '--repeat', type=int, default=1, help='rounds (baseline + every scenario each); >1 also prints medians'
    )
    parser.add_argument(
        '--no-floor', action='store_true', help='skip the floor run after the warm 2-minute run with webhooks'
    )
    parser.add_argument('--redis-url', default=None, help='default: a private redis-server on a free port')
    parser.add_argument('--baseline-worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--bare-receiver', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_worker:
        baseline_worker()
        return
    if args.bare_receiver:
        bare_receiver(args.bare_receiver)
        return
    benchlib.print_machine()
    #: each run's ms per call and, for ours, its ratio to the baseline of the same round
    rounds: dict[str, list[tuple[float, float]]] = {}
    #: each round's floor for the absolute target's scenario
    floors: list[float] = []
    with tempfile.TemporaryDirectory(prefix='cost-bench-') as tmp, benchlib.redis_server(args.redis_url) as url:
        work = Path(tmp)
        for round_number in range(1, args.repeat + 1):
            if args.repeat > 1:
                print(f'--- round {round_number} of {args.repeat}')
            # the baseline's cost does not depend on how long its calls last: measured once a round
            base = baseline(url, args, TALKS['30s'])
            report(base, None, base.calls)
            rounds.setdefault(BASELINE, []).append((base.ms_per_call, 1.0))
            for talk, webhooks, warm in scenarios(args):
                figures = ours(url, work, args, talk, webhooks=webhooks, warm=warm)
                report(figures, base, figures.scripts.get('created', figures.calls))
                ratio = figures.ms_per_call / base.ms_per_call
                verdicts(figures.ms_per_call, ratio, talk=talk, webhooks=webhooks)
                rounds.setdefault(figures.name, []).append((figures.ms_per_call, ratio))
                if webhooks and warm and talk == TALKS['2min'] and not args.no_floor:
                    floors.append(report_floor(url, args, figures))
    if args.repeat > 1:
        report_medians(rounds, args)
        if floors:
            print(f'floor (median): {statistics.median(floors):.2f} ms/call')
    benchlib.print_machine()


BASELINE = 'baseline'


def scenarios(args: argparse.Namespace) -> list[tuple[int, bool, bool]]:
    """(talk seconds, webhooks, warm) of each measured run, in the order they run."""
    runs = [(True, True), (True, False)] + ([] if args.no_polling_runs else [(False, False)])
    if args.warm_only:
        runs = [run for run in runs if run[1] or not run[0]]
    return [(TALKS[label], webhooks, warm) for label in args.talks.split(',') for webhooks, warm in runs]


def report_floor(url: str, args: argparse.Namespace, ours_figures: Figures) -> float:
    """The least the absolute target's scenario can cost with the libraries the dialer must use: the
    requests this run made per call, from a bare arq job through httpx over ``dialer.http``, and a bare
    receiver taking each call's webhook (no coordination, no tracking, no recording). Returns its ms
    per call."""
    requests, calls = ours_figures.requests or {}, max(ours_figures.calls, 1)
    pattern = RequestPattern(requests.get('get_call', 0) / calls, requests.get('list_messages', 0) / calls)
    figures = baseline(url, args, TALKS['2min'], pattern)
    report(figures, None, figures.calls)
    floor = figures.ms_per_call
    print(
        f'  the run above spent {ours_figures.ms_per_call - floor:.2f} ms more ({ours_figures.ms_per_call:.2f} ms '
        f'= {ours_figures.ms_per_call / floor:.2f}x the floor) on its coordination; the {TARGET_ABSOLUTE_MS:g}-ms '
        f'target leaves {TARGET_ABSOLUTE_MS - floor:.2f} ms for it'
    )
    return floor


def verdicts(ms_per_call: float, ratio: float, *, talk: int, webhooks: bool) -> None:
    target = TARGET_WEBHOOKS if webhooks else TARGET_POLLING
    print(f'  target <= {target:g}x the baseline: {"met" if ratio <= target else "MISSED"}')
    if webhooks and talk == TALKS['2min']:
        verdict = 'met' if ms_per_call <= TARGET_ABSOLUTE_MS else 'MISSED'
        print(f'  target <= {TARGET_ABSOLUTE_MS:g} ms per completed 2-minute call: {verdict}')


def report_medians(rounds: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> None:
    """Each run's median over the rounds, and the verdicts on them: this VM's speed moves by +-15 %
    from one run to the next, so one round's verdict can flip either way. Ratios are each round's own
    (a run against the baseline measured minutes before it), then the median of those."""
    base = statistics.median(ms for ms, _ in rounds.pop(BASELINE))
    print(f'--- medians over {args.repeat} rounds (each round: the baseline, then every scenario)')
    print(f'{BASELINE}: {base:.2f} ms/call')
    for (talk, webhooks, _), (name, runs) in zip(scenarios(args), rounds.items(), strict=True):
        ms, ratio = statistics.median(ms for ms, _ in runs), statistics.median(ratio for _, ratio in runs)
        each = ', '.join(f'{ms:.2f} ms = {ratio:.2f}x' for ms, ratio in runs)
        print(f'{name}: {ms:.2f} ms/call, {ratio:.2f}x the baseline (rounds: {each})')
        verdicts(ms, ratio, talk=talk, webhooks=webhooks)


if __name__ == '__main__':
    main()
