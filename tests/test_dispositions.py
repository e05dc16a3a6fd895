"""Tools on each call, the disposition script, voicemail detection and the call-back policy."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from openapi_schema import schema_errors
from pydantic import SecretStr

from campaigns.policy import decide_callback, decide_retry
from dialer import constants as k
from dialer.dispositions import DispositionReport, record_disposition
from dialer.models import CallingHours, CampaignConfig, ContactRecord, Outcome, RetryPolicy
from dialer.scripts import CallbackAsked, Scripts
from dialer.tools import TOKEN_HEADER, ToolEndpoint, selected_tools, token_matches, tool_token
from dialer.trunks import SipTrunk
from dialer.ultravox import UltravoxClient, build_create_request
from dialer.voicemail import Voicemail, detect_voicemail
from simulator.testing import running_simulator
from tests.ledger import LIMITS, claim, live_call, make_campaign


SECRET = SecretStr('tool-secret-0123456789abcdef')
ENDPOINT = ToolEndpoint('https://hooks.example.test', SECRET)
AGENT_ID = '0b7f8a7c-5f64-4d2e-9a51-1f0c4f6e2a11'


TRUNK = SipTrunk(name='t', host='sip.example.invalid', caller_id='+15557654321', max_concurrent=1, calls_per_second=1)


def _request(config: CampaignConfig) -> dict:
    trunk = TRUNK
    contact = ContactRecord(contact_id='c1', line=2)
    return build_create_request(
        config, trunk, None, '+15551234567', contact, attempt_id='c:+15551234567:1', attempt=1, tools=ENDPOINT
    ).body


@pytest.mark.parametrize(
    ('fields', 'component'),
    [
        ({'agent_id': AGENT_ID}, 'ultravox.v1.StartAgentCallRequest'),
        ({'system_prompt': 'Hi', 'voicemail_message': 'Call us back'}, 'ultravox.v1.StartCallRequest'),
        ({'system_prompt': 'Hi'}, 'ultravox.v1.StartCallRequest'),
    ],
)
def test_every_create_request_with_tools_matches_the_openapi_schema(fields: dict, component: str) -> None:
    body = _request(CampaignConfig(name='c', trunk='t', **fields))
    assert schema_errors(body, component) == []
    tools = body['toolOverrides']['add'] if 'agent_id' in fields else body['selectedTools']
    outcome = tools[0]['temporaryTool']
    assert outcome['http'] == {'baseUrlPattern': 'https://hooks.example.test/tools/outcome', 'httpMethod': 'POST'}
    header = next(p for p in outcome['staticParameters'] if p['name'] == TOKEN_HEADER)
    assert header['value'] == tool_token(SECRET, 'c:+15551234567:1')
    assert SECRET.get_secret_value() not in json.dumps(body), 'the secret itself never leaves the dialer'


def test_ad_hoc_campaigns_get_leave_voicemail_with_their_message_and_hang_up() -> None:
    config = CampaignConfig(name='c', trunk='t', system_prompt='Hi', voicemail_message='Please call back')
    names = [tool.get('toolName') for tool in selected_tools(config, 'c:+15551234567:1', None)]
    assert names == ['leaveVoicemail', 'hangUp']
    assert selected_tools(config, 'x', None)[0]['parameterOverrides'] == {'message': 'Please call back'}
    assert selected_tools(CampaignConfig(name='c', trunk='t', agent_id=AGENT_ID), 'x', None) == []


def test_a_token_opens_only_its_own_attempt() -> None:
    token = tool_token(SECRET, 'c:+15551234567:1')
    assert token_matches(SECRET, 'c:+15551234567:1', token)
    assert not token_matches(SECRET, 'c:+15551234567:2', token)
    assert not token_matches(SECRET, 'd:+15551234567:1', token)
    assert not token_matches(SecretStr('another-secret-0123456789'), 'c:+15551234567:1', token)
    assert not token_matches(SECRET, 'c:+15551234567:1', '')
    assert not token_matches(SECRET, 'c:+15551234567:1', None)


def test_voicemail_is_seen_in_the_leave_voicemail_invocation_and_nothing_else() -> None:
    call = {
        'role': 'MESSAGE_ROLE_TOOL_CALL',
        'toolName': 'leaveVoicemail',
        'invocationId': 'i',
        'text': '{"message":"Hi"}',
    }
    ok = {'role': 'MESSAGE_ROLE_TOOL_RESULT', 'toolName': 'leaveVoicemail', 'invocationId': 'i', 'text': 'done'}
    failed = {**ok, 'errorDetails': 'boom'}
    assert detect_voicemail([call, ok]) == detect_voicemail([call]) == detect_voicemail([call, ok])
    assert detect_voicemail([call, ok]).left
    assert not detect_voicemail([call, failed]).left
    assert detect_voicemail([call, failed]).reached
    silent = {**call, 'text': '{}'}
    assert not detect_voicemail([silent]).left
    assert detect_voicemail([silent], message_configured=True).left
    hang_up = {**call, 'toolName': 'hangUp'}
    assert not detect_voicemail([hang_up, {'role': 'MESSAGE_ROLE_AGENT', 'text': 'leaveVoicemail'}]).reached


NY = ('America/New_York',)
HOURS = CallingHours(start='09:00', end='17:00')


def test_a_call_back_is_due_at_the_time_asked_for_or_the_nearest_callable_time() -> None:
    policy = RetryPolicy()
    now = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # 10:00 in New York
    inside = datetime(2026, 3, 3, 19, 30, tzinfo=UTC)  # 14:30 the next day
    decision = decide_callback(policy, HOURS, NY, 'callback_requested', inside, 1, [now], now)
    assert decision.retry_at == inside
    evening = datetime(2026, 3, 3, 23, 30, tzinfo=UTC)  # 18:30: after hours -> 09:00 the day after
    decision = decide_callback(policy, HOURS, NY, 'callback_requested', evening, 1, [now], now)
    assert decision.retry_at == datetime(2026, 3, 4, 14, 0, tzinfo=UTC)
    no_time = decide_callback(policy, HOURS, NY, 'callback_requested', None, 1, [now], now)
    assert no_time.retry_at == datetime(2026, 3, 3, 15, 0, tzinfo=UTC), 'after the delay: a day'
    assert decide_callback(policy, HOURS, NY, 'not_interested', inside, 1, [now], now).retry_at is None
    spent = decide_callback(policy, HOURS, NY, 'callback_requested', inside, policy.max_attempts, [now], now)
    assert spent.retry_at is None


def test_a_voicemail_retry_falls_in_another_hour_of_the_day() -> None:
    policy = RetryPolicy(delays={**RetryPolicy().delays, Outcome.VOICEMAIL: 0, Outcome.NO_ANSWER: 0})
    now = datetime(2026, 3, 2, 15, 10, tzinfo=UTC)  # 10:10 in New York
    decision = decide_retry(policy, HOURS, NY, Outcome.VOICEMAIL, 1, [now], now)
    assert decision.retry_at == datetime(2026, 3, 2, 16, 0, tzinfo=UTC)
    other = decide_retry(policy, HOURS, NY, Outcome.NO_ANSWER, 1, [now], now)
    assert other.retry_at == now, 'only the outcomes other_hour_on lists move'


def test_a_campaign_refuses_to_call_back_an_opt_out() -> None:
    with pytest.raises(ValueError, match='do_not_call'):
        RetryPolicy(retry_dispositions=('do_not_call',), disposition_delays={'do_not_call': 1})


async def test_a_report_is_recorded_once_and_a_changed_report_replaces_it(redis) -> None:
    attempt_id = await live_call(redis)
    report = DispositionReport(attempt_id, 'call-1', 'interested', notes='keen')
    assert (await record_disposition(redis, report)).verdict == 'recorded'
    assert (await record_disposition(redis, report)).verdict == 'duplicate'
    assert await redis.hget(k.campaign('c1'), 'd:interested') == '1'
    changed = DispositionReport(attempt_id, 'call-1', 'callback_requested', callback_at_ms=123)
    assert (await record_disposition(redis, changed)).verdict == 'updated'
    assert await redis.hget(k.campaign('c1'), 'd:interested') == '0'
    _, number, attempt = k.parse_attempt_id(attempt_id)
    record = json.loads(await redis.hget(k.campaign_attempts('c1'), f'{number}:{attempt}'))
    assert (record['dsp'], record['cb'], record.get('nt')) == ('callback_requested', 123, None)
    progress = json.loads(await redis.hget(k.campaign_progress('c1'), number))
    assert progress['dsp'] == 'callback_requested'


async def test_ending_a_call_whose_agent_asked_for_a_call_back_waits_for_its_time_and_writes_nothing_before(
    redis,
) -> None:
    attempt_id = await live_call(redis)
    report = DispositionReport(attempt_id, 'call-1', 'callback_requested', callback_at_ms=123)
    await record_disposition(redis, report)
    scripts = Scripts(redis)
    end = {'tracking_member': f'{attempt_id}|call-1', 'billing_final': True, 'billing_poll_ms': 1}
    fields = {'call': 'call-1', 'sip': 5, 'agent': 5}
    asked = await scripts.finish(
        attempt_id, 't1', 'answered', fields, retry_at_ms=None, callback_dispositions=['callback_requested'], **end
    )
    assert asked == CallbackAsked('callback_requested', 123)
    _, number, attempt = k.parse_attempt_id(attempt_id)
    assert json.loads(await redis.hget(k.campaign_attempts('c1'), f'{number}:{attempt}'))['st'] != 'ended'
    # a disposition the policy does not call back ends the call at once, as does the time decided
    other = await scripts.finish(
        attempt_id, 't1', 'answered', fields, retry_at_ms=None, callback_dispositions=['interested'], **end
    )
    assert other is True
    assert await redis.zscore(k.campaign_due('c1'), number) is None


async def test_the_decided_call_back_time_is_where_the_contact_is_due_again(redis) -> None:
    attempt_id = await live_call(redis)
    await record_disposition(redis, DispositionReport(attempt_id, 'call-1', 'callback_requested'))
    scripts = Scripts(redis)
    end = {'tracking_member': f'{attempt_id}|call-1', 'billing_final': True, 'billing_poll_ms': 1}
    asked = await scripts.finish(
        attempt_id,
        't1',
        'answered',
        {'call': 'call-1'},
        retry_at_ms=None,
        callback_dispositions=['callback_requested'],
        **end,
    )
    assert asked == CallbackAsked('callback_requested', None)
    assert await scripts.finish(attempt_id, 't1', 'answered', {'call': 'call-1'}, retry_at_ms=99_000, **end) is True
    _, number, _ = k.parse_attempt_id(attempt_id)
    assert await redis.zscore(k.campaign_due('c1'), number) == 99_000


async def test_a_report_naming_another_call_or_attempt_changes_nothing(redis) -> None:
    attempt_id = await live_call(redis)
    before = await redis.hgetall(k.campaign_attempts('c1'))
    foreign = DispositionReport(attempt_id, 'call-2', 'do_not_call')
    assert (await record_disposition(redis, foreign)).verdict == 'foreign_call'
    missing = DispositionReport(attempt_id[:-1] + '7', 'call-1', 'do_not_call')
    assert (await record_disposition(redis, missing)).verdict == 'unknown_attempt'
    assert await redis.hgetall(k.campaign_attempts('c1')) == before
    assert await redis.scard(k.DNC) == 0


async def test_an_opt_out_blocks_the_number_at_once_in_every_campaign_with_its_evidence(redis) -> None:
    attempt_id = await live_call(redis)
    number = k.parse_attempt_id(attempt_id)[1]
    # the same number, claimed (not yet begun) in another campaign on another trunk
    await make_campaign(redis, 'other', trunk='t2', numbers=1)
    scripts = Scripts(redis)
    claimed = await claim(scripts, ('other',), trunk='t2')
    assert [ref.split('#')[0] for ref in claimed.job_refs] == [f'other:{number}:1']
    recorded = await record_disposition(redis, DispositionReport(attempt_id, 'call-1', 'do_not_call'))
    assert recorded.verdict == 'recorded'
    assert await redis.sismember(k.DNC, number)
    evidence = json.loads(await redis.hget(k.DNC_EVIDENCE, number))
    assert evidence == {
        'campaign': 'c1', 'call_id': 'call-1', 'attempt': 1, 'at_ms': recorded.now_ms, 'source': 'agent_tool'
    }  # fmt: skip
    begun = await scripts.begin(claimed.job_refs[0], 't2', LIMITS, 60_000)
    assert begun.verdict == 'dnc'
    assert await redis.hget(k.campaign('c1'), 'optouts') == '1'


async def test_the_simulator_serves_a_voicemail_calls_messages_in_pages_and_the_client_reads_them_all() -> None:
    number = '+12125550123'
    config = CampaignConfig(name='c', trunk='t', system_prompt='Hi', voicemail_message='Call us back')
    simulator = {'forced_outcomes': {number: ['voicemail']}, 'time_scale': 0.001, 'default_page_size': 1}
    with running_simulator(**simulator) as sim:
        async with UltravoxClient(sim.base_url, SecretStr('key')) as client:
            request = build_create_request(
                config,
                TRUNK,
                None,
                number,
                ContactRecord(contact_id='c1', line=2),
                attempt_id=f'c:{number}:1',
                attempt=1,
            )
            call = await client.create_call(request)
            messages = await wait_for_messages(client, call['callId'])
    assert len(messages) == 3, 'three pages of one message each'
    assert detect_voicemail(messages, message_configured=True) == Voicemail(reached=True, left=True)
    assert json.loads(messages[1]['text']) == {'message': 'Call us back'}


async def wait_for_messages(client: UltravoxClient, call_id: str) -> list[dict]:
    for _ in range(200):
        messages = await client.list_messages(call_id)
        if messages:
            return messages
        await asyncio.sleep(0.05)
    raise AssertionError('no messages once the call was answered')
