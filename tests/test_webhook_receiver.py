"""The webhook receiver: signed, fresh, unreplayed, bounded deliveries record a call's end once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from dialer import constants as k
from dialer.scripts import Scripts
from dialer.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook
from tests.ledger import begin_first, live_call, make_campaign, runtime_on_t1
from workers.webhooks import build_webhook_app


SECRET = 'whsec-test-0123456789'


@pytest.fixture
async def client(redis, redis_url: str, tmp_path: Path):
    rt = runtime_on_t1(redis_url, tmp_path, concurrent=2, cps=1, webhook_secrets=[SecretStr(SECRET)])
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


async def tracking_scores(redis) -> dict[str, float]:
    return dict(await redis.zrange(k.TRACKING, 0, -1, withscores=True))


async def test_call_ended_for_the_attempts_own_call_makes_it_polled_now_without_trusting_the_payload(
    client, redis
) -> None:
    attempt_id = await live_call(redis)
    member = f'{attempt_id}|call-1'
    before = (await tracking_scores(redis))[member]
    response = await post(client, *signed('call.ended', ended_call(attempt_id, billed=True)))
    assert response.status_code == 202
    assert response.json() == {'result': 'polled_now'}
    assert (await tracking_scores(redis))[member] < before, 'the call is due for a poll now'
    campaign = await redis.hgetall(k.campaign('c1'))
    assert 'e:answered' not in campaign, 'the outcome comes from the API, never from the payload'
    assert 'sip_seconds' not in campaign, 'billing comes from the API, never from the payload'
    assert await redis.zcard(k.trunk_slots('t1')) == 1


@pytest.mark.parametrize('event', ['call.ended', 'call.billed'])
async def test_a_signed_event_naming_another_call_changes_nothing(client, redis, event) -> None:
    attempt_id = await live_call(redis)
    before = await tracking_scores(redis)
    call = {**ended_call(attempt_id, billed=True), 'callId': 'someone-elses-call'}
    response = await post(client, *signed(event, call))
    assert response.status_code == 202, 'a 2xx, so that Ultravox stops retrying it'
    assert response.json() == {'result': 'foreign_call'}
    assert await tracking_scores(redis) == before
    assert await redis.zcard(k.trunk_slots('t1')) == 1
    assert 'e:answered' not in await redis.hgetall(k.campaign('c1'))


async def test_call_billed_nudges_the_billing_poll_and_a_second_delivery_is_harmless(client, redis) -> None:
    attempt_id = await live_call(redis)
    member = f'{attempt_id}|call-1'
    await redis.zrem(k.TRACKING, member)
    await redis.zadd(k.TRACKING, {f'{member}|b': 10**13})
    for _ in range(2):
        response = await post(client, *signed('call.billed', ended_call(attempt_id, billed=True)))
        assert response.status_code == 202
    assert (await tracking_scores(redis))[f'{member}|b'] < 10**13
    assert member not in await tracking_scores(redis), 'nothing new is followed because of a webhook'


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {'x': value}
    return value


@pytest.mark.parametrize(
    ('payload', 'status'),
    [
        ({'event': 'call.ended', 'call': {'callId': 'call-1', 'metadata': {'attempt_id': 'nope:+12125550000:1'}}}, 404),
        ({'event': 'call.ended', 'call': {'callId': 'call-1', 'metadata': {'attempt_id': 'c1:+12125559999:1'}}}, 404),
        ({'event': 'call.ended', 'call': {'callId': 'call-1', 'metadata': {'attempt_id': 'c1:not-a-number:1'}}}, 400),
        ({'event': 'call.ended', 'call': {'callId': 'call-1', 'metadata': {'attempt_id': 'c1:+1212:99999999'}}}, 400),
        ({'event': 'call.ended', 'call': {'callId': 'call-1', 'metadata': {'attempt_id': ['c1']}}}, 400),
        ({'event': 'call.ended', 'call': {'callId': 'call-1', 'metadata': 'c1'}}, 400),
        ({'event': 'call.ended', 'call': {'callId': 10**50, 'metadata': {'attempt_id': 'c1:+12125550000:1'}}}, 400),
        ({'event': 'call.ended', 'call': {'callId': 'x' * 5000, 'metadata': {'attempt_id': 'c1:+12125550000:1'}}}, 400),
        ({'event': 'call.ended', 'call': 'call-1'}, 400),
        ({'event': 'call.started', 'call': {'callId': 'call-1'}}, 400),
        ({'event': 7, 'call': {}}, 400),
        ([1, 2, 3], 400),
        (nested(5000), 400),
    ],
    ids=[
        'unknown campaign',
        'unknown attempt',
        'malformed number',
        'huge attempt number',
        'attempt id not a string',
        'metadata not an object',
        'huge call id number',
        'huge call id',
        'call not an object',
        'unhandled event',
        'event not a string',
        'not an object',
        'deep nesting',
    ],
)
async def test_odd_but_signed_payloads_get_a_4xx_never_a_500(client, redis, payload, status) -> None:
    await live_call(redis)
    body = json.dumps(payload).encode() if not isinstance(payload, dict) or 'x' not in payload else None
    if body is None:  # json.dumps itself would recurse too deep: write the nesting by hand
        body = b'{"x":' * 5000 + b'{}' + b'}' * 5000
    timestamp = datetime.now(UTC).isoformat()
    headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign_webhook(body, timestamp, SECRET)}
    response = await post(client, body, headers)
    assert response.status_code == status


async def test_a_huge_integer_in_a_signed_payload_is_a_400(client, redis) -> None:
    await live_call(redis)
    body = b'{"event": "call.ended", "call": {"callId": ' + b'9' * 100_000 + b'}}'
    timestamp = datetime.now(UTC).isoformat()
    headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign_webhook(body, timestamp, SECRET)}
    assert (await post(client, body, headers)).status_code == 400


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
    body, headers = signed('call.ended', ended_call(attempt_id, billed=False))
    assert (await post(client, body, headers)).status_code == 202
    assert (await post(client, body, headers)).status_code == 401


@pytest.mark.parametrize(
    'respell',
    [str.upper, lambda sig: f' {sig} ', lambda sig: f'{sig},{sig}', lambda sig: f'{"0" * 64},{sig}'],
    ids=['upper case', 'spaces', 'twice', 'with another'],
)
async def test_a_replay_is_recognised_by_the_delivery_however_its_signature_is_spelled(client, redis, respell) -> None:
    attempt_id = await live_call(redis)
    body, headers = signed('call.ended', ended_call(attempt_id, billed=False))
    assert (await post(client, body, headers)).status_code == 202
    again = {**headers, SIGNATURE_HEADER: respell(headers[SIGNATURE_HEADER])}
    response = await post(client, body, again)
    assert response.status_code == 401
    assert response.json() == {'error': 'replayed'}


async def test_an_oversized_body_is_refused_before_it_is_read_whole(client) -> None:
    body = b'{"event": "call.ended", "pad": "' + b'x' * 300_000 + b'"}'
    assert (await post(client, body, {TIMESTAMP_HEADER: 'x', SIGNATURE_HEADER: 'y'})).status_code == 413


async def test_a_webhook_that_overtakes_its_create_is_asked_to_come_again(client, redis) -> None:
    await make_campaign(redis, numbers=1)
    attempt_id = (await begin_first(Scripts(redis))).split('#')[0]  # recorded as 'creating', no call id yet
    response = await post(client, *signed('call.ended', ended_call(attempt_id, billed=False)))
    assert response.status_code == 409, 'a non-2xx makes Ultravox deliver it again, after the create is recorded'
    assert await redis.zcard(k.TRACKING) == 0


async def test_a_webhook_for_a_call_back_is_accepted_and_left_to_its_trackers(client, redis) -> None:
    call = {**ended_call('unused', billed=False), 'metadata': {'direction': 'inbound', 'callback_id': 'cb-1'}}
    response = await post(client, *signed('call.ended', call))
    assert (response.status_code, response.json()) == (202, {'result': 'inbound_call'})


async def test_a_delivery_keeps_trackers_on_safety_polls_for_the_live_window(client, redis) -> None:
    attempt_id = await live_call(redis)
    assert await redis.exists(k.WEBHOOKS_LIVE) == 0
    assert (await post(client, *signed('call.ended', ended_call(attempt_id, billed=False)))).status_code == 202
    # DIALER_WEBHOOKS_LIVE_WINDOW (900 s by default), not twice the 60-s safety interval as before
    assert 800_000 < await redis.pttl(k.WEBHOOKS_LIVE) <= 900_000
