"""Tracking benchmark: ONE worker process holding ``--calls`` live calls, with or without webhooks (issue 16).

    python bench/tracking_bench.py [--calls 10000] [--cps 50] [--talk 240] [--polling] [--redis-url URL]

The simulator runs in real time (time scale 1), every call is answered at once and talks ``--talk``
seconds; one trunk creates ``--cps`` calls per second, so with ``--talk`` >= ``--calls / --cps`` all
calls are live at once at the end of the ramp. One ``dialer worker`` (the project's defaults: 5 s
polls, 60 s safety polls) tracks them all, then every call ends.

With webhooks (the default): the simulator signs and sends ``call.ended`` / ``call.billed`` to
``dialer webhooks`` at each call's end. A short warm-up campaign runs first, so webhooks have been
delivered when the big campaign starts (a fleet that keeps dialling; a cold fleet polls its first
calls every 5 s until the first call ends). Printed: the ramp, the worker's CPU and RSS and the GETs
while all calls are live, and for every call the lag from its end (the moment the simulator sends
``call.ended``, so the lag from the webhook is at most this) to its end being recorded in Redis:
p50 / p99 / max, and how many took longer than 2 s (target: none).

``--polling``: no webhooks; the polls per call per ``DIALER_POLL_INTERVAL`` while all calls are live
(the interval allows 1.00) and the same end -> record lag are printed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path

import benchlib
import httpx
import redis

from dialer import constants as k


TARGET_RSS_MB = 300
TARGET_LAG_S = 2.0
POLL_INTERVAL_S = 5.0
WARM_UP_CALLS = 20


def warm_up(fleet: object, sim: object, work: Path, client: redis.Redis, talk: float) -> None:
    """A 20-call campaign of 1-s calls, until the receiver has delivered; then calls of ``talk`` seconds."""
    sim.configure(talk_min=1, talk_max=1)  # type: ignore[attr-defined]
    benchlib.load_campaign(fleet, work, 'warm-up', WARM_UP_CALLS, first=500_000)  # type: ignore[arg-type]
    fleet.wait_until_finished('warm-up', timeout=120, poll=0.2)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while not client.exists(k.WEBHOOKS_LIVE):
        if time.monotonic() > deadline:
            raise SystemExit('no webhook arrived during the warm-up')
        time.sleep(0.1)
    sim.configure(talk_min=talk, talk_max=talk)  # type: ignore[attr-defined]


def worker_gets(port: int) -> float:
    """GETs of calls the worker has made (``dialer_ultravox_responses_total{endpoint="get"}``)."""
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=30) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith('dialer_ultravox_responses_total{') and 'endpoint="get"' in line:
            total += float(line.rsplit(' ', 1)[1])
    return total


def warning_counts(log: Path) -> dict[str, int]:
    """Warning events in the worker's log, by event name and error class (what slowed it down, if anything)."""
    counts: dict[str, int] = {}
    if log.exists():
        for line in log.read_text(errors='replace').splitlines():
            if '[warning' in line or '[error' in line:
                words = line.split()
                event = next((w for w in words[2:] if not w.startswith('[')), '?')
                error = next((w.split('=', 1)[1][:40] for w in words if w.startswith('error=')), '')
                key = f'{event} {error}'.strip()
                counts[key] = counts.get(key, 0) + 1
    return counts


def end_lags(client: redis.Redis, campaign: str, ended: dict[str, float]) -> list[float]:
    """Seconds from each call's end (simulator, real epoch) to its end recorded in Redis (``eo``)."""
    lags = []
    for field, raw in client.hscan_iter(k.campaign_attempts(campaign), count=1000):
        record = json.loads(raw)
        end = ended.get(record.get('call') or '')
        if end is not None and record.get('eo') is not None:
            lags.append(record['eo'] / 1000 - end)
        del field
    return lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--calls', type=int, default=10_000)
    parser.add_argument('--cps', type=float, default=40.0, help="the trunk's creates per second")
    parser.add_argument('--talk', type=float, default=300.0, help='seconds every call lasts')
    parser.add_argument('--measure', type=float, default=20.0, help='seconds measured while all calls are live')
    parser.add_argument('--polling', action='store_true', help='no webhooks: polling alone')
    parser.add_argument('--redis-url', default=None, help='default: a private redis-server on a free port')
    args = parser.parse_args()

    from simulator.testing import running_simulator  # noqa: PLC0415
    from workers.fleet import LocalFleet  # noqa: PLC0415

    benchlib.print_machine()
    webhooks = not args.polling
    hook_port = benchlib.free_port() if webhooks else None
    simulator = {
        'time_scale': 1.0,
        **benchlib.ALL_ANSWERED,
        'ring_min': 0,
        'ring_max': 0,
        'talk_min': args.talk,
        'talk_max': args.talk,
        'billing_delay': 2,
        'max_concurrent_calls': 1_000_000,
        **(benchlib.webhook_config(hook_port) if hook_port is not None else {}),
    }
    with (
        tempfile.TemporaryDirectory(prefix='tracking-bench-') as tmp,
        benchlib.redis_server(args.redis_url) as url,
        running_simulator(**simulator) as sim,
    ):
        work = Path(tmp)
        client = redis.Redis.from_url(url, decode_responses=True)
        trunks = benchlib.write_trunks(work / 'trunks.toml', 'bench', concurrent=args.calls * 2, cps=args.cps)
        fleet = LocalFleet(url, sim.base_url, trunks, dict(benchlib.UNLIMITED_ENV), log_dir=work)
        receiver = benchlib.start_webhooks(fleet, hook_port, work) if hook_port is not None else None
        metrics_port = benchlib.free_port()
        worker = fleet.start_worker(DIALER_METRICS_PORT=str(metrics_port))
        try:
            time.sleep(3)
            idle_rss = benchlib.rss_mb(worker.pid)
            if webhooks:
                warm_up(fleet, sim, work, client, args.talk)
            cpu_start = benchlib.cpu_seconds(worker.pid)
            receiver_start = benchlib.cpu_seconds(receiver.pid) if receiver is not None else 0.0
            started = time.monotonic()
            benchlib.load_campaign(fleet, work, 'tracking', args.calls)
            peak = idle_rss
            while int(client.hget(k.campaign('tracking'), 'calls') or 0) < args.calls:
                if worker.poll() is not None:
                    raise SystemExit(f'the worker exited with {worker.returncode}')
                peak = max(peak, benchlib.rss_mb(worker.pid))
                time.sleep(0.5)
            ramp = time.monotonic() - started
            live = int(client.hget(k.campaign('tracking'), 'n:in_call') or 0)
            print(f'{args.calls} calls created in {ramp:.0f} s ({args.calls / ramp:.1f}/s); {live} live at once')

            # counted by the worker (its /metrics): the simulator is too busy with 10,000 calls to be asked
            gets_before = worker_gets(metrics_port)
            cpu_before, t0 = benchlib.cpu_seconds(worker.pid), time.monotonic()
            rss: list[float] = []
            lives: list[int] = []
            while time.monotonic() - t0 < args.measure:
                rss.append(benchlib.rss_mb(worker.pid))
                lives.append(int(client.hget(k.campaign('tracking'), 'n:in_call') or 0))
                time.sleep(1)
            elapsed = time.monotonic() - t0
            hold_cpu = benchlib.cpu_seconds(worker.pid) - cpu_before
            hold_gets = worker_gets(metrics_port) - gets_before

            fleet.wait_until_finished('tracking', timeout=args.talk * 3 + args.calls / args.cps + 600, poll=1)
            total = time.monotonic() - started
            cpu = benchlib.cpu_seconds(worker.pid) - cpu_start
            receiver_cpu = benchlib.cpu_seconds(receiver.pid) - receiver_start if receiver is not None else 0.0
            records = [r for r in sim.records() if (r.get('metadata') or {}).get('campaign') == 'tracking']
            ended = {str(r['callId']): float(r['ended']) for r in records}
            lags = end_lags(client, 'tracking', ended)
            try:
                stats = sim.stats()
            except httpx.HTTPError as exc:
                stats = {'requests': f'unavailable ({type(exc).__name__})'}
        finally:
            warnings = warning_counts(work / 'worker-0.log')
            # calls may still be in flight after a failure: do not wait out the shutdown grace for them
            fleet.stop(worker, timeout=15)
            if receiver is not None:
                fleet.stop(receiver)
            client.close()

    mean_live = sum(lives) / max(len(lives), 1)
    print(f'while {min(lives)}-{max(lives)} calls were live ({elapsed:.0f} s measured):')
    print(
        f'  worker RSS {max(rss):.0f} MB peak (ramp {peak:.0f} MB; idle {idle_rss:.0f} MB; target < {TARGET_RSS_MB} MB)'
    )
    per_interval = hold_gets / elapsed * POLL_INTERVAL_S / max(mean_live, 1)
    print(
        f'  Ultravox GETs {hold_gets:.0f} = {hold_gets / elapsed:.0f}/s = {per_interval:.3f} per call per '
        f'{POLL_INTERVAL_S:g} s (polling alone allows 1.00; safety polls every 60 s are 0.083)'
    )
    print(f'  worker CPU {hold_cpu / elapsed * 100:.0f}% of one core')
    print(f'whole run ({total:.0f} s, {len(records)} calls):')
    print(f'  worker CPU {cpu:.1f} s = {cpu / max(len(records), 1) * 1000:.2f} ms per completed call', end='')
    print(f'; webhook receiver {receiver_cpu / max(len(records), 1) * 1000:.2f} ms per call' if webhooks else '')
    late = sum(1 for lag in lags if lag > TARGET_LAG_S)
    verdict = (' (target: none): ' + ('met' if late == 0 else 'MISSED')) if webhooks else ''
    print(
        f'  end -> recorded, {len(lags)} calls: p50 {benchlib.percentile(lags, 50):.3f} s, '
        f'p99 {benchlib.percentile(lags, 99):.3f} s, max {max(lags, default=float("nan")):.3f} s; '
        f'{late} over {TARGET_LAG_S:g} s{verdict}'
    )
    print(f'  simulator requests: {stats["requests"]}; webhooks: {stats.get("webhooks", "-")}')
    print(f'  worker warnings: {warnings or "none"}')
    benchlib.print_machine()


if __name__ == '__main__':
    main()
