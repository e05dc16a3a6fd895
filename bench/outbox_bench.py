"""Result-webhook outbox benchmark (issue 15): a destination that is down or hangs never slows dialling.

    python bench/outbox_bench.py [--contacts 600] [--cps 30] [--redis-url redis://127.0.0.1:6379/8]

The same campaign (one attempt per contact, trunk limited to ``--cps`` creates/s, two workers, the
simulator at time scale 0.01) runs four times: no destination, a receiving server that answers, one
that is down (connection refused), and one that accepts each delivery and holds it until it times
out. Printed per run: creates per second between the first and the last create (the dialling rate),
events waiting at the end, and, for the down and hanging receivers, the time from the receiver coming
back to every event delivered (none twice by event id). Exit code 1 when an event is lost or
delivered twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import redis


ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / 'bench')]

import benchlib  # noqa: E402

from dialer import constants as k  # noqa: E402
from simulator.testing import running_simulator  # noqa: E402
from tests.result_receiver import ResultReceiver  # noqa: E402
from workers.fleet import LocalFleet  # noqa: E402


SECRET = 'bench-receiver-secret-0123456789'
SIMULATOR = {'time_scale': 0.01, 'ring_min': 1, 'ring_max': 5, 'talk_min': 5, 'talk_max': 30, 'seed': 3}
ENV = {
    'DIALER_POLL_INITIAL': '0.05',
    'DIALER_POLL_INTERVAL': '0.1',
    'DIALER_BILLING_WAIT': '0.5',
    'DIALER_ACCOUNT_CALLS_PER_SECOND': '1000',
    'DIALER_ACCOUNT_CALLS_PER_MINUTE': '100000',
    'DIALER_OUTBOX_TIMEOUT': '2',
    'DIALER_OUTBOX_BACKOFF_CAP': '1',
    'DIALER_LOG_LEVEL': 'warning',
}


def run(url: str, contacts: int, cps: float, mode: str) -> dict[str, object]:
    """One campaign with the destination in ``mode``: none | up | down | hanging."""
    redis.Redis.from_url(url).flushdb()
    receiver = ResultReceiver(SECRET)
    env = dict(ENV)
    if mode != 'none':
        env['DIALER_RESULT_WEBHOOKS'] = json.dumps([{'url': receiver.url, 'secret': SECRET, 'name': 'crm'}])
    if mode in {'up', 'hanging'}:
        receiver.mode = 'hold' if mode == 'hanging' else 'ok'
        receiver.start()
    with tempfile.TemporaryDirectory(prefix='outbox-bench-') as tmp, running_simulator(**SIMULATOR) as sim:
        work = Path(tmp)
        trunks = benchlib.write_trunks(work / 'trunks.toml', 'bench', concurrent=200, cps=cps)
        fleet = LocalFleet(url, sim.base_url, trunks, env, log_dir=work)
        benchlib.load_campaign(fleet, work, 'ob', contacts)
        fleet.start_worker()
        fleet.start_worker()
        try:
            fleet.wait_until_finished('ob', timeout=600)
            created = sorted(record['created'] for record in sim.records())
            rate = (len(created) - 1) / (created[-1] - created[0]) if len(created) > 1 else 0.0
            client = redis.Redis.from_url(url, decode_responses=True)
            waiting = client.zcard(k.OUTBOX_LOG) - len(receiver.snapshot()) if mode != 'none' else 0
            drain = None
            if mode in {'down', 'hanging'}:
                receiver.stop()
                receiver.mode = 'ok'
                receiver.start()
            started = time.monotonic()
            total = client.zcard(k.OUTBOX_LOG)
            while mode != 'none' and len({event['id'] for event in receiver.snapshot()}) < total:
                if time.monotonic() - started > 300:
                    break
                time.sleep(0.1)
            if mode in {'down', 'hanging'}:
                drain = round(time.monotonic() - started, 1)
            events = receiver.snapshot()
            ids = [event['id'] for event in events]
            expected = client.zcard(k.OUTBOX_LOG) if mode != 'none' else 0
        finally:
            fleet.stop_all()
            receiver.stop()
    return {
        'mode': mode,
        'creates': len(created),
        'creates_per_s': round(rate, 1),
        'events_waiting_at_end': waiting,
        'drain_s': drain,
        'delivered': len(set(ids)),
        'expected': expected,
        'twice': len(ids) - len(set(ids)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--contacts', type=int, default=600)
    parser.add_argument('--cps', type=float, default=30.0)
    parser.add_argument('--redis-url')
    args = parser.parse_args()
    benchlib.print_machine()
    failed = False
    with benchlib.redis_server(args.redis_url) as url:
        for mode in ('none', 'up', 'down', 'hanging'):
            figures = run(url, args.contacts, args.cps, mode)
            print(json.dumps(figures))
            if mode != 'none' and (figures['delivered'] != figures['expected'] or figures['twice']):
                failed = True
    benchlib.print_machine()
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
