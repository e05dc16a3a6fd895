"""Telnyx direct mode: the outcome mapping, and the Call Control client against the simulated Telnyx over HTTP
(Dial streaming to a waiting Ultravox call, status, call events, the lookup after a crash, hang-up, refusals)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from dialer.models import Outcome
from dialer.provider_trunks import TelnyxTrunk
from dialer.providers import ProviderRateLimited, ProviderRejected, provider_client
from dialer.providers.telnyx import TelnyxClient, classify, dial_body
from dialer.settings import Settings
from simulator.testing import running_simulator
from tests.direct_providers import SETUPS, TELNYX_KEY
from tests.fleet_helpers import FAST_SIMULATOR


if TYPE_CHECKING:
    from collections.abc import Iterator

    from simulator.testing import SimulatorHandle

CALLBACK = 'https://hooks.example.com/webhooks/telnyx?a=spring%3A%2B12125550123%3A1&c=call-1'


@pytest.mark.parametrize(
    ('cause', 'sip', 'answered', 'outcome'),
    [
        ('normal_clearing', '200', True, Outcome.ANSWERED),
        ('time_limit', None, False, Outcome.ANSWERED),
        ('user_busy', '486', False, Outcome.BUSY),
        ('user_busy', '603', False, Outcome.REJECTED),
        ('call_rejected', '603', False, Outcome.REJECTED),
        ('not_found', '404', False, Outcome.INVALID_NUMBER),
        ('unspecified', '484', False, Outcome.INVALID_NUMBER),
        ('timeout', '487', False, Outcome.NO_ANSWER),
        ('no_answer', None, False, Outcome.NO_ANSWER),
        ('originator_cancel', '487', False, Outcome.NO_ANSWER),
        ('unspecified', '480', False, Outcome.NO_ANSWER),
        ('unspecified', '403', False, Outcome.FAILED),  # e.g. over the account's channel limit (D1)
        ('unspecified', '503', False, Outcome.FAILED),
        (None, None, False, Outcome.FAILED),
    ],
)
def test_a_telnyx_hangup_cause_and_sip_code_map_onto_our_outcome(
    cause: str | None, sip: str | None, *, answered: bool, outcome: Outcome
) -> None:
    assert classify(cause, sip, answered=answered) is outcome


def trunk(**params: Any) -> TelnyxTrunk:
    fields = {key: value.strip('"') for key, value in SETUPS['telnyx'].trunk_fields.items()}
    fields['api_key'] = TELNYX_KEY
    del fields['api_key_env']
    return TelnyxTrunk.model_validate({
        'name': 'telnyx-direct', 'from': '+14155550100', 'max_concurrent': 4, 'calls_per_second': 10,
        'mode': 'direct', 'additional_params': params, **fields,
    })  # fmt: skip


def test_the_dial_request_streams_both_tracks_to_the_join_url_and_carries_the_documented_params() -> None:
    body = dial_body(
        trunk(MachineDetection='DetectMessageEnd', Timeout=25, TimeLimit=600, Record=True),
        to='+12125550123', caller_id='+14155550100', join_url='wss://uv.example/join/1', callback_url=CALLBACK,
    )  # fmt: skip
    assert body == {
        'connection_id': 'conn-ultravox-1',
        'to': '+12125550123',
        'from': '+14155550100',
        'stream_url': 'wss://uv.example/join/1',
        'stream_track': 'both_tracks',
        'webhook_url': CALLBACK,
        'webhook_url_method': 'POST',
        'client_state': 'YT1zcHJpbmclM0ElMkIxMjEyNTU1MDEyMyUzQTEmYz1jYWxsLTE=',
        'answering_machine_detection': 'greeting_end',
        'timeout_secs': 25,
        'time_limit_secs': 600,
        'record': 'record-from-answer',
    }
    plain = dial_body(trunk(), to='+12125550123', caller_id='+14155550100', join_url='wss://x', callback_url=None)
    assert 'webhook_url' not in plain
    assert 'answering_machine_detection' not in plain


@pytest.fixture(scope='module')
def sim() -> Iterator[SimulatorHandle]:
    account = {'telnyx': SETUPS['telnyx'].account}
    # every call answered and alive for several real seconds: the test reads it live, then hangs it up
    config = {**FAST_SIMULATOR, 'provider_accounts': account, 'answer_rate': 1.0, 'time_scale': 0.1}
    with running_simulator(**{**config, 'talk_min': 30, 'talk_max': 30, 'api_key': 'uv-key'}) as handle:
        yield handle


def waiting_call(sim: SimulatorHandle) -> str:
    """An Ultravox call of ``medium.telnyx: {}`` waiting for its phone leg: its ``joinUrl``."""
    body = {'systemPrompt': 'hi', 'medium': {'telnyx': {}}, 'firstSpeakerSettings': {'user': {}}}
    answer = sim.client.post('/api/calls', json=body, headers={'X-API-Key': 'uv-key'})
    assert answer.status_code == 201, answer.text
    join_url: str = answer.json()['joinUrl']
    return join_url


def client_for(sim: SimulatorHandle, **params: Any) -> TelnyxClient:
    settings = Settings(telnyx_base_url=sim.base_url)
    client = provider_client(trunk(**params), settings)
    assert isinstance(client, TelnyxClient)
    return client


def test_a_placed_leg_is_followed_to_its_end_found_again_by_lookup_and_hung_up(sim: SimulatorHandle) -> None:
    async def scenario() -> None:
        client = client_for(sim, MachineDetection='Enable')
        try:
            since_ms = int(time.time() * 1000)
            placed = await client.place(
                to='+12125550123', caller_id='+14155550100', join_url=waiting_call(sim), callback_url=None
            )
            assert placed.leg_id.startswith('v3:')
            assert not placed.final
            # the lookup after a crash between the two creates finds exactly this leg
            found = await client.find(to='+12125550123', caller_id='+14155550100', since_ms=since_ms)
            assert [leg.leg_id for leg in found] == [placed.leg_id]
            assert await client.find(to='+12125550199', caller_id='+14155550100', since_ms=since_ms) == []
            live = await client.fetch(placed.leg_id)
            assert not live.final
            await client.hang_up(placed.leg_id)
            ended = await client.fetch(placed.leg_id)
            assert ended.final
            assert ended.outcome in {Outcome.ANSWERED, Outcome.NO_ANSWER}
            assert ended.status in {'normal_clearing', 'originator_cancel'}
            with pytest.raises(ProviderRejected) as refused:
                await client.hang_up(placed.leg_id)  # already over: Telnyx's 422, named
            assert refused.value.status == 422
            assert TELNYX_KEY not in str(refused.value)
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_the_simulated_dial_refuses_what_telnyx_would(sim: SimulatorHandle) -> None:
    join_url = waiting_call(sim)
    good = dial_body(trunk(), to='+12125550123', caller_id='+14155550100', join_url=join_url, callback_url=None)
    headers = {'Authorization': f'Bearer {TELNYX_KEY}'}
    unknown = sim.client.post('/v2/calls', json={**good, 'Timeout': 25}, headers=headers)
    assert unknown.status_code == 422
    assert unknown.json()['errors'][0]['source'] == {'pointer': '/Timeout'}
    wrong_app = sim.client.post('/v2/calls', json={**good, 'connection_id': 'other'}, headers=headers)
    assert wrong_app.status_code == 422
    assert sim.client.post('/v2/calls', json=good, headers={'Authorization': 'Bearer nope'}).status_code == 401
    assert sim.client.post('/v2/calls', json=good).status_code == 401
    bad_filter = sim.client.get('/v2/call_events', params={'filter[nope]': 'x'}, headers=headers)
    assert bad_filter.status_code == 422


def test_a_dial_over_the_accounts_limit_raises_rate_limited_and_places_nothing(sim: SimulatorHandle) -> None:
    sim.configure(provider_calls_per_second=1)

    async def scenario() -> None:
        client = client_for(sim)
        try:
            join_url = waiting_call(sim)
            while True:  # the other tests' dials may still fill this second: wait for a free one
                try:
                    await client.place(
                        to='+12125550140', caller_id='+14155550100', join_url=join_url, callback_url=None
                    )
                    break
                except ProviderRateLimited as limited:
                    await asyncio.sleep(limited.retry_after)
            legs_before = len(sim.client.get('/_sim/provider_calls/telnyx').json())
            with pytest.raises(ProviderRateLimited) as limited:
                await client.place(
                    to='+12125550141', caller_id='+14155550100', join_url=waiting_call(sim), callback_url=None
                )
            assert limited.value.retry_after >= 1
            assert len(sim.client.get('/_sim/provider_calls/telnyx').json()) == legs_before
        finally:
            await client.aclose()
            sim.configure(provider_calls_per_second=None)

    asyncio.run(scenario())


def test_the_api_key_is_sent_as_a_bearer_token_and_never_in_a_refusal() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        detail = f'bad key {TELNYX_KEY}'
        return httpx.Response(403, json={'errors': [{'code': '10010', 'title': 'Forbidden', 'detail': detail}]})

    async def scenario() -> None:
        client = TelnyxClient(trunk(), Settings(telnyx_base_url='http://telnyx.invalid'))
        client._client._transport = httpx.MockTransport(handler)
        try:
            with pytest.raises(ProviderRejected) as refused:
                await client.fetch('v3:abc')
        finally:
            await client.aclose()
        assert TELNYX_KEY not in str(refused.value)

    asyncio.run(scenario())
    assert seen[0].headers['authorization'] == f'Bearer {TELNYX_KEY}'
    assert seen[0].url.path == '/v2/calls/v3:abc'
