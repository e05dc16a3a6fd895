"""Fault benchmark (issue 10): the five fault classes of ``tests/test_faults.py`` at a larger scale.

    python bench/fault_bench.py [--contacts 1000] [--classes outage,slow,account,webhook,trunk]
                                [--redis-url redis://127.0.0.1:6379/8] [--json]

Each class runs its own campaign of ``--contacts`` contacts against a fresh simulator and a fresh
Redis (``--redis-url`` is flushed before each class; without it a private ``redis-server``), with two
workers, and injects its fault while the campaign is running, then clears it:

- outage: a private valkey (append-only, fsync always) is stopped for longer than the workers' retry
  window (``DIALER_REDIS_RETRY_SECONDS`` 1.5 s; each worker must restart its run loop twice), then
  started again on the same port and data;
- slow: 30 % of creates are answered 3 s late while the client's read timeout is 1 s (the simulator
  completes them anyway), quarantine 20 s; cleared at 70 % of the contacts done;
- account: one campaign (1 attempt per contact: an attempt spent on the fault closes the contact)
  through four faults in turn, each cleared after the workers' probes saw it at least 4 times:
  wrong API key (401), payment required (402), account disabled (403), agent deleted (404);
- webhook: signed ``call.ended`` webhooks forged for every live call (one naming a foreign call id,
  one naming the real call with a false outcome and 600 s of billing) until 60 % are done;
- trunk: the campaign's trunk leaves the trunks file at 30 % done, comes back once every claimed
  attempt was handed back, the live calls ended, and nothing was created for ``--blocked`` seconds.

Prints per class: faults injected (simulator stats and the bench's own counts), creates, duplicates
(attempt ids created more than once, and calls to one contact overlapping in time), lost (contacts
not terminal at the end), spent (contacts with more attempts ended than calls made: an attempt spent
without a call), export mismatches (calls at the simulator missing from ``campaign export`` or the
reverse), recovery (clearing -> first new create, clearing -> campaign end) and, for the slow class,
the ambiguous creates and how they were resolved (workers' ``dialer_ambiguous_creates_total`` and the
attempt records in Redis). Exit code 1 on any duplicate, loss, spent attempt or unfinished campaign.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import WEBHOOK_SECRET, machine, print_machine, redis_server, start_webhooks, webhook_config  # noqa: E402

from dialer import constants as k  # noqa: E402
from dialer.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook  # noqa: E402
from simulator.testing import free_port, running_simulator  # noqa: E402
from tests.fleet_helpers import (  # noqa: E402
    FAST_ENV,
    FAST_SIMULATOR,
    creates_per_attempt,
    read_export,
    start_valkey,
    wait_for,
    write_campaign_file,
    write_contacts,
    write_trunks,
)
from workers.fleet import LocalFleet  # noqa: E402


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from simulator.testing import SimulatorHandle

AGENT = '6f9a1c3e-8a39-4bb6-9a55-0f3d5d8e2a10'
WORKERS = 2
#: simulator config while faulty, once fixed; the refusal the simulator counts; the hold reason expected
ACCOUNT_FAULTS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    'wrong key (401)': ({'api_key': 'the-right-key'}, {'api_key': None}, 'auth_401'),
    'payment required (402)': ({'account_state': 'payment_required'}, {'account_state': 'active'}, 'payment_402'),
    'account disabled (403)': ({'account_state': 'disabled'}, {'account_state': 'active'}, 'disabled_403'),
    'agent deleted (404)': ({'known_agents': []}, {'known_agents': [AGENT]}, 'not_found_404'),
}


class Scenario:
    """One class's campaign: files, fleet with per-worker metrics ports, and the figures common to all."""

    def __init__(self, args: argparse.Namespace, work: Path, url: str, sim: SimulatorHandle, name: str) -> None:
        self.args, self.work, self.url, self.sim, self.name = args, work, url, sim, name
        self.contacts = args.contacts
        self.trunks_file = work / 'trunks.toml'
        self.fleet: LocalFleet | None = None
        self.metrics_ports: list[int] = []
        self.cleared_at = 0.0
        self.finished_at = 0.0
        self.finished = False

    def start(
        self,
        env: dict[str, str],
        trunks: dict[str, tuple[int, float]],
        *,
        max_attempts: int = 2,
    ) -> LocalFleet:
        write_trunks(self.trunks_file, f'sip.{self.name}.example', trunks)
        self.fleet = LocalFleet(self.url, self.sim.base_url, self.trunks_file, {**FAST_ENV, **env}, log_dir=self.work)
        write_contacts(self.work / f'{self.name}.csv', self.contacts)
        campaign = write_campaign_file(
            self.work / f'{self.name}.toml', self.name, next(iter(trunks)), max_attempts=max_attempts
        )
        self.fleet.cli('campaign', 'load', str(self.work / f'{self.name}.csv'), '--campaign-file', str(campaign))
        for _ in range(WORKERS):
            port = free_port()
            self.metrics_ports.append(port)
            self.fleet.start_worker(DIALER_METRICS_PORT=str(port))
        return self.fleet

    def campaign(self) -> dict[str, str]:
        assert self.fleet is not None
        return self.fleet.campaign(self.name)

    def done(self) -> int:
        return int(self.campaign().get('n:done', 0))

    def clear(self) -> None:
        self.cleared_at = time.time()

    def wait_finished(self) -> dict[str, str]:
        assert self.fleet is not None
        try:
            final = self.fleet.wait_until_finished(self.name, timeout=self.args.timeout, poll=0.1)
            self.finished = True
        except TimeoutError:
            final = self.campaign()
        self.finished_at = time.time()
        return final

    def scrape(self, metric: str) -> dict[str, float]:
        """``metric`` summed over the workers, by its labels other than ``trunk`` (the whole metric under '')."""
        totals: dict[str, float] = defaultdict(float)
        for port in self.metrics_ports:
            with contextlib.suppress(httpx.HTTPError):
                text = httpx.get(f'http://127.0.0.1:{port}/metrics', timeout=5).text
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        if sample.name in {metric, metric + '_total'}:
                            labels = ','.join(v for key, v in sorted(sample.labels.items()) if key != 'trunk')
                            totals[labels] += sample.value
        return dict(totals)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        assert self.fleet is not None
        try:
            yield
        finally:
            self.fleet.stop_all()

    def figures(self, final: dict[str, str]) -> dict[str, Any]:
        """What every class reports: creates, duplicates, lost, spent, export mismatches, recovery."""
        assert self.fleet is not None
        records = [r for r in self.sim.records() if r['metadata'].get('campaign') == self.name]
        calls_by_number: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            calls_by_number[record['metadata']['attempt_id'].split(':')[1]].append(record)
        # a later call to the same person created before the earlier one ended: a redial of a live call
        overlapping = 0
        for calls in calls_by_number.values():
            ordered = sorted(calls, key=lambda r: r['created'])
            overlapping += sum(1 for a, b in itertools.pairwise(ordered) if b['created'] < a['ended'])
        with redis.Redis.from_url(self.url, decode_responses=True) as client:
            progress = {n: json.loads(raw) for n, raw in client.hgetall(k.campaign_progress(self.name)).items()}
        spent = sum(1 for number, p in progress.items() if int(p.get('a', 0)) > len(calls_by_number.get(number, [])))
        export = self.work / f'{self.name}-export.csv'
        self.fleet.cli('campaign', 'export', self.name, '--output', str(export))
        exported = {call for row in read_export(export) for call in row['call_ids'].split(';') if call}
        created_after = [r['created'] for r in records if r['created'] >= self.cleared_at]
        return {
            'contacts': self.contacts,
            'finished': self.finished,
            'creates': len(records),
            'duplicates': sum(1 for n in creates_per_attempt(records).values() if n > 1),
            'overlapping_calls': overlapping,
            'lost': self.contacts - int(final.get('n:done', 0)),
            'spent': spent,
            'export_mismatches': len(exported ^ {r['callId'] for r in records}),
            'recovery_first_create_s': round(min(created_after) - self.cleared_at, 2) if created_after else None,
            'recovery_end_s': round(self.finished_at - self.cleared_at, 2),
            'outcomes': {key[2:]: int(v) for key, v in final.items() if key.startswith('o:') and v != '0'},
        }


def wait_calls(scenario: Scenario, share: float) -> None:
    target = int(scenario.contacts * share)
    wait_for(lambda: int(scenario.campaign().get('calls', 0)) >= target, scenario.args.timeout, f'{target} calls')


def outage(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    port = free_port()
    (work / 'valkey').mkdir()
    server = start_valkey(port, work / 'valkey')
    url = f'redis://127.0.0.1:{port}/0'
    # arq keeps a job's in-progress mark for the job timeout + 10 s: short, so cut-off jobs run again soon
    env = {'DIALER_REDIS_RETRY_SECONDS': '1.5', 'DIALER_DIAL_JOB_TIMEOUT': '8'}
    try:
        with running_simulator(**FAST_SIMULATOR) as sim:
            scenario = Scenario(args, work, url, sim, 'outage')
            fleet = scenario.start(env, {'o': (40, 100.0)})
            with scenario.running():
                wait_calls(scenario, 0.2)
                down = time.time()
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=30)
                restarts = lambda: scenario.scrape('dialer_worker_restarts').get('', 0)  # noqa: E731
                wait_for(lambda: restarts() >= 2 * WORKERS, args.timeout, 'every worker to restart twice')
                time.sleep(max(0.0, args.outage - (time.time() - down)))
                server = start_valkey(port, work / 'valkey')
                scenario.clear()
                final = scenario.wait_finished()
                alive = sum(1 for worker in fleet.workers if worker.poll() is None)
                restarted = restarts()
            figures = scenario.figures(final)
            created_while_down = sum(1 for r in sim.records() if down <= r['created'] < scenario.cleared_at)
    finally:
        server.terminate()
        server.wait()
    logs = ''.join(path.read_text(errors='replace') for path in work.glob('worker-*.log'))
    injected = {
        'outage_s': round(scenario.cleared_at - down, 1),
        'worker_restarts': int(restarted),
        'creates_while_down': created_while_down,
        'workers_alive_at_end': f'{alive}/{WORKERS}',
        'address_in_use_logs': logs.count('Address already in use'),
    }
    return {'injected': injected, **figures}


def slow(args: argparse.Namespace, work: Path, url: str) -> dict[str, Any]:
    env = {'DIALER_ULTRAVOX_READ_TIMEOUT': '1', 'DIALER_AMBIGUOUS_QUARANTINE': '20', 'DIALER_DIAL_JOB_TIMEOUT': '10'}
    with running_simulator(**FAST_SIMULATOR, slow_rate=0.3, slow_seconds=3.0) as sim:
        scenario = Scenario(args, work, url, sim, 'slow')
        scenario.start(env, {'s': (60, 100.0)})
        with scenario.running():
            wait_for(lambda: scenario.done() >= 0.7 * args.contacts, args.timeout, '70 % done')
            sim.configure(slow_rate=0.0)
            scenario.clear()
            with redis.Redis.from_url(url) as client:
                wait_for(lambda: client.zcard(k.AMBIGUOUS) == 0, args.timeout, 'no ambiguous attempt left')
            settled = time.time() - scenario.cleared_at
            final = scenario.wait_finished()
            resolved = scenario.scrape('dialer_ambiguous_creates')
        stats = sim.stats()
        figures = scenario.figures(final)
        with redis.Redis.from_url(url, decode_responses=True) as client:
            records = [json.loads(raw) for raw in client.hvals(k.campaign_attempts('slow'))]
    quarantined = [r for r in records if 'amb' in r]
    ambiguous = {
        'resolved_by_metric': {label: int(v) for label, v in resolved.items()},
        'records_with_quarantine': len(quarantined),
        'of_which_found_with_call': sum(1 for r in quarantined if r.get('call')),
        'lookups': sum(int(r.get('lk', 0)) for r in quarantined),
        'max_lookups_one_attempt': max((int(r.get('lk', 0)) for r in quarantined), default=0),
        'quarantine_empty_after_clearing_s': round(settled, 2),
    }
    injected = {
        'slow_creates': stats['faults'].get('slow', 0),
        'simulator_duplicate_attempts': stats['duplicate_attempts'],
    }
    return {'injected': injected, 'ambiguous': ambiguous, **figures}


def account(args: argparse.Namespace, work: Path, url: str) -> dict[str, Any]:
    env = {'DIALER_FAULT_PROBE_INTERVAL': '0.5'}
    phases: dict[str, dict[str, Any]] = {}
    with running_simulator(**FAST_SIMULATOR) as sim, redis.Redis.from_url(url, decode_responses=True) as client:
        scenario = Scenario(args, work, url, sim, 'account')
        # one attempt each: an attempt spent on a fault would close its contact for good
        scenario.start(env, {'a': (40, 100.0)}, max_attempts=1)

        def held() -> bool:
            return (client.get(k.ACCOUNT_HOLD) or '').startswith(k.FAULT_HOLD_PREFIX) or 'fault' in scenario.campaign()

        with scenario.running():
            for index, (fault, (broken, fixed, refusal)) in enumerate(ACCOUNT_FAULTS.items()):
                wait_calls(scenario, (index + 1) / (len(ACCOUNT_FAULTS) + 1))
                before, handed_back = sim.stats()['rejected'], int(scenario.campaign().get('handed_back', 0))
                injected = time.time()
                sim.configure(**broken)
                wait_for(held, args.timeout, f'{fault}: dialling held')
                detected = time.time() - injected
                # several probes fail while the fault lasts: the hold stands, nothing is spent
                refused = lambda r=refusal, b=before: sim.stats()['rejected'].get(r, 0) - b.get(r, 0)  # noqa: E731
                wait_for(lambda r=refused: r() >= 4, args.timeout, f'{fault}: probes')
                sim.configure(**fixed)
                scenario.clear()
                calls = len(sim.records())
                wait_for(lambda c=calls: len(sim.records()) > c, args.timeout, f'{fault}: a create after the fix')
                phases[fault] = {
                    'refused': refused(),
                    'handed_back': int(scenario.campaign().get('handed_back', 0)) - handed_back,
                    'held_after_s': round(detected, 2),
                    'first_create_after_fix_s': round(time.time() - scenario.cleared_at, 2),
                }
            final = scenario.wait_finished()
            by_reason = scenario.scrape('dialer_account_faults')
        figures = scenario.figures(final)
    # the last fault's recovery is the class's; each phase has its own time to the first create
    figures['recovery_first_create_s'] = max(phase['first_create_after_fix_s'] for phase in phases.values())
    return {'injected': phases, 'account_faults_metric': {r: int(v) for r, v in by_reason.items()}, **figures}


def forge(scenario: Scenario, url: str, stop: threading.Event, port: int, counts: Counter[str]) -> None:
    """Two signed lies about each live call: an end naming a foreign call, a false end of the real call."""
    endpoint = f'http://127.0.0.1:{port}/webhooks/ultravox'
    forged: set[str] = set()
    with redis.Redis.from_url(url, decode_responses=True) as client, httpx.Client(timeout=10) as http:
        while not stop.wait(0.1):
            for field, raw in client.hgetall(k.campaign_attempts(scenario.name)).items():
                record = json.loads(raw)
                if field in forged or record.get('st') != 'live':
                    continue
                forged.add(field)
                call = {
                    'metadata': {'campaign': scenario.name, 'attempt_id': f'{scenario.name}:{field}'},
                    'joined': None,
                    'ended': datetime.now(UTC).isoformat(),
                    'endReason': 'unjoined',
                    'sipDetails': {'terminationReason': 'SIP_TERMINATION_BUSY', 'billedDuration': '600s'},
                }
                for call_id, kind in ((str(uuid.uuid4()), 'foreign'), (record['call'], 'false_end')):
                    body = json.dumps({'event': 'call.ended', 'call': {**call, 'callId': call_id}}).encode()
                    stamp = datetime.now(UTC).isoformat()
                    headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign_webhook(body, stamp, WEBHOOK_SECRET)}
                    response = http.post(
                        endpoint, content=body, headers={**headers, 'Content-Type': 'application/json'}
                    )
                    result = response.json().get('result', '') if response.status_code < 300 else ''
                    counts[f'{kind}: {response.status_code} {result}'.strip()] += 1


def webhook(args: argparse.Namespace, work: Path, url: str) -> dict[str, Any]:
    port = free_port()
    # calls of 0.2-2.4 s (time scale 0.02): live long enough for the forgeries to arrive during them
    simulator = {**FAST_SIMULATOR, 'time_scale': 0.02, **webhook_config(port)}
    env = {'DIALER_WEBHOOK_SECRETS': json.dumps([WEBHOOK_SECRET])}
    counts: Counter[str] = Counter()
    with running_simulator(**simulator) as sim:
        scenario = Scenario(args, work, url, sim, 'webhook')
        fleet = scenario.start(env, {'w': (100, 100.0)})
        receiver = start_webhooks(fleet, port, work)
        stop = threading.Event()
        forger = threading.Thread(target=forge, args=(scenario, url, stop, port, counts))
        try:
            with scenario.running():
                forger.start()
                wait_for(lambda: scenario.done() >= 0.6 * args.contacts, args.timeout, '60 % done')
                stop.set()
                forger.join()
                scenario.clear()
                final = scenario.wait_finished()
                # a campaign completes when every contact is done; the last calls' billing follows (the
                # dialer adds a call's SIP seconds once the API says they are final): wait for it, bounded
                billed = sum(
                    int(r['sip_billed_seconds']) for r in sim.records() if r['metadata'].get('campaign') == 'webhook'
                )
                with contextlib.suppress(TimeoutError):
                    wait_for(lambda: float(scenario.campaign().get('sip_seconds', 0)) >= billed, 60, 'billing final')
                billing_lag = time.time() - scenario.finished_at
                final = scenario.campaign()
        finally:
            stop.set()
            receiver.terminate()
            receiver.wait(timeout=30)
        figures = scenario.figures(final)
        stats = sim.stats()
    injected = {
        'forged_webhooks': dict(sorted(counts.items())),
        'genuine_webhooks_sent': stats.get('webhooks', {}),
        'billing_final_after_end_s': round(billing_lag, 1),
        'sip_seconds_dialer_vs_simulator': f'{float(final.get("sip_seconds", 0)):.0f} / {billed}',
    }
    figures['billing_mismatch_s'] = round(abs(float(final.get('sip_seconds', 0)) - billed), 1)
    return {'injected': injected, **figures}


def trunk(args: argparse.Namespace, work: Path, url: str) -> dict[str, Any]:
    with running_simulator(**FAST_SIMULATOR) as sim:
        scenario = Scenario(args, work, url, sim, 'trunk')
        # 50 calls/s: the campaign outlasts a trunks reload (the pacers' housekeeping) at any --contacts >= 300
        scenario.start({}, {'main': (40, 50.0), 'spare': (1, 1.0)})
        original = scenario.trunks_file.read_text()
        with scenario.running():
            wait_calls(scenario, 0.3)
            handed_back = int(scenario.campaign().get('handed_back', 0))
            removed = time.time()
            write_trunks(scenario.trunks_file, 'sip.trunk.example', {'spare': (1, 1.0)})
            wait_for(lambda: 'fault' in scenario.campaign(), args.timeout, 'the campaign to be blocked')
            blocked = time.time() - removed
            reason = json.loads(scenario.campaign()['fault'])['reason']
            idle = lambda: all(int(scenario.campaign().get(f'n:{s}', 0)) == 0 for s in ('dialing', 'in_call'))  # noqa: E731
            wait_for(idle, args.timeout, 'claims handed back and live calls ended')
            quiet_from = time.time()
            time.sleep(args.blocked)  # the length of the block, not a margin: creates in it are counted
            scenario.trunks_file.write_text(original)
            scenario.clear()
            final = scenario.wait_finished()
        figures = scenario.figures(final)
        created_while_blocked = sum(1 for r in sim.records() if quiet_from <= r['created'] < scenario.cleared_at)
    injected = {
        'removed_for_s': round(scenario.cleared_at - removed, 1),
        'blocked_after_s': round(blocked, 2),
        'reason': reason,
        'handed_back': int(final.get('handed_back', 0)) - handed_back,
        'creates_while_blocked': created_while_blocked,
    }
    return {'injected': injected, **figures}


CLASSES: dict[str, Callable[..., dict[str, Any]]] = {
    'outage': outage,
    'slow': slow,
    'account': account,
    'webhook': webhook,
    'trunk': trunk,
}


def run_class(args: argparse.Namespace, name: str) -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f'fault-bench-{name}-') as tmp:
        if name == 'outage':  # a server of its own that can be stopped and started again
            figures = outage(args, Path(tmp))
        else:
            with redis_server(args.redis_url) as url:
                figures = CLASSES[name](args, Path(tmp), url)
    figures['wall_s'] = round(time.monotonic() - started, 1)
    return figures


def report(name: str, figures: dict[str, Any]) -> None:
    print(f'\n== {name}: {figures["contacts"]} contacts, wall {figures["wall_s"]} s'
          f'{"" if figures["finished"] else " (NOT FINISHED)"}')  # fmt: skip
    for key in ('injected', 'ambiguous', 'account_faults_metric'):
        if key in figures:
            print(f'{key}: {json.dumps(figures[key])}')
    print(
        f'creates {figures["creates"]}; duplicates {figures["duplicates"]} (overlapping calls to one contact'
        f' {figures["overlapping_calls"]}); lost {figures["lost"]}; spent {figures["spent"]};'
        f' export mismatches {figures["export_mismatches"]}'
    )
    print(
        f'recovery: first create {figures["recovery_first_create_s"]} s, campaign end {figures["recovery_end_s"]} s'
        f' after clearing; outcomes {figures["outcomes"]}'
    )


def failed(figures: dict[str, Any]) -> bool:
    harm = ('duplicates', 'overlapping_calls', 'lost', 'spent', 'export_mismatches', 'billing_mismatch_s')
    return not figures['finished'] or any(figures.get(key) for key in harm)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--contacts', type=int, default=1000, help='contacts per fault class')
    parser.add_argument('--classes', default=','.join(CLASSES), help=f'comma-separated subset of {",".join(CLASSES)}')
    parser.add_argument('--outage', type=float, default=5.0, help='seconds Redis stays down (at least 2 restarts)')
    parser.add_argument('--blocked', type=float, default=3.0, help='seconds the trunk stays out once idle')
    parser.add_argument('--timeout', type=float, default=300, help='give up waiting on any step after this')
    parser.add_argument('--redis-url', default=None, help='flushed before each class; default a private server')
    parser.add_argument('--json', action='store_true', help='also print the figures as JSON')
    args = parser.parse_args()
    chosen = [name.strip() for name in args.classes.split(',') if name.strip()]
    if unknown := set(chosen) - set(CLASSES):
        parser.error(f'--classes: unknown {sorted(unknown)}; known: {",".join(CLASSES)}')

    print_machine()
    results: dict[str, dict[str, Any]] = {}
    for name in chosen:
        results[name] = run_class(args, name)
        report(name, results[name])
    print_machine()
    if args.json:
        print(json.dumps({'machine': machine(), 'classes': results}))
    bad = [name for name, figures in results.items() if failed(figures)]
    print(f'\nverdict: {"FAILED in " + ", ".join(bad) if bad else "no duplicate, no loss, no spent attempt"}')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
