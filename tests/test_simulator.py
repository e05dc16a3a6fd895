"""The Ultravox API simulator, exercised over real HTTP (a subprocess per module) and by unit tests."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from simulator.calls import CallStore, billed_seconds, duration, max_concurrent, max_in_window
from simulator.config import SimulatorConfig
from simulator.schema import schema_errors
from simulator.testing import SimulatorHandle, running_simulator
from simulator.webhooks import sign
from tests.threaded_server import ThreadedServer


if TYPE_CHECKING:
    from collections.abc import Iterator

    from starlette.requests import Request


BASELINE: dict[str, Any] = {'time_scale': 0.001, 'seed': 7, 'billing_delay': 5.0}
KEY = {'X-API-Key': 'test-key'}
AGENT = '4f1a3c2e-8d7b-4a6e-9c5d-0123456789ab'


@pytest.fixture(scope='module')
def simulator() -> Iterator[SimulatorHandle]:
    with running_simulator(**BASELINE) as handle:
        yield handle


@pytest.fixture
def sim(simulator: SimulatorHandle) -> Iterator[SimulatorHandle]:
    yield simulator
    simulator.configure(**SimulatorConfig.model_validate(BASELINE).model_dump(mode='json'))


@pytest.fixture
def client(sim: SimulatorHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, headers=KEY, timeout=10.0) as http:
        yield http


def sip_body(number: str = '+15551230000', host: str = 'trunk.example.com', **metadata: str) -> dict[str, Any]:
    return {
        'medium': {'sip': {'outgoing': {'to': f'sip:{number}@{host};transport=tls', 'from': '+15557654321'}}},
        'firstSpeakerSettings': {'user': {}},
        'metadata': {'campaign': 'c1', **metadata},
    }


def unique_host() -> str:
    return f'trunk-{uuid.uuid4().hex[:8]}.example.com'


def wait_for(client: httpx.Client, call_id: str, done: Any, limit: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        call = client.get(f'/api/calls/{call_id}').json()
        if done(call) or time.monotonic() > deadline:
            return call
        time.sleep(0.01)


# --- creating calls ---------------------------------------------------------------------------------------


def test_both_create_endpoints_return_201_and_a_call_valid_against_the_schema(client: httpx.Client) -> None:
    agent_call = client.post(f'/api/agents/{AGENT}/calls', json=sip_body(), params={'throttle': 'outbound'})
    ad_hoc_call = client.post('/api/calls', json={**sip_body(), 'systemPrompt': 'Be brief.'})
    for response in (agent_call, ad_hoc_call):
        assert response.status_code == 201, response.text
        call = response.json()
        assert schema_errors(call, 'Call', 'response') == []
        assert call['joined'] is None
        assert call['ended'] is None
        assert call['billingStatus'] == 'BILLING_STATUS_PENDING'
        assert call['sipDetails'] == {'billedDuration': None, 'terminationReason': None}
        assert call['metadata'] == {'campaign': 'c1'}
    assert agent_call.json()['agentId'] == AGENT
    fetched = client.get(f'/api/calls/{agent_call.json()["callId"]}')
    assert fetched.status_code == 200
    assert fetched.json()['callId'] == agent_call.json()['callId']


def test_trunk_password_is_not_echoed_in_the_call(client: httpx.Client) -> None:
    body = sip_body()
    body['medium']['sip']['outgoing']['password'] = 'trunk-secret'
    call = client.post('/api/calls', json=body).json()
    assert 'password' not in call['medium']['sip']['outgoing']


@pytest.mark.parametrize(
    'to',
    [
        '+15551234567',
        'sip:+15551234567',
        'sip:+1555@host;transport=udp',
        'sip:+1555@bad_host',
        'tel:+15551234567',
    ],
)
def test_outgoing_sip_to_that_is_not_a_sip_uri_is_rejected(client: httpx.Client, to: str) -> None:
    body = sip_body()
    body['medium']['sip']['outgoing']['to'] = to
    response = client.post('/api/calls', json=body)
    assert response.status_code == 400
    assert 'medium.sip.outgoing.to' in response.json()['detail']


def test_non_string_metadata_and_reserved_keys_are_rejected(client: httpx.Client) -> None:
    numeric = client.post('/api/calls', json={**sip_body(), 'metadata': {'attempt': 1}})
    reserved = client.post('/api/calls', json={**sip_body(), 'metadata': {'ultravox.call': 'x'}})
    assert numeric.status_code == 400
    assert 'metadata.attempt' in numeric.json()['detail']
    assert reserved.status_code == 400
    assert 'reserved' in reserved.json()['detail']


def test_wrongly_typed_fields_and_bad_durations_are_rejected(client: httpx.Client) -> None:
    assert client.post('/api/calls', json={**sip_body(), 'joinTimeout': '30'}).status_code == 400
    assert client.post('/api/calls', json={**sip_body(), 'recordingEnabled': 'yes'}).status_code == 400
    assert client.post('/api/calls', content=b'[1, 2]').status_code == 400
    assert client.post('/api/calls', content=b'{not json').status_code == 400


def test_unknown_fields_follow_the_schema_unless_strict_mode_is_on(sim: SimulatorHandle, client: httpx.Client) -> None:
    # The published schema sets no additionalProperties: false, so unknown fields pass by default.
    assert client.post('/api/calls', json={**sip_body(), 'notAField': 1}).status_code == 201
    sim.configure(reject_unknown_fields=True)
    response = client.post('/api/calls', json={**sip_body(), 'notAField': 1})
    assert response.status_code == 400
    assert 'notAField' in response.json()['detail']


def test_missing_or_wrong_api_key_is_refused_with_401(sim: SimulatorHandle) -> None:
    with httpx.Client(base_url=sim.base_url) as anonymous:
        assert anonymous.post('/api/calls', json=sip_body()).status_code == 401
        assert anonymous.post('/api/calls', json=sip_body(), headers={'X-API-Key': ''}).status_code == 401
        sim.configure(api_key='right')
        assert anonymous.get('/api/calls', headers={'X-API-Key': 'wrong'}).status_code == 401
        assert anonymous.get('/api/calls', headers={'X-API-Key': 'right'}).status_code == 200


def test_agent_id_must_be_a_uuid(client: httpx.Client) -> None:
    assert client.post('/api/agents/not-a-uuid/calls', json=sip_body()).status_code == 400


def test_unknown_call_is_404(client: httpx.Client) -> None:
    assert client.get(f'/api/calls/{uuid.uuid4()}').status_code == 404


# --- call life ----------------------------------------------------------------------------------------------


def test_answered_call_joins_ends_and_is_billed_in_whole_deciminutes(
    sim: SimulatorHandle, client: httpx.Client
) -> None:
    sim.configure(forced_outcomes={'+15550000001': ['answered']}, talk_min=10, talk_max=20)
    created = client.post('/api/calls', json=sip_body('+15550000001')).json()
    assert created['billedDuration'] is None
    ended = wait_for(client, created['callId'], lambda c: c['ended'] is not None)
    assert ended['joined'] is not None
    assert ended['endReason'] in {'hangup', 'agent_hangup'}
    assert ended['sipDetails']['terminationReason'] == 'SIP_TERMINATION_NORMAL'
    assert ended['shortSummary']
    billed = wait_for(client, created['callId'], lambda c: c['billingStatus'] != 'BILLING_STATUS_PENDING')
    assert billed['billingStatus'] == 'BILLING_STATUS_BILLED'
    seconds = int(billed['billedDuration'].removesuffix('s'))
    assert seconds in {12, 18, 24}
    assert billed['sipDetails']['billedDuration'] == billed['billedDuration']
    assert schema_errors(billed, 'Call', 'response') == []
    record = next(r for r in sim.records() if r['callId'] == created['callId'])
    assert record['outcome'] == 'answered'
    assert record['created'] < record['joined'] < record['ended']
    assert record['sip_billed_seconds'] == seconds


def test_talk_time_is_capped_by_max_duration_with_end_reason_timeout(
    sim: SimulatorHandle, client: httpx.Client
) -> None:
    sim.configure(forced_outcomes={'+15550000002': ['answered']}, talk_min=100, talk_max=200)
    created = client.post('/api/calls', json={**sip_body('+15550000002'), 'maxDuration': '7s'}).json()
    billed = wait_for(client, created['callId'], lambda c: c['billingStatus'] != 'BILLING_STATUS_PENDING')
    assert billed['endReason'] == 'timeout'
    assert billed['billedDuration'] == '12s'


@pytest.mark.parametrize(
    ('outcome', 'termination'),
    [
        ('busy', 'SIP_TERMINATION_BUSY'),
        ('invalid_number', 'SIP_TERMINATION_INVALID_NUMBER'),
        ('no_answer', 'SIP_TERMINATION_TIMEOUT'),
        ('rejected', 'SIP_TERMINATION_REJECTED'),
        ('unavailable', 'SIP_TERMINATION_DESTINATION_UNAVAILABLE'),
    ],
)
def test_unanswered_outcomes_end_unjoined_with_their_sip_reason_and_bill_nothing(
    sim: SimulatorHandle, client: httpx.Client, outcome: str, termination: str
) -> None:
    number = '+1555000' + str(abs(hash(outcome)) % 10000).zfill(4)
    sim.configure(forced_outcomes={number: [outcome]})
    created = client.post('/api/calls', json=sip_body(number)).json()
    billed = wait_for(client, created['callId'], lambda c: c['billingStatus'] != 'BILLING_STATUS_PENDING')
    assert billed['joined'] is None
    assert billed['endReason'] == 'unjoined'
    assert billed['sipDetails'] == {'billedDuration': '0s', 'terminationReason': termination}
    assert billed['billingStatus'] == 'BILLING_STATUS_FREE_ZERO_EFFECTIVE_DURATION'
    assert billed['shortSummary'] is None


def test_system_failures_end_with_their_end_reason_and_unknown_termination(
    sim: SimulatorHandle, client: httpx.Client
) -> None:
    sim.configure(forced_outcomes={'+15550000003': ['connection_error', 'system_error']})
    reasons = []
    for _ in range(2):
        created = client.post('/api/calls', json=sip_body('+15550000003')).json()
        ended = wait_for(client, created['callId'], lambda c: c['ended'] is not None)
        assert ended['sipDetails']['terminationReason'] == 'SIP_TERMINATION_UNKNOWN'
        reasons.append(ended['endReason'])
    assert reasons == ['connection_error', 'system_error']


def test_forced_outcomes_apply_to_a_numbers_calls_in_order(sim: SimulatorHandle, client: httpx.Client) -> None:
    sim.configure(forced_outcomes={'+15550000004': ['busy', 'answered']})
    first = client.post('/api/calls', json=sip_body('+15550000004', attempt_id='a-1')).json()
    second = client.post('/api/calls', json=sip_body('+15550000004', attempt_id='a-2')).json()
    by_id = {r['callId']: r for r in sim.records()}
    assert by_id[first['callId']]['outcome'] == 'busy'
    assert by_id[second['callId']]['outcome'] == 'answered'


def test_outcomes_and_timings_are_deterministic_for_a_seed() -> None:
    config = SimulatorConfig(seed=42)

    def plan_all() -> list[tuple[str, float]]:
        store = CallStore()
        plans = [
            store.create(config, sip_body(f'+1555000{i:04d}', attempt_id=str(i)), 1000.0, None, ('+1', 'h'))
            for i in range(50)
        ]
        return [(str(p.outcome), p.ended_sim) for p in plans]

    assert plan_all() == plan_all()
    assert len({outcome for outcome, _ in plan_all()}) > 2


# --- listing ------------------------------------------------------------------------------------------------


def test_listing_filters_by_every_metadata_pair_and_paginates_with_cursors(client: httpx.Client) -> None:
    campaign = uuid.uuid4().hex
    for i in range(5):
        body = sip_body(contact=str(i))
        body['metadata']['campaign'] = campaign
        assert client.post('/api/calls', json=body).status_code == 201
    other = sip_body(contact='0')
    assert client.post('/api/calls', json=other).status_code == 201

    one = client.get('/api/calls', params={'metadata.campaign': campaign, 'metadata.contact': '3'}).json()
    assert one['total'] == 1
    assert one['results'][0]['metadata'] == {'campaign': campaign, 'contact': '3'}

    seen: list[str] = []
    page = client.get('/api/calls', params={'metadata.campaign': campaign, 'pageSize': 2}).json()
    assert page['previous'] is None
    while True:
        assert page['total'] == 5
        seen.extend(call['metadata']['contact'] for call in page['results'])
        if page['next'] is None:
            break
        assert page['next'].startswith('http://127.0.0.1:')
        page = client.get(page['next']).json()
    assert seen == ['4', '3', '2', '1', '0']  # newest first
    assert page['previous'] is not None
    back = client.get(page['previous']).json()
    assert [call['metadata']['contact'] for call in back['results']] == ['2', '1']


def test_listing_rejects_a_bad_cursor_or_date(client: httpx.Client) -> None:
    assert client.get('/api/calls', params={'cursor': '!!!'}).status_code == 400
    assert client.get('/api/calls', params={'fromDate': 'yesterday'}).status_code == 400
    future = client.get('/api/calls', params={'fromDate': '2999-01-01'}).json()
    assert future['total'] == 0


# --- limits and faults --------------------------------------------------------------------------------------


def test_concurrent_call_limit_answers_429_with_retry_after(sim: SimulatorHandle, client: httpx.Client) -> None:
    sim.configure(time_scale=1.0, max_concurrent_calls=1, forced_outcomes={'+15550000005': ['answered']})
    host = unique_host()
    # Calls from earlier tests may still be live for a few real milliseconds: retry until one gets the slot.
    for _ in range(500):
        first = client.post('/api/calls', json=sip_body('+15550000005', host))
        if first.status_code == 201:
            break
        time.sleep(0.01)
    assert first.status_code == 201
    second = client.post('/api/calls', json=sip_body('+15550000006', host))
    assert second.status_code == 429
    assert int(second.headers['Retry-After']) >= 1
    assert [r['sip_host'] for r in sim.records()].count(host) == 1
    assert sim.stats()['rejected']['limit_429'] >= 1


def test_creates_per_second_limit_answers_429_with_retry_after(sim: SimulatorHandle, client: httpx.Client) -> None:
    sim.configure(creates_per_second=2, creates_per_minute=1000)
    statuses = [client.post('/api/calls', json=sip_body()).status_code for _ in range(3)]
    assert statuses.count(429) >= 1
    limited = client.post('/api/calls', json=sip_body())
    if limited.status_code == 429:  # the window may have slid on a slow machine; no timed assertion
        assert int(limited.headers['Retry-After']) >= 1


def test_named_throttle_limits_only_its_own_creates(sim: SimulatorHandle, client: httpx.Client) -> None:
    sim.configure(throttles={'slow': {'per_minute': 1}, 'fast': {}})
    assert client.post('/api/calls', json=sip_body(), params={'throttle': 'slow'}).status_code == 201
    assert client.post('/api/calls', json=sip_body(), params={'throttle': 'slow'}).status_code == 429
    assert client.post('/api/calls', json=sip_body(), params={'throttle': 'fast'}).status_code == 201
    assert client.post('/api/calls', json=sip_body(), params={'throttle': 'nope'}).status_code == 400


def test_lost_response_creates_the_call_but_the_client_sees_a_connection_error(
    sim: SimulatorHandle, client: httpx.Client
) -> None:
    sim.configure(lost_response_rate=1.0)
    attempt = uuid.uuid4().hex
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post('/api/calls', json=sip_body(attempt_id=attempt))
    assert [r for r in sim.records() if r['metadata'].get('attempt_id') == attempt]
    assert sim.stats()['faults']['lost_response'] >= 1


def test_dropped_request_gets_no_response_and_creates_no_call(sim: SimulatorHandle, client: httpx.Client) -> None:
    sim.configure(drop_rate=1.0)
    attempt = uuid.uuid4().hex
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post('/api/calls', json=sip_body(attempt_id=attempt))
    assert not [r for r in sim.records() if r['metadata'].get('attempt_id') == attempt]


def test_injected_server_errors_create_no_call(sim: SimulatorHandle, client: httpx.Client) -> None:
    sim.configure(error_5xx_rate=1.0, get_error_rate=1.0)
    attempt = uuid.uuid4().hex
    response = client.post('/api/calls', json=sip_body(attempt_id=attempt))
    assert response.status_code in {500, 502, 503}
    assert not [r for r in sim.records() if r['metadata'].get('attempt_id') == attempt]
    assert client.get(f'/api/calls/{uuid.uuid4()}').status_code in {500, 502, 503}


def test_config_changes_are_validated(sim: SimulatorHandle) -> None:
    response = sim.client.post('/_sim/config', json={'answer_rate': -1})
    assert response.status_code == 400
    response = sim.client.post('/_sim/config', json={'no_such_field': 1})
    assert response.status_code == 400


# --- statistics ---------------------------------------------------------------------------------------------


def test_max_concurrent_counts_overlaps_of_half_open_intervals() -> None:
    assert max_concurrent([]) == 0
    assert max_concurrent([(0, 1), (1, 2), (2, 3)]) == 1  # an end at t frees the slot before a start at t
    assert max_concurrent([(0, 10), (1, 2), (1.5, 3), (2.5, 4)]) == 3
    assert max_concurrent([(0, 5)] * 4 + [(5, 6)]) == 4


def test_max_creates_in_one_second_uses_a_sliding_half_open_window() -> None:
    assert max_in_window([]) == 0
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.2]) == 4  # [0.5, 1.5) holds 0.5, 0.99, 1.0, 1.2
    assert max_in_window([0.0, 1.0, 2.0]) == 1
    assert max_in_window([3.0, 0.1, 0.2, 3.05]) == 2


def test_stats_report_per_host_figures_and_duplicate_attempts(sim: SimulatorHandle, client: httpx.Client) -> None:
    sim.configure(time_scale=1.0, forced_outcomes={'+15550000007': ['answered', 'answered']})
    host = unique_host()
    attempt = uuid.uuid4().hex
    before = sim.stats()['duplicate_attempts']
    for _ in range(2):
        assert client.post('/api/calls', json=sip_body('+15550000007', host, attempt_id=attempt)).status_code == 201
    stats = sim.stats()
    assert stats['hosts'][host] == {'calls': 2, 'max_concurrent': 2, 'max_creates_in_1s': 2} or (
        stats['hosts'][host]['calls'] == 2 and stats['hosts'][host]['max_concurrent'] == 2
    )
    assert stats['duplicate_attempts'] == before + 1
    assert stats['requests']['create_call'] >= 2


def test_duration_strings_and_deciminute_billing() -> None:
    assert duration(42) == '42s'
    assert duration(12.5) == '12.5s'
    assert billed_seconds(0) == 0
    assert billed_seconds(0.1) == 6
    assert billed_seconds(6) == 6
    assert billed_seconds(6.01) == 12


# --- webhooks -----------------------------------------------------------------------------------------------


class Receiver(ThreadedServer):
    """A tiny webhook endpoint on 127.0.0.1 that fails its first ``failures`` deliveries."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[tuple[bytes, dict[str, str]]] = []

        async def hook(request: Request) -> Response:
            if self.failures > 0:
                self.failures -= 1
                return Response(status_code=500)
            self.received.append((await request.body(), dict(request.headers)))
            return Response(status_code=204)

        super().__init__(Starlette(routes=[Route('/hook', hook, methods=['POST'])]))

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.port}/hook'


def test_webhooks_are_delivered_signed_and_retried_after_failures(sim: SimulatorHandle, client: httpx.Client) -> None:
    with Receiver(failures=1) as receiver:
        sim.configure(
            webhook_url=receiver.url,
            webhook_secret=['old-secret', 'new-secret'],
            webhook_retry_base=1.0,
            forced_outcomes={'+15550000008': ['answered']},
        )
        call_id = client.post('/api/calls', json=sip_body('+15550000008')).json()['callId']
        deadline = time.monotonic() + 10
        events: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline and len(events) < 2:
            for body, headers in receiver.received:
                payload = json.loads(body)
                if payload['call']['callId'] == call_id:
                    events[payload['event']] = payload
                    timestamp = headers['x-ultravox-webhook-timestamp']
                    expected = hmac.new(b'new-secret', body + timestamp.encode(), hashlib.sha256).hexdigest()
                    assert expected in headers['x-ultravox-webhook-signature'].split(',')
            time.sleep(0.02)
    assert set(events) == {'call.ended', 'call.billed'}
    assert events['call.ended']['call']['ended'] is not None
    assert events['call.billed']['call']['billingStatus'] == 'BILLING_STATUS_BILLED'
    assert schema_errors(events['call.billed']['call'], 'Call', 'response') == []
    assert sim.stats()['webhooks']['non_2xx'] >= 1


def test_signature_is_one_hmac_per_secret_over_body_and_timestamp() -> None:
    body, timestamp = b'{"event":"call.ended"}', '2026-07-01T00:00:00Z'
    first = hmac.new(b'a', body + timestamp.encode(), hashlib.sha256).hexdigest()
    second = hmac.new(b'b', body + timestamp.encode(), hashlib.sha256).hexdigest()
    assert sign(body, timestamp, ['a', 'b']) == f'{first},{second}'
