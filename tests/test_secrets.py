"""After a whole run, no secret (API key, trunk password, webhook secret) is anywhere it could leak:
logs, Redis, metrics, exports, error messages. Phone numbers are never metric labels or log text."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis as redis_sync

from simulator.testing import free_port, running_simulator
from tests.fleet_helpers import FAST_ENV, FAST_SIMULATOR, write_campaign_file, write_contacts, write_trunks
from workers.fleet import DIALER, LocalFleet


pytestmark = pytest.mark.slow

API_KEY = 'uvx-live-API-KEY-0123456789'
WEBHOOK_SECRET = 'whsec-SECRET-9876543210'
PHONE = re.compile(rb'\+\d{8,15}')


def test_no_secret_or_phone_number_leaks_into_logs_redis_metrics_or_exports(
    tmp_path: Path, redis_url: str, sync_redis
) -> None:
    trunks = write_trunks(tmp_path / 'trunks.toml', 'sip.s.example', {'s': (10, 50.0)})
    secrets = [API_KEY.encode(), WEBHOOK_SECRET.encode(), b'pw-s-s3cret']
    hook_port, metrics_port = free_port(), free_port()
    simulator = {**FAST_SIMULATOR, 'api_key': API_KEY}
    simulator.update(webhook_url=f'http://127.0.0.1:{hook_port}/webhooks/ultravox', webhook_secret=[WEBHOOK_SECRET])
    env = {**FAST_ENV, 'DIALER_ULTRAVOX_API_KEY': API_KEY, 'DIALER_WEBHOOK_SECRETS': json.dumps([WEBHOOK_SECRET])}
    env['DIALER_LOG_LEVEL'] = 'debug'
    write_contacts(tmp_path / 'contacts.csv', 60, invalid=2)
    with running_simulator(**simulator) as sim:
        fleet = LocalFleet(redis_url, sim.base_url, trunks, env, log_dir=tmp_path)
        hooks_log = (tmp_path / 'webhooks.log').open('wb')
        hooks = subprocess.Popen(  # our own CLI
            [*DIALER, 'webhooks', '--port', str(hook_port)],
            env={**fleet.env, 'DIALER_METRICS_PORT': '0'},
            stdout=hooks_log,
            stderr=hooks_log,
        )
        try:
            load = fleet.cli(
                'campaign', 'load', str(tmp_path / 'contacts.csv'),
                '--campaign-file', str(write_campaign_file(tmp_path / 'c.toml', 'sec', 's')),
            )  # fmt: skip
            fleet.start_worker(DIALER_METRICS_PORT=str(metrics_port))
            fleet.wait_until_finished('sec', timeout=120)
            time.sleep(0.5)
            metrics = httpx.get(f'http://127.0.0.1:{metrics_port}/metrics').content
        finally:
            fleet.stop_all()
            hooks.terminate()
            hooks.wait()
            hooks_log.close()
        fleet.cli('campaign', 'export', 'sec', '--output', str(tmp_path / 'out.csv'))
        fleet.cli('campaign', 'export', 'sec', '--output', str(tmp_path / 'out.jsonl'), '--format', 'jsonl')
        outputs = [
            load.stdout + load.stderr,
            fleet.cli('campaign', 'status', 'sec', '--json').stdout,
            fleet.cli('trunks', 'check').stdout,
            fleet.cli('trunks', 'status').stdout,
            fleet.cli(
                'campaign', 'load', 'missing.csv', '--campaign-file', str(tmp_path / 'c.toml'), check=False
            ).stderr,
        ]
        assert sim.stats()['webhooks'], 'webhooks were delivered'

    logs = b''.join(p.read_bytes() for p in tmp_path.glob('*.log'))
    assert b'call_created' in logs, 'the worker logged its work'
    with redis_sync.Redis.from_url(redis_url) as raw:
        stored = b''.join(key + (raw.dump(key) or b'') for key in raw.scan_iter(count=1000))
    exports = (tmp_path / 'out.csv').read_bytes() + (tmp_path / 'out.jsonl').read_bytes()
    for secret in secrets:
        for where, blob in [('logs', logs), ('redis', stored), ('metrics', metrics), ('exports', exports)]:
            assert secret not in blob, f'a secret leaked into {where}'
        assert not any(secret.decode() in out for out in outputs), 'a secret leaked into command output'
    assert not PHONE.search(metrics), 'no phone number in any metric label'
    assert not PHONE.search(logs), 'no phone number in the logs'
    assert PHONE.search(exports), 'exports do carry the numbers (they are the results)'
