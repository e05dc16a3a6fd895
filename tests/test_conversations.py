"""What conversations achieved, end to end: the CLI, workers, the webhook server hosting the outcome
tool, and the simulator playing the agent over real HTTP (voicemail, dispositions, opt-outs, call-backs)."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from dialer import constants as k
from dialer.tools import TOKEN_HEADER, TOOL_PATH, tool_token
from simulator.testing import free_port, running_simulator
from tests.fleet_helpers import FAST_ENV, FAST_SIMULATOR, read_export, wait_for, write_trunks
from workers.fleet import LocalFleet


if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import redis as redis_sync


pytestmark = pytest.mark.slow

TOOL_SECRET = 'tool-secret-e2e-0123456789'
AGENT = '6f9a1c3e-8a39-4bb6-9a55-0f3d5d8e2a10'
N = '+12122000001'
M = '+12122000000'


@contextlib.contextmanager
def conversation_fleet(tmp_path: Path, redis_url: str, sim_url: str, trunks: dict) -> Iterator[tuple[LocalFleet, str]]:
    """A fleet whose calls get the outcome tool, and the ``dialer webhooks`` server that hosts it."""
    hook_port = free_port()
    env = {
        **FAST_ENV,
        'DIALER_WEBHOOK_SECRETS': json.dumps(['whsec-conversations-0123456789']),
        'DIALER_TOOL_BASE_URL': f'http://127.0.0.1:{hook_port}',
        'DIALER_TOOL_SECRET': TOOL_SECRET,
    }
    fleet = LocalFleet(redis_url, sim_url, write_trunks(tmp_path / 'trunks.toml', 'sip.conv.example', trunks), env)
    fleet.log_dir = tmp_path
    hooks = fleet.start_webhooks(hook_port)
    try:
        yield fleet, f'http://127.0.0.1:{hook_port}{TOOL_PATH}'
    finally:
        fleet.stop_all()
        hooks.terminate()
        hooks.wait(timeout=30)


def campaign_file(path: Path, name: str, trunk: str, body: str = '', *, hours: str = '') -> Path:
    path.write_text(
        f'name = "{name}"\ntrunk = "{trunk}"\nmax_duration = 3600\njoin_timeout = 30\n{body}\n'
        + (hours or '[hours]\nstart = "00:00"\nend = "24:00"\nlegal_bound = false\n'),
        encoding='utf-8',
    )
    return path


def contacts(path: Path, *numbers: str) -> Path:
    path.write_text('phone,contact_id\n' + ''.join(f'{n},c{n[-4:]}\n' for n in numbers), encoding='utf-8')
    return path


def attempt(sync_redis: redis_sync.Redis, name: str, number: str, n: int) -> dict[str, Any]:
    return json.loads(sync_redis.hget(k.campaign_attempts(name), f'{number}:{n}') or '{}')


def test_voicemail_ends_as_voicemail_and_is_retried_by_its_policy_in_another_hour(
    tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis
) -> None:
    simulator = {**FAST_SIMULATOR, 'forced_outcomes': {N: ['voicemail', 'answered']}, 'tool_call_rate': 0}
    with (
        running_simulator(**simulator) as sim,
        conversation_fleet(tmp_path, redis_url, sim.base_url, {'v': (5, 10.0)}) as (fleet, _tool_url),
    ):
        file = campaign_file(
            tmp_path / 'vm.toml', 'vm', 'v', '[retry]\nretry_on = ["voicemail"]\ndelays = { voicemail = 60 }\n'
        )
        loaded = fleet.cli(
            'campaign', 'load', str(contacts(tmp_path / 'vm.csv', N)), '--campaign-file', str(file),
            '--system-prompt', 'You are calling about the renewal.', '--voicemail-message', 'Please call us back.',
        )  # fmt: skip
        assert loaded.returncode == 0, loaded.stderr
        fleet.start_worker()
        first = wait_for(lambda: attempt(sync_redis, 'vm', N, 1).get('o'), 60, 'the first call to end')
        assert first == 'voicemail'
        record = attempt(sync_redis, 'vm', N, 1)
        assert (record['vm'], record['vml']) == (1, 1), 'a message was left (the campaign configured one)'
        due = sync_redis.zscore(k.campaign_due('vm'), N)
        assert due is not None, 'retried by the voicemail policy'
        zone = ZoneInfo('America/New_York')
        started = datetime.fromtimestamp(json.loads(sync_redis.hget(k.campaign_progress('vm'), N))['ts'][0] / 1000, UTC)
        retry = datetime.fromtimestamp(due / 1000, UTC)
        assert retry - started >= timedelta(seconds=60)
        assert retry.astimezone(zone).hour != started.astimezone(zone).hour, 'another hour of the day'
        now = int(sync_redis.get(k.CLOCK_OFFSET) or 0) + int(datetime.now(UTC).timestamp() * 1000)
        sync_redis.set(k.CLOCK_OFFSET, int(due - now) + 1000 + int(sync_redis.get(k.CLOCK_OFFSET) or 0))
        final = fleet.wait_until_finished('vm', timeout=120)
        records = sim.records()
    assert final['o:answered'] == '1'
    assert final['e:voicemail'] == '1'
    assert len(records) == 2
    fleet.cli('campaign', 'export', 'vm', '--output', str(tmp_path / 'vm.csv.out'), '--format', 'jsonl')
    row = json.loads((tmp_path / 'vm.csv.out').read_text().splitlines()[0])
    assert (row['voicemail'], row['voicemail_left'], row['final_outcome']) == (True, True, 'answered')
    status = json.loads(fleet.cli('campaign', 'status', 'vm', '--json').stdout)
    assert status['attempt_outcomes']['voicemail'] == 1
    assert status['voicemail_rate'] == 0.5


def test_an_opt_out_during_a_call_stops_the_number_in_every_campaign_at_once(
    tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis
) -> None:
    simulator = {
        **FAST_SIMULATOR,
        'forced_outcomes': {N: ['answered'], M: ['answered']},
        'forced_dispositions': {N: ['do_not_call']},
        'disposition_mix': {'interested': 1},
        'talk_min': 1500,
        'talk_max': 1500,  # 3 s: B's only channel stays busy with M well past A's opt-out
    }
    trunks = {'a': (5, 10.0), 'b': (1, 10.0)}
    with (
        running_simulator(**simulator) as sim,
        conversation_fleet(tmp_path, redis_url, sim.base_url, trunks) as (fleet, _tool_url),
    ):
        for name, trunk, numbers in (('a', 'a', (N,)), ('b', 'b', (M, N))):
            file = campaign_file(tmp_path / f'{name}.toml', name, trunk, f'agent_id = "{AGENT}"')
            fleet.cli(
                'campaign', 'load', str(contacts(tmp_path / f'{name}.csv', *numbers)), '--campaign-file', str(file)
            )
        fleet.start_worker()
        wait_for(
            lambda: int(fleet.campaign('b').get('n:dialing', 0)) + int(fleet.campaign('b').get('n:in_call', 0)),
            60,
            'b dialling',
        )
        final_a = fleet.wait_until_finished('a', timeout=120)
        final_b = fleet.wait_until_finished('b', timeout=120)
        records = sim.records()
    opt_out = next(r for r in records if r['metadata']['campaign'] == 'a')
    [tool_call] = opt_out['tool_calls']
    assert (tool_call['arguments']['disposition'], tool_call['status']) == ('do_not_call', 200)
    late = [r for r in records if r['to'].startswith(f'sip:{N}@') and r['created'] > tool_call['returned']]
    assert late == [], 'no create for the number reached Ultravox after the tool call returned'
    assert final_a['o:answered'] == '1'
    assert final_b['o:dnc'] == '1', "the number's attempt in the other campaign ended as dnc"
    assert sync_redis.sismember(k.DNC, N)
    evidence = json.loads(sync_redis.hget(k.DNC_EVIDENCE, N))
    assert (evidence['campaign'], evidence['call_id'], evidence['source']) == ('a', opt_out['callId'], 'agent_tool')
    fleet.cli('campaign', 'export', 'a', '--output', str(tmp_path / 'a-export.csv'))
    [row] = read_export(tmp_path / 'a-export.csv')
    assert (row['disposition'], row['notes']) == ('do_not_call', 'Simulated: do_not_call.')
    assert row['summary'], 'shortSummary is exported'


def test_an_opt_out_during_a_call_stops_an_attempt_of_the_number_already_claimed_in_another_campaign(
    tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis
) -> None:
    # Trunk b sends one create per ~31 s: M goes at once, N's attempt is claimed, begun and then held
    # at its rate reservation (DIALER_MAX_RATE_WAIT lets the job wait there) while campaign a's call
    # to N opts out. Only send.lua, the last step before the create, can stop it then.
    simulator = {
        **FAST_SIMULATOR,
        'forced_outcomes': {N: ['answered'], M: ['answered']},
        'forced_dispositions': {N: ['do_not_call']},
        'disposition_mix': {'interested': 1},
    }
    trunks = {'a': (5, 10.0), 'b': (2, 1 / 30)}
    with (
        running_simulator(**simulator) as sim,
        conversation_fleet(tmp_path, redis_url, sim.base_url, trunks) as (fleet, _tool_url),
    ):
        file_b = campaign_file(tmp_path / 'b.toml', 'b', 'b', f'agent_id = "{AGENT}"')
        loaded = fleet.cli('campaign', 'load', str(contacts(tmp_path / 'b.csv', M, N)), '--campaign-file', str(file_b))
        assert loaded.returncode == 0, loaded.stderr
        fleet.start_worker(DIALER_MAX_RATE_WAIT='120')  # the job waits at its reservation, not handed back
        reservation = f'b:{N}:1@rate'

        def held_at_its_rate_slot() -> dict[str, Any]:
            record = attempt(sync_redis, 'b', N, 1)
            reserved = sync_redis.zscore(k.trunk_unsent('b'), reservation)
            return record if record.get('st') == 'creating' and reserved is not None else {}

        claimed = wait_for(held_at_its_rate_slot, 60, "b's attempt for N to wait at its rate reservation")
        assert 'sent' not in claimed, 'begun, not yet sent'
        dialled = wait_for(lambda: [r['to'] for r in sim.records()], 30, "M's create to reach the simulator")
        assert [to.split('@')[0] for to in dialled] == [f'sip:{M}'], 'N waits behind M on the slow trunk'

        # only now does campaign a exist: its call, and so its tool call, comes after b's claim
        file_a = campaign_file(tmp_path / 'a.toml', 'a', 'a', f'agent_id = "{AGENT}"')
        loaded = fleet.cli('campaign', 'load', str(contacts(tmp_path / 'a.csv', N)), '--campaign-file', str(file_a))
        assert loaded.returncode == 0, loaded.stderr

        def opt_out_returned() -> dict[str, Any] | None:
            calls = [c for r in sim.records() if r['metadata']['campaign'] == 'a' for c in r['tool_calls']]
            return calls[0] if calls else None

        tool_call = wait_for(opt_out_returned, 60, "a's tool call to return", poll=0.02)
        # read after the tool call returned: still the same begun, unsent attempt, so it was claimed then
        assert attempt(sync_redis, 'b', N, 1) == claimed, 'b still held N claimed and unsent when the tool returned'
        assert json.loads(sync_redis.hget(k.campaign_progress('b'), N))['s'] == 'dialing'
        assert fleet.campaign('b')['n:dialing'] == '1'
        send_at = sync_redis.zscore(k.trunk_unsent('b'), reservation)
        assert send_at is not None
        assert send_at > tool_call['returned'] * 1000, 'its create was due after the opt-out'

        final_b = fleet.wait_until_finished('b', timeout=120)
        final_a = fleet.wait_until_finished('a', timeout=120)
        records = sim.records()
    assert (tool_call['arguments']['disposition'], tool_call['status']) == ('do_not_call', 200)
    late = [r for r in records if r['to'].startswith(f'sip:{N}@') and r['created'] > tool_call['returned']]
    assert late == [], 'no create for the number reached Ultravox after the tool call returned'
    assert [r for r in records if r['metadata']['campaign'] == 'b' and r['to'].startswith(f'sip:{N}@')] == []
    stopped = attempt(sync_redis, 'b', N, 1)
    assert (stopped['o'], stopped['r']) == ('dnc', 'on the do-not-call list at dial time'), (
        'the claimed attempt was stopped right before its create (send.lua), not before it began'
    )
    assert 'sent' not in stopped, 'never marked as possibly sent'
    assert final_b['o:dnc'] == '1'
    assert final_b['o:answered'] == '1', 'M'
    assert final_a['o:answered'] == '1'
    opt_out = next(r for r in records if r['metadata']['campaign'] == 'a')
    evidence = json.loads(sync_redis.hget(k.DNC_EVIDENCE, N))
    assert (evidence['campaign'], evidence['call_id'], evidence['source']) == ('a', opt_out['callId'], 'agent_tool')
    assert sync_redis.sismember(k.DNC, N)


def test_a_call_back_request_is_dialled_at_the_time_asked_for_inside_calling_hours(
    tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis
) -> None:
    zone = ZoneInfo('America/New_York')
    real_now = datetime.now(UTC)
    # travel so that the campaign starts at 10:00 New York time on the next day
    start = datetime.combine(real_now.astimezone(zone).date() + timedelta(days=1), datetime.min.time(), zone)
    start = start.replace(hour=10)
    sync_redis.set(k.CLOCK_OFFSET, int((start - real_now).total_seconds() * 1000))
    # asked for 19:00 the day after: outside 09:00-17:00, so the nearest callable time is 09:00 after that
    asked = (start + timedelta(days=1)).replace(hour=19)
    expected = (start + timedelta(days=2)).replace(hour=9)
    simulator = {
        **FAST_SIMULATOR,
        'forced_outcomes': {N: ['answered', 'answered']},
        'forced_dispositions': {N: ['callback_requested', 'interested']},
        'callback_at': asked.isoformat(),
    }
    hours = '[hours]\nstart = "09:00"\nend = "17:00"\n'
    with (
        running_simulator(**simulator) as sim,
        conversation_fleet(tmp_path, redis_url, sim.base_url, {'c': (5, 10.0)}) as (fleet, _tool_url),
    ):
        file = campaign_file(tmp_path / 'cb.toml', 'cb', 'c', f'agent_id = "{AGENT}"', hours=hours)
        fleet.cli('campaign', 'load', str(contacts(tmp_path / 'cb.csv', N)), '--campaign-file', str(file))
        fleet.start_worker()
        wait_for(lambda: attempt(sync_redis, 'cb', N, 1).get('o'), 60, 'the first call to end')
        assert attempt(sync_redis, 'cb', N, 1)['dsp'] == 'callback_requested'
        due = sync_redis.zscore(k.campaign_due('cb'), N)
        assert due == expected.timestamp() * 1000
        assert len(sim.records()) == 1
        sync_redis.set(k.CLOCK_OFFSET, int((expected - datetime.now(UTC)).total_seconds() * 1000) + 500)
        final = fleet.wait_until_finished('cb', timeout=120)
        records = sim.records()
    assert len(records) == 2
    second_started = json.loads(sync_redis.hget(k.campaign_progress('cb'), N))['ts'][1]
    assert second_started >= expected.timestamp() * 1000
    assert datetime.fromtimestamp(second_started / 1000, zone).hour == 9
    assert final['o:answered'] == '1'
    assert attempt(sync_redis, 'cb', N, 2)['dsp'] == 'interested'


def test_a_forged_tool_call_changes_nothing_and_a_genuine_one_is_recorded_once(
    tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis
) -> None:
    simulator = {
        **FAST_SIMULATOR,
        'forced_outcomes': {N: ['answered']},
        'tool_call_rate': 0,
        'talk_min': 2500,
        'talk_max': 2500,
    }
    with (
        running_simulator(**simulator) as sim,
        conversation_fleet(tmp_path, redis_url, sim.base_url, {'f': (5, 10.0)}) as (fleet, tool_url),
    ):
        file = campaign_file(tmp_path / 'f.toml', 'f', 'f', f'agent_id = "{AGENT}"')
        fleet.cli('campaign', 'load', str(contacts(tmp_path / 'f.csv', N)), '--campaign-file', str(file))
        fleet.start_worker()
        call_id = wait_for(lambda: attempt(sync_redis, 'f', N, 1).get('call'), 60, 'the call to be live')
        url = tool_url
        own = f'f:{N}:1'
        body = {'attemptId': own, 'callId': call_id, 'disposition': 'do_not_call'}
        secret = SecretStr(TOOL_SECRET)
        before = (sync_redis.hgetall(k.campaign_attempts('f')), sync_redis.hgetall(k.campaign('f')))
        forgeries = [
            {},  # no token
            {TOKEN_HEADER: 'not-a-token'},
            {TOKEN_HEADER: tool_token(secret, f'f:{N}:2')},  # the token of another attempt
            {TOKEN_HEADER: tool_token(secret, f'g:{M}:1')},
            {TOKEN_HEADER: tool_token(SecretStr('another-secret-0123456789'), own)},
        ]
        for headers in forgeries:
            assert httpx.post(url, json=body, headers=headers, timeout=10).status_code == 401
        genuine = {TOKEN_HEADER: tool_token(secret, own)}
        wrong_call = httpx.post(url, json={**body, 'callId': 'another-call'}, headers=genuine, timeout=10)
        assert wrong_call.status_code == 409
        assert (sync_redis.hgetall(k.campaign_attempts('f')), sync_redis.hgetall(k.campaign('f'))) == before
        assert sync_redis.scard(k.DNC) == 0
        unknown = httpx.post(url, json={**body, 'disposition': 'rich'}, headers=genuine, timeout=10)
        assert unknown.status_code == 422
        assert 'interested' in unknown.json()['result'], 'the model is told the choices'
        answers = [
            httpx.post(url, json={**body, 'disposition': 'interested'}, headers=genuine, timeout=10) for _ in range(2)
        ]
        assert [a.status_code for a in answers] == [200, 200]
        assert answers[0].json() == answers[1].json()
        assert fleet.campaign('f')['d:interested'] == '1', 'recorded once'
        fleet.wait_until_finished('f', timeout=120)
        assert len(sim.records()) == 1
