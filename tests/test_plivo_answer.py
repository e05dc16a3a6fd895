"""Plivo's answer URL (``POST /webhooks/plivo/answer``) served by a real ``dialer webhooks`` process: a
request Plivo signed gets the XML that streams the call to its Ultravox call; a forged, tampered or
foreign-signed one gets 401; an attempt that moved on, or an Ultravox call that ended, gets a hang-up."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import urlencode
from xml.sax.saxutils import escape

import httpx
import pytest

from dialer import constants as k
from dialer.providers.plivo import NONCE_HEADER, SIGNATURE_HEADER, signature
from simulator.testing import free_port, running_simulator
from tests.fleet_helpers import FAST_ENV, FAST_SIMULATOR, write_campaign_file, write_contacts
from tests.test_provider_trunks_end_to_end import write_provider_trunk
from workers.fleet import LocalFleet


if TYPE_CHECKING:
    from pathlib import Path

    import redis as redis_sync


pytestmark = pytest.mark.slow

AUTH_ID = 'MA' + 'Q' * 18
TOKEN = 'plivo-answer-s3cret'
NUMBER = '+12122000000'
STREAM = '<Stream bidirectional="true" keepCallAlive="true" contentType="audio/x-mulaw;rate=8000">'


def post(url: str, params: list[tuple[str, str]], token: str, *, signed_url: str | None = None) -> httpx.Response:
    nonce = '31415926535'
    headers = {SIGNATURE_HEADER: signature(token, signed_url or url, params, nonce), NONCE_HEADER: nonce}
    return httpx.post(url, data=dict(params), headers=headers, timeout=10)


def test_the_answer_url_streams_a_signed_answer_to_its_ultravox_call_and_refuses_a_forged_one(
    tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis
) -> None:
    write_contacts(tmp_path / 'contacts.csv', 1)
    port = free_port()
    base = f'http://127.0.0.1:{port}'
    trunks = write_provider_trunk(
        tmp_path / 'trunks.toml', 'plivo', 2, 5, mode='"direct"', auth_id=f'"{AUTH_ID}"',
        auth_token_env='"PLIVO_TOKEN"', callback_url=f'"{base}"',
    )  # fmt: skip
    account = {'plivo': {'auth_id': AUTH_ID, 'auth_token': TOKEN}}
    # real-time simulated calls: the Ultravox call below waits (joinTimeout) through the whole test
    with running_simulator(**{**FAST_SIMULATOR, 'time_scale': 1.0}, provider_accounts=account) as sim:
        env = {**FAST_ENV, 'PLIVO_TOKEN': TOKEN, 'DIALER_PLIVO_BASE_URL': sim.base_url}
        fleet = LocalFleet(redis_url, sim.base_url, trunks, env, log_dir=tmp_path)
        campaign = write_campaign_file(tmp_path / 'campaign.toml', 'spring', 'plivo-numbers')
        # loaded paused and no worker runs: the attempt below is set up by hand
        fleet.cli('campaign', 'load', str(tmp_path / 'contacts.csv'), '--campaign-file', str(campaign), '--paused')
        waiting = {'systemPrompt': 'x', 'medium': {'plivo': {}}, 'firstSpeakerSettings': {'user': {}}}
        waiting['joinTimeout'] = '600s'
        call = sim.client.post('/api/calls', json=waiting, headers={'X-API-Key': 'k'}).json()
        call_id, join_url = call['callId'], call['joinUrl']
        attempt_id, field = f'spring:{NUMBER}:1', f'{NUMBER}:1'
        sync_redis.hset(k.campaign_attempts('spring'), field, json.dumps({'st': 'live', 'call': call_id}))
        url = f'{base}/webhooks/plivo/answer?' + urlencode({'a': attempt_id, 'c': call_id})
        params = [('CallUUID', 'c0ffee00-0000-4000-8000-000000000001'), ('CallStatus', 'in-progress')]
        params += [('From', '14155550100'), ('To', NUMBER[1:]), ('Direction', 'outbound')]
        hooks = fleet.start_webhooks(port, DIALER_LOG_LEVEL='debug')  # every line it can write
        try:
            # forged: unsigned, signed with another account's token, signed for another attempt or call,
            # or a body changed after signing
            assert httpx.post(url, data=dict(params), timeout=10).status_code == 401
            assert post(url, params, 'another-accounts-token').status_code == 401
            other_attempt = url.replace('%3A1&', '%3A2&')
            assert other_attempt != url
            assert post(url, params, TOKEN, signed_url=other_attempt).status_code == 401
            assert post(url, params, TOKEN, signed_url=url.replace(call_id, call_id[::-1])).status_code == 401
            tampered = post(url, params, TOKEN)  # a good signature ...
            assert tampered.status_code == 200
            headers = {key: value for key, value in tampered.request.headers.items() if key.startswith('x-plivo')}
            changed = httpx.post(url, data={**dict(params), 'To': '12125550199'}, headers=headers, timeout=10)
            assert changed.status_code == 401, '... over a body that was changed'
            # signed by the account: the stream to this attempt's Ultravox call
            answer = post(url, params, TOKEN)
            assert answer.status_code == 200
            assert answer.headers['content-type'].startswith('application/xml')
            assert f'<Response>{STREAM}{escape(join_url)}</Stream></Response>' in answer.text
            # the attempt moved on (ended while the phone rang): hang up, stream nothing
            sync_redis.hset(k.campaign_attempts('spring'), field, json.dumps({'st': 'done', 'call': call_id}))
            stale = post(url, params, TOKEN)
            assert stale.status_code == 200
            assert '<Hangup/>' in stale.text
            assert join_url not in stale.text
            # live again, but its Ultravox call is gone: hang up
            sync_redis.hset(k.campaign_attempts('spring'), field, json.dumps({'st': 'live', 'call': call_id}))
            assert sim.client.delete(f'/api/calls/{call_id}', headers={'X-API-Key': 'k'}).status_code == 204
            gone = post(url, params, TOKEN)
            assert gone.status_code == 200
            assert '<Hangup/>' in gone.text
            # a trunk that is not a direct-mode Plivo trunk has no answer URL
            unknown = f'{base}/webhooks/plivo/answer?' + urlencode({'a': f'nosuch:{NUMBER}:1', 'c': call_id})
            assert post(unknown, params, TOKEN).status_code == 404
        finally:
            hooks.terminate()
            hooks.wait(timeout=30)
    # the joinUrl (a bearer capability to the call) is in no log line
    logged = (tmp_path / 'webhooks.log').read_text(encoding='utf-8', errors='replace')
    assert 'plivo_answered' in logged
    assert join_url not in logged
