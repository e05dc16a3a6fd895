"""Result webhooks through the whole product: CLI, worker processes, the simulator over HTTP, and a
receiving server that is down while the campaign runs, then holds deliveries while their worker is
SIGKILLed, then comes back: every event arrives, none twice, in order per contact."""

from __future__ import annotations

import json
import signal
from collections import defaultdict
from typing import TYPE_CHECKING

import pytest
import redis as redis_sync

from dialer import constants as k
from simulator.testing import running_simulator
from tests.fleet_helpers import FAST_ENV, FAST_SIMULATOR, wait_for, write_campaign_file, write_contacts, write_trunks
from tests.result_receiver import ResultReceiver
from workers.fleet import LocalFleet


if TYPE_CHECKING:
    from pathlib import Path


pytestmark = pytest.mark.slow

SECRET = 'e2e-receiver-secret-0123456789'


def test_a_down_receiver_and_a_killed_worker_lose_no_event_and_never_hold_up_dialling(
    tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis
) -> None:
    receiver = ResultReceiver(SECRET)  # not started: the destination is down
    env = {
        **FAST_ENV,
        'DIALER_RESULT_WEBHOOKS': json.dumps([{'url': receiver.url, 'secret': SECRET, 'name': 'crm'}]),
        'DIALER_OUTBOX_TIMEOUT': '1',
        'DIALER_OUTBOX_BACKOFF_CAP': '0.5',
    }
    write_contacts(tmp_path / 'contacts.csv', 20)
    with running_simulator(**{**FAST_SIMULATOR, 'answer_rate': 0.5, 'no_answer_rate': 0.5}) as sim:
        fleet = LocalFleet(
            redis_url,
            sim.base_url,
            write_trunks(tmp_path / 'trunks.toml', 'sip.outbox.example', {'outbox': (10, 50)}),
            env,
            log_dir=tmp_path,
        )
        campaign_file = write_campaign_file(tmp_path / 'campaign.toml', 'hooks', 'outbox', max_attempts=2)
        fleet.cli('campaign', 'load', str(tmp_path / 'contacts.csv'), '--campaign-file', str(campaign_file))
        first = fleet.start_worker()
        try:
            # dialling runs to its end while every delivery fails
            fleet.wait_until_finished('hooks', timeout=120)
            assert sync_redis.hlen(k.outbox_tries('crm')) > 0, 'deliveries were tried and failed'

            receiver.mode = 'hold'
            receiver.start()
            wait_for(lambda: receiver.held > 0, 60, 'a delivery held by the receiver')
            fleet.stop(first, signal.SIGKILL)
            receiver.release()
            receiver.stop()
            receiver.mode = 'ok'
            receiver.start()
            fleet.start_worker()
            total = sync_redis.hlen(k.OUTBOX_EVENTS)
            wait_for(
                lambda: len(receiver.snapshot()) >= total and sync_redis.zcard(k.outbox_pending('crm')) == 0,
                120,
                'every event delivered',
            )
        finally:
            fleet.stop_all()
            receiver.stop()
        records = sim.records()

    received = receiver.snapshot()
    ids = [event['id'] for event in received]
    assert len(ids) == len(set(ids)) == total, 'every event delivered, none twice'
    assert set(ids) == set(sync_redis.hkeys(k.OUTBOX_EVENTS))
    assert receiver.bad_signatures == 0
    ended = [e for e in received if e['type'] == 'attempt.ended']
    assert sorted(e['data']['call_id'] for e in ended) == sorted(r['callId'] for r in records)
    assert sum(e['type'] == 'contact.completed' for e in received) == 20
    assert sum(e['type'] == 'campaign.completed' for e in received) == 1
    per_contact: dict[str, list[dict[str, object]]] = defaultdict(list)
    for event in received:
        if event['type'] != 'campaign.completed':
            per_contact[str(event['data']['phone'])].append(event)
    for events in per_contact.values():
        sequence = [int(str(e['id']).rsplit('_', 1)[1]) for e in events]
        assert sequence == sorted(sequence), 'a contact events arrive in the order they happened'
        assert events[-1]['type'] == 'contact.completed'
        assert [e['data']['attempt'] for e in events[:-1]] == list(range(1, len(events)))
