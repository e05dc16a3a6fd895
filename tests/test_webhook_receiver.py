"""The webhook receiver: signed, fresh, unreplayed, bounded deliveries record a call's end once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from dialer import constants as k
from dialer.settings import Settings
from dialer.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook
from tests.ledger import live_call
from workers.runtime import Runtime
from workers.webhooks import build_webhook_app


SECRET = 'whsec-test-0123456789'


@pytest.fixture
async def client(redis, redis_url: str, tmp_path: Path):
    trunks = tmp_path / 'trunks.toml'
    trunks.write_text(
        '[trunks.t1]\nhost = "sip.t1.example"\nfrom = "+14155550100"\nmax_concurrent = 2\ncalls_per_second = 1\n'
    )
    settings = Settings(
        redis_url=redis_url,
        trunks_file=trunks,
        webhook_secrets=[SecretStr(SECRET)],
        ultravox_base_url='http://127.0.0.1:9',
        ultravox_api_key=SecretStr('key'),
    )
    rt = Runtime.create(settings)
    transport = httpx.ASGITransport(app=build_webhook_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url='http://receiver') as http:
        yield http
    await rt.close()


def ended_call(attempt_id: str, *, billed: bool) -> dict:
    joined = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    return {
        'callId': 'call-1',
        'created': (joined - timedelta(seconds=5)).isoformat(),
        'joined': joined.isoformat(),
        'ended': (joined + timedelta(seconds=31)).isoformat(),
        'endReason': 'hangup',
        'billedDuration': '36s' if billed else None,
        'billingStatus': 'BILLING_STATUS_BILLED' if billed else 'BILLING_STATUS_PENDING',
        'sipDetails': {'billedDuration': '36s' if billed else None, 'terminationReason': 'SIP_TERMINATION_NORMAL'},
        'metadata': {'attempt_id': attempt_id, 'campaign': 'c1'},
        'shortSummary': 'Confirmed delivery.',
    }


def signed(event: str, call: dict, *, secret: str = SECRET, age: float = 0) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({'event': event, 'call': call}).encode()
    timestamp = (datetime.now(UTC) - timedelta(seconds=age)).isoformat()
    return body, {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign_webhook(body, timestamp, secret)}


async def post(client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await client.post('/webhooks/ultravox', content=body, headers=headers)


async def test_call_ended_records_the_outcome_and_frees_the_slot(client, redis) -> None:
    attempt_id = await live_call(redis)
    response = await post(client, *signed('call.ended', ended_call(attempt_id, billed=False)))
    assert response.status_code == 204
    campaign = await redis.hgetall(k.campaign('c1'))
    assert campaign['o:answered'] == '1'
    assert await redis.zcard(k.trunk_slots('t1')) == 0
    # billing not final yet: the call is followed for billing only
    assert await redis.zrange(k.TRACKING, 0, -1) == [f'{attempt_id}|call-1|b']


async def test_call_billed_settles_sip_seconds_once_even_when_delivered_twice(client, redis) -> None:
    attempt_id = await live_call(redis)
    for _ in range(2):
        response = await post(client, *signed('call.billed', ended_call(attempt_id, billed=True)))
        assert response.status_code == 204
    campaign = await redis.hgetall(k.campaign('c1'))
    assert float(campaign['sip_seconds']) == 36
    assert campaign['e:answered'] == '1'
    assert await redis.zcard(k.TRACKING) == 0


@pytest.mark.parametrize(
    ('tamper', 'status'),
    [
        (lambda body, headers: (body + b' ', headers), 401),
        (lambda body, headers: (body, {**headers, SIGNATURE_HEADER: 'deadbeef'}), 401),
        (lambda body, headers: (body, {SIGNATURE_HEADER: headers[SIGNATURE_HEADER]}), 401),
    ],
    ids=['body changed', 'bad signature', 'no timestamp'],
)
async def test_deliveries_that_fail_the_signature_check_are_refused(client, redis, tamper, status) -> None:
    attempt_id = await live_call(redis)
    body, headers = tamper(*signed('call.ended', ended_call(attempt_id, billed=False)))
    assert (await post(client, body, headers)).status_code == status
    assert await redis.hget(k.campaign('c1'), 'o:answered') is None


async def test_stale_and_replayed_deliveries_are_refused(client, redis) -> None:
    attempt_id = await live_call(redis)
    stale = signed('call.ended', ended_call(attempt_id, billed=False), age=600)
    assert (await post(client, *stale)).status_code == 401
    fresh = signed('call.ended', ended_call(attempt_id, billed=False))
    assert (await post(client, *fresh)).status_code == 204
    assert (await post(client, *fresh)).status_code == 401


async def test_an_oversized_body_is_refused_before_it_is_read_whole(client) -> None:
    body = b'{"event": "call.ended", "pad": "' + b'x' * 300_000 + b'"}'
    assert (await post(client, body, {TIMESTAMP_HEADER: 'x', SIGNATURE_HEADER: 'y'})).status_code == 413
