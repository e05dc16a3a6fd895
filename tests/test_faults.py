"""The fault suite beyond crashes: Redis outages longer than the retry window, creates that Ultravox
completes after we gave up, an unusable account or agent, webhooks naming the wrong call, a trunk that
leaves the trunks file. Each drives real processes (workers, Redis, the simulator over HTTP) and checks
the simulator's record against the campaign's own."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from dialer import constants as k
from dialer.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook
from simulator.testing import free_port, running_simulator
from tests.fleet_helpers import (
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
from workers.fleet import DIALER, LocalFleet


pytestmark = pytest.mark.slow

AGENT = '6f9a1c3e-8a39-4bb6-9a55-0f3d5d8e2a10'


def load(fleet: LocalFleet, tmp_path: Path, name: str, trunk: str, contacts: int, *, max_attempts: int = 2) -> None:
    write_contacts(tmp_path / f'{name}.csv', contacts)
    campaign_file = write_campaign_file(tmp_path / f'{name}.toml', name, trunk, max_attempts=max_attempts)
    fleet.cli('campaign', 'load', str(tmp_path / f'{name}.csv'), '--campaign-file', str(campaign_file))


def assert_once_per_attempt_and_exported(fleet: LocalFleet, tmp_path: Path, name: str, records: list[dict]) -> None:
    assert max(creates_per_attempt(records).values()) == 1, 'never two calls for one attempt'
    exported = fleet.cli('campaign', 'export', name, '--output', str(tmp_path / f'{name}-export.csv'), check=False)
    assert exported.returncode == 0, exported.stderr
    rows = read_export(tmp_path / f'{name}-export.csv')
    calls = {call for row in rows for call in row['call_ids'].split(';') if call}
    assert calls == {r['callId'] for r in records if r['metadata'].get('campaign') == name}
    assert all(row['final_outcome'] for row in rows)


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_get_or_none(url: str) -> int | None:
    try:
        return http_get(url)[0]
    except OSError:
        return None


def metric(port: int, name: str) -> float:
    _, body = http_get(f'http://127.0.0.1:{port}/metrics')
    for line in body.decode().splitlines():
        if line.startswith((name + ' ', name + '{')):
            return float(line.rsplit(' ', 1)[1])
    return 0.0


def test_a_redis_outage_longer_than_the_retry_window_stops_nobody(tmp_path: Path) -> None:
    port = free_port()
    server = start_valkey(port, tmp_path)
    url = f'redis://127.0.0.1:{port}/0'
    # arq keeps a job's in-progress mark for the job timeout + 10 s: keep it short so that jobs cut off by
    # the outage are picked up again soon after
    env = {**FAST_ENV, 'DIALER_REDIS_RETRY_SECONDS': '1.5', 'DIALER_DIAL_JOB_TIMEOUT': '8'}
    try:
        with running_simulator(**FAST_SIMULATOR) as sim:
            trunks = write_trunks(tmp_path / 'trunks.toml', 'sip.outage.example', {'o': (20, 40.0)})
            fleet = LocalFleet(url, sim.base_url, trunks, env, log_dir=tmp_path)
            load(fleet, tmp_path, 'outage', 'o', 300)
            metrics_ports = [free_port(), free_port()]
            for metrics_port in metrics_ports:
                fleet.start_worker(DIALER_METRICS_PORT=str(metrics_port))
            try:
                wait_for(lambda: int(fleet.campaign('outage').get('calls', 0)) >= 40, 60, '40 calls before the outage')
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=30)
                for metrics_port in metrics_ports:
                    # the process endpoint outlives the run loop: it reports the outage and the restarts
                    wait_for(lambda p=metrics_port: metric(p, 'dialer_worker_restarts_total') >= 2, 60, 'restarts')
                    status, body = http_get(f'http://127.0.0.1:{metrics_port}/healthz')
                    assert status == 200
                    assert json.loads(body)['redis'] is False
                server = start_valkey(port, tmp_path)
                final = fleet.wait_until_finished('outage', timeout=240)
                for metrics_port in metrics_ports:
                    wait_for(
                        lambda p=metrics_port: json.loads(http_get(f'http://127.0.0.1:{p}/healthz')[1])['redis'],
                        30,
                        'workers report Redis back',
                    )
                assert all(worker.poll() is None for worker in fleet.workers), 'no worker gave up'
            finally:
                fleet.stop_all()
            records = sim.records()
            assert_once_per_attempt_and_exported(fleet, tmp_path, 'outage', records)
    finally:
        server.terminate()
        server.wait()
    assert int(final['n:done']) == 300
    logs = ''.join(path.read_text(errors='replace') for path in tmp_path.glob('worker-*.log'))
    assert 'worker_lost_redis' in logs
    assert 'Address already in use' not in logs


def test_a_metrics_port_already_taken_is_a_startup_error_naming_the_setting(tmp_path: Path, redis_url: str) -> None:
    trunks = write_trunks(tmp_path / 'trunks.toml', 'sip.port.example', {'p': (1, 1.0)})
    with running_simulator(**FAST_SIMULATOR) as sim:
        fleet = LocalFleet(redis_url, sim.base_url, trunks, dict(FAST_ENV))
        port = free_port()
        first = fleet.start_worker(DIALER_METRICS_PORT=str(port))
        try:
            wait_for(lambda: http_get_or_none(f'http://127.0.0.1:{port}/healthz') == 200, 60, 'the first worker')
            second = subprocess.run(
                [*DIALER, 'worker'],
                env={**fleet.env, 'DIALER_METRICS_PORT': str(port)},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            fleet.stop_all()
    assert second.returncode != 0
    assert f'DIALER_METRICS_PORT={port}' in second.stderr
    assert 'already in use' in second.stderr
    assert 'Traceback' not in second.stderr
    assert first.returncode is not None


def test_creates_that_ultravox_completes_after_we_gave_up_are_never_dialled_again(
    tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis
) -> None:
    # A third of the creates are answered 3 s late: well past the 1 s read timeout and the 0.5 s
    # lookup delay, inside the 20 s quarantine. Each must be found, never dialled a second time.
    env = {
        **FAST_ENV,
        'DIALER_ULTRAVOX_READ_TIMEOUT': '1',
        'DIALER_AMBIGUOUS_QUARANTINE': '20',
        'DIALER_DIAL_JOB_TIMEOUT': '10',
    }
    with running_simulator(**FAST_SIMULATOR, slow_rate=0.3, slow_seconds=3.0) as sim:
        trunks = write_trunks(tmp_path / 'trunks.toml', 'sip.slow.example', {'s': (30, 60.0)})
        fleet = LocalFleet(redis_url, sim.base_url, trunks, env, log_dir=tmp_path)
        load(fleet, tmp_path, 'slow', 's', 120)
        fleet.start_worker()
        fleet.start_worker()
        try:
            final = fleet.wait_until_finished('slow', timeout=300)
        finally:
            fleet.stop_all()
        records, stats = sim.records(), sim.stats()
    assert stats['faults']['slow'] >= 10, 'the slow path was exercised'
    assert stats['duplicate_attempts'] == 0
    assert int(final['n:done']) == 120
    assert_once_per_attempt_and_exported(fleet, tmp_path, 'slow', records)


REASONS = {
    'wrong key': 'unauthorized',
    'payment required': 'payment_required',
    'account disabled': 'forbidden',
    'agent deleted': 'agent_not_found',
}
FAULTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (simulator config while faulty, simulator config once fixed)
    'wrong key': ({'api_key': 'the-right-key'}, {'api_key': None}),
    'payment required': ({'account_state': 'payment_required'}, {'account_state': 'active'}),
    'account disabled': ({'account_state': 'disabled'}, {'account_state': 'active'}),
    'agent deleted': ({'known_agents': []}, {'known_agents': [AGENT]}),
}


@pytest.mark.parametrize('fault', list(FAULTS))
def test_an_unusable_account_or_agent_holds_dialling_and_spends_no_attempt(
    tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis, fault: str
) -> None:
    broken, fixed = FAULTS[fault]
    env = {**FAST_ENV, 'DIALER_FAULT_PROBE_INTERVAL': '0.5'}
    with running_simulator(**FAST_SIMULATOR, **broken) as sim:
        trunks = write_trunks(tmp_path / 'trunks.toml', 'sip.fault.example', {'f': (10, 50.0)})
        fleet = LocalFleet(redis_url, sim.base_url, trunks, env, log_dir=tmp_path)
        # one attempt each: any attempt spent on the fault would close the contact for good
        load(fleet, tmp_path, 'held', 'f', 60, max_attempts=1)
        fleet.start_worker()
        fleet.start_worker()
        try:
            if fault == 'agent deleted':
                wait_for(lambda: 'fault' in fleet.campaign('held'), 60, 'the campaign to be held')
            else:
                hold = lambda: (sync_redis.get(k.ACCOUNT_HOLD) or '').startswith('fault:')  # noqa: E731
                wait_for(hold, 60, 'the account to be held')
            # several probes fail while the fault lasts: dialling stays held, nothing is spent
            refused = sum(sim.stats()['rejected'].values())
            wait_for(lambda: sum(sim.stats()['rejected'].values()) >= refused + 4, 60, 'probes during the fault')
            campaign = fleet.campaign('held')
            assert campaign['state'] == 'active'
            assert int(campaign.get('n:done', 0)) == 0
            records = [json.loads(raw) for raw in sync_redis.hvals(k.campaign_attempts('held'))]
            # at most a job waiting for its rate token, with nothing sent: no attempt ended, none spent
            assert all(record['st'] == 'creating' for record in records), records
            held = json.loads(fleet.cli('campaign', 'status', 'held', '--json').stdout)['held']
            assert held['reason'] == REASONS[fault]
            sim.configure(**fixed)
            final = fleet.wait_until_finished('held', timeout=240)
        finally:
            fleet.stop_all()
        records = sim.records()
    assert int(final['n:done']) == 60
    assert len(records) == 60, 'every contact was dialled, once'
    assert_once_per_attempt_and_exported(fleet, tmp_path, 'held', records)


def test_a_wrong_key_fixed_by_restarting_the_workers_resumes_dialling(
    tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis
) -> None:
    env = {**FAST_ENV, 'DIALER_FAULT_PROBE_INTERVAL': '0.5', 'DIALER_ULTRAVOX_API_KEY': 'rotated-away'}
    with running_simulator(**FAST_SIMULATOR, api_key='the-new-key') as sim:
        trunks = write_trunks(tmp_path / 'trunks.toml', 'sip.key.example', {'key': (10, 50.0)})
        fleet = LocalFleet(redis_url, sim.base_url, trunks, env, log_dir=tmp_path)
        load(fleet, tmp_path, 'rotate', 'key', 40, max_attempts=1)
        fleet.start_worker()
        try:
            wait_for(lambda: sim.stats()['rejected'].get('auth_401', 0) >= 3, 60, '401s')
            fleet.stop_all()
            assert int(fleet.campaign('rotate').get('n:done', 0)) == 0
            fleet.start_worker(DIALER_ULTRAVOX_API_KEY='the-new-key')
            fleet.start_worker(DIALER_ULTRAVOX_API_KEY='the-new-key')
            final = fleet.wait_until_finished('rotate', timeout=240)
        finally:
            fleet.stop_all()
        records = sim.records()
    assert int(final['n:done']) == 40
    assert_once_per_attempt_and_exported(fleet, tmp_path, 'rotate', records)


def signed_post(url: str, payload: dict[str, Any], secret: str) -> httpx.Response:
    body = json.dumps(payload).encode()
    timestamp = datetime.now(UTC).isoformat()
    headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign_webhook(body, timestamp, secret)}
    return httpx.post(url, content=body, headers={**headers, 'Content-Type': 'application/json'}, timeout=10)


def test_a_signed_webhook_naming_another_call_cannot_end_a_live_call(
    tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis
) -> None:
    secret = 'whsec-faults-0123456789'
    hook_port = free_port()
    number = '+12122000000'
    # a call of 2,500 simulated seconds (5 s here): long enough to be live when the forgeries arrive
    simulator = {**FAST_SIMULATOR, 'forced_outcomes': {number: ['answered']}, 'talk_min': 2500, 'talk_max': 2500}
    env = {**FAST_ENV, 'DIALER_WEBHOOK_SECRETS': json.dumps([secret])}
    with running_simulator(**simulator) as sim:
        sim.configure(webhook_url=f'http://127.0.0.1:{hook_port}/webhooks/ultravox', webhook_secret=[secret])
        trunks = write_trunks(tmp_path / 'trunks.toml', 'sip.hook.example', {'h': (5, 10.0)})
        fleet = LocalFleet(redis_url, sim.base_url, trunks, env, log_dir=tmp_path)
        hooks = fleet.start_webhooks(hook_port)
        write_contacts(tmp_path / 'one.csv', 1)
        campaign_file = write_campaign_file(tmp_path / 'one.toml', 'one', 'h', max_attempts=3)
        campaign_file.write_text(campaign_file.read_text().replace('max_duration = 180', 'max_duration = 3600'))
        fleet.cli('campaign', 'load', str(tmp_path / 'one.csv'), '--campaign-file', str(campaign_file))
        fleet.start_worker()
        try:
            field = f'{number}:1'
            recorded = lambda: json.loads(sync_redis.hget(k.campaign_attempts('one'), field) or '{}')  # noqa: E731
            real = wait_for(lambda: recorded().get('call'), 60, 'the call to be live')
            forged_call = {
                'callId': '00000000-1111-2222-3333-444444444444',
                'metadata': {'campaign': 'one', 'attempt_id': f'one:{number}:1'},
                'joined': None,
                'ended': datetime.now(UTC).isoformat(),
                'endReason': 'unjoined',
                'sipDetails': {'terminationReason': 'SIP_TERMINATION_BUSY', 'billedDuration': '600s'},
            }
            response = signed_post(
                f'http://127.0.0.1:{hook_port}/webhooks/ultravox', {'event': 'call.ended', 'call': forged_call}, secret
            )
            assert response.status_code == 202
            assert response.json() == {'result': 'foreign_call'}
            # the same lie about the real call only makes the trackers look at the API sooner
            lie = {**forged_call, 'callId': real}
            response = signed_post(
                f'http://127.0.0.1:{hook_port}/webhooks/ultravox', {'event': 'call.ended', 'call': lie}, secret
            )
            assert response.status_code == 202
            final = fleet.wait_until_finished('one', timeout=120)
        finally:
            fleet.stop_all()
            hooks.terminate()
            hooks.wait(timeout=30)
        records = sim.records()
    assert len(records) == 1, 'no second call while the real one was ringing or talking'
    assert final['o:answered'] == '1'
    assert float(final['sip_seconds']) == records[0]['sip_billed_seconds'], 'billing from the API'
    assert_once_per_attempt_and_exported(fleet, tmp_path, 'one', records)


def test_a_trunk_removed_then_restored_mid_campaign_blocks_visibly_and_then_resumes(
    tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis
) -> None:
    with running_simulator(**FAST_SIMULATOR) as sim:
        trunks_file = tmp_path / 'trunks.toml'
        write_trunks(trunks_file, 'sip.main.example', {'main': (10, 30.0), 'spare': (1, 1.0)})
        original = trunks_file.read_text()
        fleet = LocalFleet(redis_url, sim.base_url, trunks_file, dict(FAST_ENV), log_dir=tmp_path)
        load(fleet, tmp_path, 'moving', 'main', 300)
        fleet.start_worker()
        fleet.start_worker()
        try:
            wait_for(lambda: int(fleet.campaign('moving').get('calls', 0)) >= 30, 60, '30 calls')
            write_trunks(trunks_file, 'sip.main.example', {'spare': (1, 1.0)})
            wait_for(lambda: 'fault' in fleet.campaign('moving'), 60, 'the campaign to be blocked')
            assert json.loads(fleet.campaign('moving')['fault'])['reason'] == 'trunk_missing'
            status = fleet.cli('campaign', 'status', 'moving')
            assert 'trunk_missing' in status.stdout
            # claimed attempts come back unspent; live calls finish; nothing new is dialled
            wait_for(lambda: int(fleet.campaign('moving').get('n:dialing', 0)) == 0, 60, 'claims handed back')
            wait_for(lambda: int(fleet.campaign('moving').get('n:in_call', 0)) == 0, 60, 'live calls to end')
            calls = len(sim.records())
            time.sleep(1.0)  # not a margin: proves that nothing is created while blocked, whatever the speed
            assert len(sim.records()) == calls
            assert fleet.campaign('moving')['state'] == 'active'
            trunks_file.write_text(original)
            final = fleet.wait_until_finished('moving', timeout=240)
        finally:
            fleet.stop_all()
        records = sim.records()
    assert int(final['n:done']) == 300
    assert 'fault' not in final
    assert_once_per_attempt_and_exported(fleet, tmp_path, 'moving', records)
    logs = ''.join(path.read_text(errors='replace') for path in tmp_path.glob('worker-*.log'))
    assert 'trunk_missing' in logs
