"""The Plivo client against the simulated Call API over HTTP: outcome mapping of hang-up causes, a leg
followed from live to its CDR, the lookup after a crash, hang-up, and the failure table."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from dialer.models import Outcome
from dialer.provider_trunks import PlivoTrunk
from dialer.providers import (
    LegStatus,
    PhoneProvider,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
    provider_client,
)
from dialer.providers.plivo import answer_url, classify
from dialer.settings import Settings
from simulator.testing import free_port, running_simulator


AUTH_ID = 'MA' + 'C' * 18
TOKEN = 'plivo-client-s3cret'
FROM = '+14155550100'
HOOKS = 'http://127.0.0.1:9/webhooks/plivo?a=spring%3A%2B12122000001%3A1&c=call-1'


@pytest.mark.parametrize(
    ('name', 'code', 'answered', 'outcome'),
    [
        ('Normal Hangup', 4000, True, Outcome.ANSWERED),
        ('Machine Detected', None, True, Outcome.ANSWERED),
        ('Busy Line', 3000, False, Outcome.BUSY),
        ('busy_line', None, False, Outcome.BUSY),
        ('Rejected', 3010, False, Outcome.REJECTED),
        ('No Answer', 3020, False, Outcome.NO_ANSWER),
        ('Canceled', 1000, False, Outcome.NO_ANSWER),
        ('Invalid Destination Address', 2000, False, Outcome.INVALID_NUMBER),
        ('Destination Out Of Service', 2010, False, Outcome.INVALID_NUMBER),
        ('', 3010, False, Outcome.REJECTED),
        ('Internal Error', None, False, Outcome.FAILED),
        ('Something New', 9999, False, Outcome.FAILED),
    ],
)
def test_plivo_hangup_causes_map_onto_our_outcomes(
    name: str, code: int | None, answered: bool, outcome: Outcome
) -> None:
    assert classify(name, code, answered=answered) is outcome


def test_the_answer_url_sits_next_to_the_status_callback_with_the_same_signed_ids() -> None:
    assert answer_url(HOOKS) == 'http://127.0.0.1:9/webhooks/plivo/answer?a=spring%3A%2B12122000001%3A1&c=call-1'


def trunk(token: str = TOKEN) -> PlivoTrunk:
    return PlivoTrunk.model_validate({
        'name': 'plivo-direct', 'from': FROM, 'max_concurrent': 2, 'calls_per_second': 1, 'mode': 'direct',
        'auth_id': AUTH_ID, 'auth_token': token, 'callback_url': 'http://127.0.0.1:9',
    })  # fmt: skip


async def test_a_leg_is_followed_from_live_to_its_cdr_found_after_a_crash_and_hung_up() -> None:
    busy, ringing = '+12122000001', '+12122000002'
    simulator = {
        'time_scale': 1.0,
        'ring_min': 30,
        'ring_max': 30,
        'provider_accounts': {'plivo': {'auth_id': AUTH_ID, 'auth_token': TOKEN}},
        'forced_outcomes': {busy: ['busy'], ringing: ['no_answer']},
    }
    with running_simulator(**simulator) as sim:
        client = provider_client(trunk(), Settings(plivo_base_url=sim.base_url))
        try:
            since_ms = int(time.time() * 1000)
            leg = await client.place(to=ringing, caller_id=FROM, join_url='wss://unused', callback_url=HOOKS)
            live = await client.fetch(leg.leg_id)
            assert (live.final, live.status) == (False, 'ringing')
            # a worker that died before hearing the request_uuid finds the leg by number and time
            found = await client.find(to=ringing, caller_id=FROM, since_ms=since_ms)
            assert [item.leg_id for item in found] == [leg.leg_id]
            assert await client.find(to=busy, caller_id=FROM, since_ms=since_ms) == []
            await client.hang_up(leg.leg_id)
            ended = await client.fetch(leg.leg_id)
            assert (ended.final, ended.status, ended.outcome) == (True, 'Canceled', Outcome.NO_ANSWER)
            # a busy line (short ring now): its CDR once it is over
            sim.configure(ring_min=0.2, ring_max=0.2)
            other = await client.place(to=busy, caller_id=FROM, join_url='wss://unused', callback_url=HOOKS)
            status = await _final(client, other.leg_id)
            assert (status.status, status.outcome, status.amd) == ('Busy Line', Outcome.BUSY, None)
            found = await client.find(to=busy, caller_id=FROM, since_ms=since_ms)
            assert [item.leg_id for item in found] == [other.leg_id]
            assert found[0].final
        finally:
            await client.aclose()


async def _final(client: PhoneProvider, leg_id: str) -> LegStatus:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = await client.fetch(leg_id)
        if status.final:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError('the leg never ended')


async def test_refusals_rate_limits_and_unreachable_apis_follow_the_failure_table() -> None:
    simulator = {
        'provider_accounts': {'plivo': {'auth_id': AUTH_ID, 'auth_token': TOKEN}},
        'provider_calls_per_second': 1,
    }
    with running_simulator(**simulator) as sim:
        wrong = provider_client(trunk('not-the-token'), Settings(plivo_base_url=sim.base_url))
        client = provider_client(trunk(), Settings(plivo_base_url=sim.base_url))
        try:
            with pytest.raises(ProviderRejected) as refused:
                await wrong.place(to='+12122000003', caller_id=FROM, join_url='wss://x', callback_url=HOOKS)
            assert refused.value.status == 401
            assert 'not-the-token' not in str(refused.value)
            await client.place(to='+12122000003', caller_id=FROM, join_url='wss://x', callback_url=HOOKS)
            with pytest.raises(ProviderRateLimited):  # over the account's 1 call/s
                await client.place(to='+12122000004', caller_id=FROM, join_url='wss://x', callback_url=HOOKS)
            # an unknown field is refused with Plivo's error shape
            raw = httpx.post(
                f'{sim.base_url}/v1/Account/{AUTH_ID}/Call/',
                json={'from': '14155550100', 'to': '12122000005', 'answer_url': HOOKS, 'Twiml': '<Response/>'},
                auth=(AUTH_ID, TOKEN),
                timeout=10,
            )
            assert raw.status_code == 400
            assert set(raw.json()) == {'api_id', 'error'}
            assert 'Twiml' in raw.json()['error']
        finally:
            await wrong.aclose()
            await client.aclose()
    nowhere = provider_client(trunk(), Settings(plivo_base_url=f'http://127.0.0.1:{free_port()}'))
    try:
        with pytest.raises(ProviderUnavailable) as down:
            await nowhere.place(to='+12122000003', caller_id=FROM, join_url='wss://x', callback_url=HOOKS)
        assert down.value.maybe_placed is False, 'a connection refused placed nothing'
    finally:
        await nowhere.aclose()
