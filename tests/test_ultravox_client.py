"""The Ultravox client against an in-process HTTP fake (httpx.MockTransport): request shape, failure
classification, retries of reads, pagination, metrics and keeping secrets out of errors and logs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from openapi_schema import schema_errors
from prometheus_client import REGISTRY
from pydantic import SecretStr
from structlog.testing import capture_logs

from dialer.models import CampaignConfig, ContactRecord
from dialer.settings import Settings
from dialer.trunks import SipTrunk
from dialer.ultravox import (
    AccountFault,
    AgentNotFound,
    CallNotFound,
    CreateCallRequest,
    RateLimited,
    RequestRejected,
    TransientError,
    UltravoxClient,
    UltravoxError,
    build_create_request,
    parse_retry_after,
)


BASE_URL = 'http://ultravox.invalid'
API_KEY = 'uvx-test-key-5f1c2a9e'
PASSWORD = 'trunk-secret-83hd71'
NUMBER = '+15551234567'
AGENT_ID = '0b7f8a7c-5f64-4d2e-9a51-1f0c4f6e2a11'


def make_trunk(**overrides: Any) -> SipTrunk:
    fields: dict[str, Any] = {
        'name': 'carrier',
        'host': 'sip.carrier.invalid',
        'transport': 'tls',
        'caller_id': '+15557654321',
        'username': 'trunk-user',
        'max_concurrent': 5,
        'calls_per_second': 1,
    }
    fields.update(overrides)
    return SipTrunk(**fields)


def make_config(**overrides: Any) -> CampaignConfig:
    fields: dict[str, Any] = {'name': 'spring', 'trunk': 'carrier', 'agent_id': AGENT_ID}
    fields.update(overrides)
    return CampaignConfig(**fields)


CONTACT = ContactRecord(contact_id='c-17', line=3, name='Ada', context={'plan': 'gold', 'city': 'Paris'})


def make_request(config: CampaignConfig | None = None, *, password: str | None = PASSWORD) -> CreateCallRequest:
    return build_create_request(
        config or make_config(),
        make_trunk(),
        SecretStr(password) if password is not None else None,
        NUMBER,
        CONTACT,
        attempt_id=f'spring:{NUMBER}:2',
        attempt=2,
    )


class Recorder:
    """A MockTransport handler answering from a script and remembering every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def make_client(handler: Recorder, sleeps: Sleeps | None = None, **kwargs: Any) -> UltravoxClient:
    return UltravoxClient(
        BASE_URL,
        SecretStr(API_KEY),
        transport=httpx.MockTransport(handler),
        sleep=sleeps or Sleeps(),
        **kwargs,
    )


def responses(endpoint: str, status_class: str) -> float:
    value = REGISTRY.get_sample_value(
        'dialer_ultravox_responses_total', {'endpoint': endpoint, 'status_class': status_class}
    )
    return value or 0.0


def call_object(call_id: str = 'call-1', **fields: Any) -> dict[str, Any]:
    return {'callId': call_id, 'joined': None, 'ended': None, 'metadata': {}, **fields}


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text
        assert PASSWORD not in text
        assert NUMBER not in text
        assert NUMBER[1:] not in text


# --- building the create request --------------------------------------------------------------------


def test_agent_call_request_targets_the_agent_with_template_context_and_string_metadata() -> None:
    request = make_request(make_config(max_duration=600.0, join_timeout=12.5, throttle='outbound'))

    assert request.path == f'/api/agents/{AGENT_ID}/calls'
    assert request.params == {'throttle': 'outbound'}
    body = request.body
    assert body['medium'] == {
        'sip': {
            'outgoing': {
                'to': f'sip:{NUMBER}@sip.carrier.invalid;transport=tls',
                'from': '+15557654321',
                'username': 'trunk-user',
                'password': PASSWORD,
            }
        }
    }
    assert body['firstSpeakerSettings'] == {'user': {}}
    assert body['metadata'] == {
        'campaign': 'spring',
        'contact_id': 'c-17',
        'attempt': '2',
        'attempt_id': f'spring:{NUMBER}:2',
    }
    assert body['templateContext'] == {'plan': 'gold', 'city': 'Paris', 'name': 'Ada'}
    assert body['maxDuration'] == '600s'
    assert body['joinTimeout'] == '12.5s'
    assert 'systemPrompt' not in body


def test_ad_hoc_call_request_sends_the_prompt_and_no_template_context() -> None:
    request = make_request(make_config(agent_id=None, system_prompt='You are polite.', first_speaker='agent'))

    assert request.path == '/api/calls'
    assert request.params == {}
    assert request.body['systemPrompt'] == 'You are polite.'
    assert request.body['firstSpeakerSettings'] == {'agent': {}}
    assert 'templateContext' not in request.body
    assert 'maxDuration' not in request.body
    assert 'joinTimeout' not in request.body


def test_request_without_password_or_context_omits_them() -> None:
    bare = ContactRecord(contact_id='c-1', line=1)
    request = build_create_request(make_config(), make_trunk(), None, NUMBER, bare, attempt_id='a', attempt=1)
    assert 'password' not in request.body['medium']['sip']['outgoing']
    assert 'templateContext' not in request.body


def test_create_request_repr_never_shows_the_password() -> None:
    assert PASSWORD not in repr(make_request())
    assert PASSWORD not in str(make_request())


@pytest.mark.parametrize(
    ('config', 'component'),
    [
        (make_config(), 'ultravox.v1.StartAgentCallRequest'),
        (
            make_config(max_duration=1800, join_timeout=20, throttle='t1', first_speaker='agent'),
            'ultravox.v1.StartAgentCallRequest',
        ),
        (make_config(max_duration=90.25, join_timeout=0.5), 'ultravox.v1.StartAgentCallRequest'),
        (make_config(agent_id=None, system_prompt='Hi {{name}}'), 'ultravox.v1.StartCallRequest'),
        (
            make_config(agent_id=None, system_prompt='Hi', max_duration=600, join_timeout=30.125),
            'ultravox.v1.StartCallRequest',
        ),
    ],
)
def test_built_bodies_validate_against_the_ultravox_schema(config: CampaignConfig, component: str) -> None:
    for password in (PASSWORD, None):
        body = make_request(config, password=password).body
        assert schema_errors(body, component) == []


def test_schema_check_catches_a_field_the_request_does_not_know() -> None:
    body = make_request(make_config(agent_id=None, system_prompt='Hi')).body
    assert schema_errors({**body, 'templateContext': {'name': 'Ada'}}, 'ultravox.v1.StartCallRequest')
    assert schema_errors({**body, 'maxDuration': '600.0.0s'}, 'ultravox.v1.StartCallRequest')


# --- create_call ------------------------------------------------------------------------------------


async def test_create_sends_one_post_with_the_api_key_and_returns_the_call() -> None:
    handler = Recorder(httpx.Response(201, json=call_object('new-call')))
    before = responses('create', '2xx')
    async with make_client(handler) as client:
        call = await client.create_call(make_request(make_config(throttle='outbound')))

    assert call['callId'] == 'new-call'
    (sent,) = handler.requests
    assert sent.method == 'POST'
    assert sent.url.path == f'/api/agents/{AGENT_ID}/calls'
    assert sent.url.params['throttle'] == 'outbound'
    assert sent.headers['X-API-Key'] == API_KEY
    assert json.loads(sent.content)['metadata']['attempt'] == '2'
    assert responses('create', '2xx') == before + 1


@pytest.mark.parametrize(
    ('status', 'headers', 'expected'),
    [
        (429, {'Retry-After': '7'}, 7.0),
        (429, {}, 1.0),
        (503, {'Retry-After': '2.5'}, 2.5),
        (503, {}, 1.0),
        (429, {'Retry-After': 'soon'}, 1.0),
    ],
)
async def test_429_and_503_are_rate_limited_with_retry_after(
    status: int, headers: dict[str, str], expected: float
) -> None:
    handler = Recorder(httpx.Response(status, headers=headers, text='slow down'))
    status_class = '429' if status == 429 else '5xx'
    before = responses('create', status_class)
    async with make_client(handler) as client:
        with pytest.raises(RateLimited) as caught:
            await client.create_call(make_request())
    assert caught.value.retry_after == expected
    assert caught.value.status == status
    assert len(handler.requests) == 1
    assert responses('create', status_class) == before + 1


def test_retry_after_accepts_an_http_date() -> None:
    now = datetime(2026, 7, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after('Wed, 01 Jul 2026 12:00:30 GMT', now=now) == 30.0
    assert parse_retry_after('Wed, 01 Jul 2026 11:59:00 GMT', now=now) == 0.0
    assert parse_retry_after(None) == 1.0
    assert parse_retry_after('-5') == 0.0


async def test_400_is_rejected_without_echoing_the_password_key_or_number() -> None:
    # A server that echoes the request back in its error must not leak it through our exception.
    echo = json.dumps({'error': 'bad medium', 'request': make_request().body, 'key': API_KEY})
    handler = Recorder(httpx.Response(400, text=echo))
    before = responses('create', '4xx')
    with capture_logs() as logs:
        async with make_client(handler) as client:
            with pytest.raises(RequestRejected) as caught:
                await client.create_call(make_request())

    assert caught.value.status == 400
    assert 'bad medium' in caught.value.reason
    assert len(caught.value.reason) <= 500
    assert_no_secrets(str(caught.value), repr(caught.value), caught.value.reason, repr(logs))
    assert responses('create', '4xx') == before + 1


async def test_long_error_bodies_are_truncated_to_500_characters() -> None:
    handler = Recorder(httpx.Response(422, text='x' * 5000))
    async with make_client(handler) as client:
        with pytest.raises(RequestRejected) as caught:
            await client.create_call(make_request())
    assert len(caught.value.reason) == 500


async def test_404_on_an_agents_create_says_the_agent_is_missing_not_the_request() -> None:
    handler = Recorder(httpx.Response(404, text='agent not found'))
    async with make_client(handler) as client:
        with pytest.raises(AgentNotFound):
            await client.create_call(make_request())


async def test_404_on_an_ad_hoc_create_is_a_rejection_of_the_request() -> None:
    handler = Recorder(httpx.Response(404, text='no such thing'))
    config = make_config(agent_id=None, system_prompt='Hello.')
    async with make_client(handler) as client:
        with pytest.raises(RequestRejected) as caught:
            await client.create_call(make_request(config))
    assert not isinstance(caught.value, CallNotFound)


@pytest.mark.parametrize(('status', 'code'), [(401, 'unauthorized'), (402, 'payment_required'), (403, 'forbidden')])
@pytest.mark.parametrize('endpoint', ['create', 'get', 'list', 'agent'])
async def test_account_refusals_are_account_faults_on_every_endpoint_never_rejections(
    status: int, code: str, endpoint: str
) -> None:
    handler = Recorder(httpx.Response(status, text='Invalid API key'))
    calls = {
        'create': lambda c: c.create_call(make_request()),
        'get': lambda c: c.get_call('c1'),
        'list': lambda c: c.find_calls({'attempt_id': 'x'}),
        'agent': lambda c: c.get_agent('6f9a1c3e-8a39-4bb6-9a55-0f3d5d8e2a10'),
    }
    async with make_client(handler) as client:
        with pytest.raises(AccountFault) as caught:
            await calls[endpoint](client)
    assert not isinstance(caught.value, RequestRejected)
    assert caught.value.code == code
    assert len(handler.requests) == 1, 'an account fault is not retried'


@pytest.mark.parametrize('status', [500, 502, 504, 599])
async def test_5xx_on_create_may_have_created_the_call(status: int) -> None:
    handler = Recorder(httpx.Response(status, text=f'upstream failed for {PASSWORD}'))
    before = responses('create', '5xx')
    async with make_client(handler) as client:
        with pytest.raises(TransientError) as caught:
            await client.create_call(make_request())
    assert caught.value.maybe_created is True
    assert len(handler.requests) == 1
    assert_no_secrets(str(caught.value))
    assert responses('create', '5xx') == before + 1


@pytest.mark.parametrize(
    ('error', 'maybe_created'),
    [
        (httpx.RemoteProtocolError('Server disconnected without sending a response.'), True),
        (httpx.ReadTimeout('timed out'), True),
        (httpx.ReadError('connection reset'), True),
        (httpx.WriteError('broken pipe'), True),
        (httpx.ConnectError('[Errno 111] Connection refused'), False),
        (httpx.ConnectTimeout('timed out'), False),
        (httpx.PoolTimeout('no connection available'), False),
    ],
)
async def test_lost_connections_say_whether_the_call_may_exist(error: Exception, maybe_created: bool) -> None:
    handler = Recorder(error)
    before = responses('create', 'error')
    async with make_client(handler) as client:
        with pytest.raises(TransientError) as caught:
            await client.create_call(make_request())
    assert caught.value.maybe_created is maybe_created
    assert type(error).__name__ in caught.value.reason
    # The httpx exception carries the request (with the password): it is not chained.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert len(handler.requests) == 1
    assert responses('create', 'error') == before + 1


async def test_create_with_a_body_that_is_not_json_may_have_created_the_call() -> None:
    handler = Recorder(httpx.Response(201, text='<html>'))
    async with make_client(handler) as client:
        with pytest.raises(TransientError) as caught:
            await client.create_call(make_request())
    assert caught.value.maybe_created is True


async def test_every_failure_is_an_ultravox_error() -> None:
    for answer in (httpx.Response(429), httpx.Response(400), httpx.Response(500), httpx.ConnectError('x')):
        async with make_client(Recorder(answer)) as client:
            with pytest.raises(UltravoxError):
                await client.create_call(make_request())


async def test_logs_never_carry_the_key_password_or_number() -> None:
    answers = [
        httpx.Response(400, text=json.dumps(make_request().body)),
        httpx.Response(500, text=f'{PASSWORD} {NUMBER}'),
        httpx.RemoteProtocolError(f'lost while dialling {NUMBER}'),
        httpx.Response(429),
    ]
    with capture_logs() as logs:
        for answer in answers:
            async with make_client(Recorder(answer)) as client:
                with pytest.raises(UltravoxError):
                    await client.create_call(make_request())
    assert logs
    assert_no_secrets(repr(logs))


# --- get_call ---------------------------------------------------------------------------------------


async def test_get_call_retries_transient_failures_with_growing_backoff() -> None:
    handler = Recorder(
        httpx.Response(500),
        httpx.ReadTimeout('timed out'),
        httpx.Response(502),
        httpx.Response(200, json=call_object('c1', ended='2026-07-01T12:00:00Z')),
    )
    sleeps = Sleeps()
    before = responses('get', '5xx')
    async with make_client(handler, sleeps, backoff_base=1.0, backoff_cap=100.0) as client:
        call = await client.get_call('c1')

    assert call['callId'] == 'c1'
    assert [r.url.path for r in handler.requests] == ['/api/calls/c1'] * 4
    assert len(sleeps.delays) == 3
    # Equal jitter: try n waits between half and all of base * 2**(n-1).
    for n, delay in enumerate(sleeps.delays, start=1):
        assert 2 ** (n - 1) / 2 <= delay <= 2 ** (n - 1)
    assert responses('get', '5xx') == before + 2


async def test_get_call_waits_as_long_as_retry_after_says() -> None:
    handler = Recorder(
        httpx.Response(429, headers={'Retry-After': '3'}),
        httpx.Response(503, headers={'Retry-After': '2'}),
        httpx.Response(200, json=call_object('c1')),
    )
    sleeps = Sleeps()
    async with make_client(handler, sleeps) as client:
        await client.get_call('c1')
    assert sleeps.delays == [3.0, 2.0]


async def test_get_call_gives_up_after_max_tries_with_the_last_error() -> None:
    handler = Recorder(httpx.Response(500, text='boom'))
    sleeps = Sleeps()
    async with make_client(handler, sleeps) as client:
        with pytest.raises(TransientError):
            await client.get_call('c1')
    assert len(handler.requests) == 4
    assert len(sleeps.delays) == 3


async def test_get_call_does_not_wait_out_an_excessive_retry_after() -> None:
    handler = Recorder(httpx.Response(429, headers={'Retry-After': '3600'}))
    sleeps = Sleeps()
    async with make_client(handler, sleeps) as client:
        with pytest.raises(RateLimited) as caught:
            await client.get_call('c1')
    assert caught.value.retry_after == 3600
    assert len(handler.requests) == 1
    assert sleeps.delays == []


async def test_unknown_call_is_call_not_found_without_retry() -> None:
    handler = Recorder(httpx.Response(404, text='Not found.'))
    async with make_client(handler) as client:
        with pytest.raises(CallNotFound) as caught:
            await client.get_call('missing')
    assert caught.value.status == 404
    assert len(handler.requests) == 1


async def test_get_call_does_not_retry_a_rejection() -> None:
    handler = Recorder(httpx.Response(400, text='Bad request'))
    async with make_client(handler) as client:
        with pytest.raises(RequestRejected):
            await client.get_call('c1')
    assert len(handler.requests) == 1


async def test_call_ids_are_escaped_into_the_path() -> None:
    handler = Recorder(httpx.Response(200, json=call_object()))
    async with make_client(handler) as client:
        await client.get_call('../webhooks')
    assert handler.requests[0].url.raw_path == b'/api/calls/..%2Fwebhooks'


# --- find_calls -------------------------------------------------------------------------------------


async def test_find_calls_filters_by_metadata_and_follows_next_links() -> None:
    handler = Recorder(
        httpx.Response(
            200,
            json={
                'results': [call_object('a'), call_object('b')],
                # A link to a foreign host: only its query is used, against our base URL.
                'next': 'http://api.example.org/api/calls?cursor=cD0y&metadata.campaign=spring',
                'total': 3,
            },
        ),
        httpx.Response(500),
        httpx.Response(200, json={'results': [call_object('c')], 'next': None, 'total': 3}),
    )
    sleeps = Sleeps()
    before = responses('list', '2xx')
    async with make_client(handler, sleeps) as client:
        calls = await client.find_calls({'campaign': 'spring', 'attempt_id': 'spring:x:1'})

    assert [c['callId'] for c in calls] == ['a', 'b', 'c']
    first, _, last = handler.requests
    assert first.url.host == last.url.host == 'ultravox.invalid'
    assert first.url.path == last.url.path == '/api/calls'
    assert dict(first.url.params) == {'metadata.campaign': 'spring', 'metadata.attempt_id': 'spring:x:1'}
    assert dict(last.url.params) == {
        'metadata.campaign': 'spring',
        'metadata.attempt_id': 'spring:x:1',
        'cursor': 'cD0y',
    }
    assert all(r.headers['X-API-Key'] == API_KEY for r in handler.requests)
    assert len(sleeps.delays) == 1
    assert responses('list', '2xx') == before + 2


async def test_find_calls_accepts_a_bare_cursor_as_next() -> None:
    handler = Recorder(
        httpx.Response(200, json={'results': [call_object('a')], 'next': 'tok2'}),
        httpx.Response(200, json={'results': [], 'next': None}),
    )
    async with make_client(handler) as client:
        calls = await client.find_calls({'campaign': 'spring'})
    assert [c['callId'] for c in calls] == ['a']
    assert dict(handler.requests[1].url.params) == {'metadata.campaign': 'spring', 'cursor': 'tok2'}


async def test_find_calls_refuses_pagination_that_loops() -> None:
    handler = Recorder(httpx.Response(200, json={'results': [call_object('a')], 'next': '/api/calls?cursor=same'}))
    async with make_client(handler) as client:
        with pytest.raises(UltravoxError, match='repeats'):
            await client.find_calls({'campaign': 'spring'})


# --- construction -----------------------------------------------------------------------------------


async def test_client_from_settings_uses_explicit_timeouts_and_pool_size() -> None:
    settings = Settings(
        ultravox_base_url='http://127.0.0.1:9',
        ultravox_api_key=SecretStr(API_KEY),
        ultravox_connect_timeout=2.0,
        ultravox_read_timeout=9.0,
        ultravox_max_connections=17,
    )
    client = UltravoxClient.from_settings(settings)
    try:
        timeout = client._client.timeout
        assert (timeout.connect, timeout.read) == (2.0, 9.0)
        assert client._client.headers['X-API-Key'] == API_KEY
        assert str(client._client.base_url).startswith('http://127.0.0.1:9')
        assert client._client._transport._pool._max_connections == 17  # type: ignore[attr-defined]
    finally:
        await client.aclose()
    assert client._client.is_closed
    assert API_KEY not in repr(settings)


def test_an_ad_hoc_prompt_gets_each_contacts_values_filled_in() -> None:
    config = make_config(agent_id=None, system_prompt='Call {{name}} about the {{ plan }} plan. {{#x}}{{unknown}}')
    request = build_create_request(config, make_trunk(), None, NUMBER, CONTACT, attempt_id='a:+1:1', attempt=1)
    assert request.body['systemPrompt'] == 'Call Ada about the gold plan. {{#x}}{{unknown}}'
    assert 'templateContext' not in request.body
    assert schema_errors(request.body, 'ultravox.v1.StartCallRequest') == []


@pytest.mark.parametrize('base', ['http://ultravox.invalid', 'http://ultravox.invalid/', 'http://gw.invalid/uv/v1/'])
async def test_every_request_goes_under_the_base_url_with_its_query_and_nothing_else(base: str) -> None:
    recorder = Recorder(httpx.Response(200, json={'results': [], 'next': None}))
    client = UltravoxClient(base, SecretStr(API_KEY), transport=httpx.MockTransport(recorder), sleep=Sleeps())
    await client.find_calls({'attempt_id': 'c:+1:1'})
    await client.get_call('call/1')
    await client.aclose()
    prefix = base.rstrip('/')
    assert [str(request.url) for request in recorder.requests] == [
        f'{prefix}/api/calls?metadata.attempt_id=c%3A%2B1%3A1',
        f'{prefix}/api/calls/call%2F1',
    ]
