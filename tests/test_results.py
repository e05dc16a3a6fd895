"""Campaign status, trunk status and the per-contact export, read from records crafted as the scripts write them."""

from __future__ import annotations

import csv
import json
from typing import TYPE_CHECKING

import pytest
from rich.console import Console

from campaigns import results
from campaigns.lifecycle import UnknownCampaignError
from dialer import constants as k
from dialer.models import CampaignConfig
from dialer.scripts import Scripts
from dialer.settings import AccountLimits
from dialer.trunks import TrunkRegistry


if TYPE_CHECKING:
    from pathlib import Path


ANSWERED = '+12125550001'
RETRYING = '+12125550002'
PENDING = '+12125550003'
LIVE = '+12125550004'
HOSTILE = '+12125550005'
NUMBER_LIKE = '+12125550006'


def dumps(value: object) -> str:
    return json.dumps(value, separators=(',', ':'))


async def craft_campaign(redis, name: str = 'spring', trunk: str = 't1') -> int:
    """Six contacts in every interesting state; returns the dialer's now (ms)."""
    config = CampaignConfig(name=name, trunk=trunk, agent_id='agent-1')
    now = await Scripts(redis).now_ms()
    t0 = now - 600_000
    await redis.hset(
        k.campaign(name),
        mapping={
            'config': config.model_dump_json(),
            'state': 'active',
            'contacts': 6,
            'rejected': 2,
            'n:pending': 3,
            'n:retry_wait': 1,
            'n:in_call': 1,
            'n:done': 1,
            'o:answered': 1,
            'e:answered': 1,
            'e:no_answer': 2,
            'e:busy': 1,
            'calls': 5,
            'retries': 2,
            'sip_seconds': '48',
            'agent_seconds': '54.5',
        },
    )
    await redis.sadd(k.CAMPAIGNS, name)
    await redis.sadd(k.trunk_campaigns(trunk), name)
    contacts = {
        ANSWERED: {'i': 'c1', 'l': 2, 'n': 'Ada Lovelace', 'z': 'America/New_York', 'c': {'plan': 'gold'}},
        RETRYING: {'i': 'c2', 'l': 3, 'n': 'Bob'},
        PENDING: {'i': 'c3', 'l': 4},
        LIVE: {'i': 'c4', 'l': 5, 'n': 'Live One'},
        HOSTILE: {'i': '=HYPERLINK("http://evil")', 'l': 6, 'n': '@SUM(A1:A9)', 'c': {'note': '-2+3'}},
        NUMBER_LIKE: {'i': '-42', 'l': 7, 'n': '+1.5e3'},
    }
    await redis.hset(k.campaign_contacts(name), mapping={n: dumps(c) for n, c in contacts.items()})
    await redis.hset(
        k.campaign_progress(name),
        mapping={
            ANSWERED: dumps({'s': 'done', 'a': 2, 'c': 0, 'o': 'answered', 'lo': 'answered', 'ts': [t0, t0 + 60_000]}),
            RETRYING: dumps({'s': 'retry_wait', 'a': 2, 'c': 0, 'lo': 'busy', 'ts': [t0, t0 + 1000]}),
            LIVE: dumps({'s': 'in_call', 'a': 1, 'c': 1, 'ts': [t0 + 5000]}),
        },
    )
    await redis.hset(
        k.campaign_attempts(name),
        mapping={
            f'{ANSWERED}:1': dumps({
                'st': 'ended', 't0': t0, 'call': 'call-a1', 'o': 'no_answer', 'eo': t0 + 30_000,
                'en': '2026-03-01T14:00:30Z', 'er': 'unjoined/timeout', 'dur': 0, 'sip': 0, 'agent': 0,
                'bsrc': 'ultravox', 'bf': 1,
            }),
            f'{ANSWERED}:2': dumps({
                'st': 'ended', 't0': t0 + 60_000, 'call': 'call-a2', 'o': 'answered', 'eo': t0 + 120_000,
                'en': '2026-03-01T14:02:00Z', 'er': 'hangup/user', 'dur': 42.5, 'sip': 48, 'agent': 54.5,
                'bsrc': 'computed', 'bf': 1, 'sum': '=cmd|calc',
            }),
            f'{RETRYING}:1': dumps({
                'st': 'ended', 't0': t0, 'call': 'call-b1', 'o': 'no_answer', 'eo': t0 + 500, 'sip': 0, 'agent': 0,
                'bsrc': 'ultravox', 'bf': 1,
            }),
            f'{RETRYING}:2': dumps({
                'st': 'ended', 't0': t0 + 1000, 'o': 'busy', 'eo': t0 + 1500, 'r': 'SIP 486 busy here',
                'sip': 0, 'agent': 0, 'bsrc': 'computed', 'bf': 1,
            }),
            f'{LIVE}:1': dumps({'st': 'live', 't0': t0 + 5000, 'call': 'call-d1', 'cr': t0 + 5100}),
        },
    )  # fmt: skip
    await redis.zadd(
        k.campaign_due(name),
        {PENDING: now - 1000, HOSTILE: now - 500, NUMBER_LIKE: now + 5000, RETRYING: now + 60_000},
    )
    return now


async def test_status_counts_contacts_outcomes_attempts_and_billing(redis) -> None:
    now = await craft_campaign(redis)
    # three creations on this campaign in the last minute, one on another, one too old to count
    await redis.zadd(
        k.ACCOUNT_RATE_MINUTE,
        {
            f'spring:{PENDING}:1@{now - 1000}': now - 1000,
            f'spring:{HOSTILE}:1@{now - 2000}': now - 2000,
            f'spring:{LIVE}:1@{now - 3000}': now - 3000,
            f'other:{PENDING}:1@{now - 1000}': now - 1000,
            f'spring:{ANSWERED}:1@{now - 90_000}': now - 90_000,
        },
    )
    status = await results.campaign_status(redis, 'spring')

    assert status['state'] == 'active'
    assert status['trunk'] == 't1'
    assert status['loading'] is False
    assert status['contacts'] == 6
    assert status['statuses'] == {'pending': 3, 'dialing': 0, 'in_call': 1, 'retry_wait': 1, 'done': 1}
    assert status['outcomes']['answered'] == 1
    assert sum(status['outcomes'].values()) == 1
    assert status['attempt_outcomes'] == {**dict.fromkeys(status['attempt_outcomes'], 0), 'answered': 1,
                                          'no_answer': 2, 'busy': 1}  # fmt: skip
    assert status['calls_created'] == 5
    assert status['retries_scheduled'] == 2
    assert status['in_flight'] == 1
    assert status['attempts_ended'] == 4
    assert status['attempts_made'] == 5
    assert status['sip_seconds'] == 48
    assert status['sip_minutes'] == 0.8
    assert status['agent_seconds'] == 54.5
    assert status['answer_rate'] == 0.25
    assert status['due_now'] == 2
    assert status['waiting'] == 2, 'due later'
    assert status['queued'] == 4
    assert status['next_due_at'] == results.iso_ms(now - 1000)
    assert status['calls_last_minute'] == 3
    # five open contacts at three calls a minute
    assert status['eta_seconds'] == 100.0
    json.dumps(status)  # --json output needs no custom encoder

    console = Console(record=True, width=120)
    console.print(results.render_status(status))
    text = console.export_text()
    assert 'Campaign spring' in text
    assert '25.0%' in text


async def test_status_of_an_unknown_campaign_raises(redis) -> None:
    with pytest.raises(UnknownCampaignError):
        await results.campaign_status(redis, 'nope')


async def test_a_campaign_being_loaded_shows_it_and_has_no_eta_without_recent_calls(redis) -> None:
    await craft_campaign(redis)
    await redis.hset(k.campaign('spring'), 'loading', 'digest')
    status = await results.campaign_status(redis, 'spring')
    assert status['loading'] is True
    assert status['eta_seconds'] is None


async def test_csv_export_has_one_row_per_contact_with_attempts_calls_and_billing(redis, tmp_path: Path) -> None:
    now = await craft_campaign(redis)
    output = tmp_path / 'out.csv'
    written = await results.export_results(redis, 'spring', output, 'csv')
    assert written == 6
    with output.open(encoding='utf-8', newline='') as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == results.EXPORT_COLUMNS
        rows = {row['phone']: row for row in reader}
    assert set(rows) == {ANSWERED, RETRYING, PENDING, LIVE, HOSTILE, NUMBER_LIKE}

    answered = rows[ANSWERED]
    t0 = now - 600_000
    assert answered['contact_id'] == 'c1'
    assert answered['name'] == 'Ada Lovelace'
    assert answered['line'] == '2'
    assert answered['status'] == 'done'
    assert answered['final_outcome'] == 'answered'
    assert answered['attempts'] == '2'
    assert answered['call_ids'] == 'call-a1;call-a2'
    assert answered['first_attempt_at'] == results.iso_ms(t0)
    assert answered['last_attempt_at'] == results.iso_ms(t0 + 60_000)
    assert answered['last_ended_at'] == '2026-03-01T14:02:00Z'
    assert answered['answered_seconds'] == '42.5'
    assert answered['sip_billed_seconds'] == '48'
    assert answered['agent_billed_seconds'] == '54.5'
    assert answered['billing_source'] == 'mixed'
    assert answered['last_end_reason'] == 'hangup/user'
    assert answered['summary'] == "'=cmd|calc"
    assert json.loads(answered['context']) == {'plan': 'gold'}

    retrying = rows[RETRYING]
    assert retrying['status'] == 'retry_wait'
    assert retrying['final_outcome'] == ''
    assert retrying['call_ids'] == 'call-b1'
    assert retrying['failure_reason'] == 'SIP 486 busy here'
    assert retrying['last_ended_at'] == results.iso_ms(t0 + 1500)
    assert retrying['billing_source'] == 'mixed'

    pending = rows[PENDING]
    assert (pending['status'], pending['attempts'], pending['call_ids'], pending['first_attempt_at']) == (
        'pending',
        '0',
        '',
        '',
    )
    assert pending['sip_billed_seconds'] == '0'
    assert pending['context'] == ''

    live = rows[LIVE]
    assert (live['status'], live['call_ids'], live['last_ended_at']) == ('in_call', 'call-d1', '')


async def test_csv_cells_that_would_run_as_formulas_are_neutralised_but_numbers_are_not(redis, tmp_path: Path) -> None:
    await craft_campaign(redis)
    output = tmp_path / 'out.csv'
    await results.export_results(redis, 'spring', output, 'csv')
    with output.open(encoding='utf-8', newline='') as handle:
        rows = {row['phone']: row for row in csv.DictReader(handle)}
    hostile = rows[HOSTILE]
    assert hostile['phone'] == HOSTILE  # E.164 numbers start with '+' and stay as they are
    assert hostile['contact_id'] == '\'=HYPERLINK("http://evil")'
    assert hostile['name'] == "'@SUM(A1:A9)"
    assert json.loads(hostile['context']) == {'note': '-2+3'}
    number_like = rows[NUMBER_LIKE]
    assert number_like['contact_id'] == '-42'
    assert number_like['name'] == '+1.5e3'
    for row in rows.values():
        assert row['phone'].startswith('+1')


@pytest.mark.parametrize(
    ('value', 'expected'),
    [
        ('=1+1', "'=1+1"),
        ('+12125550100', '+12125550100'),
        ('+1 212 555 0100', "'+1 212 555 0100"),
        ('-3.5', '-3.5'),
        ('-cmd', "'-cmd"),
        ('@x', "'@x"),
        ('\tx', "'\tx"),
        ('\rx', "'\rx"),
        ('plain', 'plain'),
        ('', ''),
    ],
)
def test_formula_neutralisation_rules(value: str, expected: str) -> None:
    assert results.neutralise_cell(value) == expected


async def test_jsonl_export_keeps_raw_values_and_context_objects(redis, tmp_path: Path) -> None:
    await craft_campaign(redis)
    output = tmp_path / 'out.jsonl'
    written = await results.export_results(redis, 'spring', output, 'jsonl')
    lines = output.read_text(encoding='utf-8').splitlines()
    assert written == len(lines) == 6
    rows = {row['phone']: row for row in map(json.loads, lines)}
    assert rows[ANSWERED]['context'] == {'plan': 'gold'}
    assert rows[ANSWERED]['sip_billed_seconds'] == 48
    assert rows[ANSWERED]['attempts'] == 2
    assert rows[HOSTILE]['name'] == '@SUM(A1:A9)'  # JSON is not a spreadsheet: values stay exact
    assert rows[PENDING]['context'] == {}


async def test_export_streams_many_contacts_in_batches(redis, tmp_path: Path) -> None:
    config = CampaignConfig(name='big', trunk='t1', agent_id='a')
    await redis.hset(k.campaign('big'), mapping={'config': config.model_dump_json(), 'state': 'active'})
    count = results.BATCH * 2 + 17
    contacts = {f'+1212600{i:04d}': dumps({'i': f'id{i}', 'l': i + 2}) for i in range(count)}
    await redis.hset(k.campaign_contacts('big'), mapping=contacts)
    await redis.hset(
        k.campaign_progress('big'),
        mapping={n: dumps({'s': 'done', 'a': 1, 'c': 0, 'o': 'busy', 'ts': [1]}) for n in list(contacts)[::3]},
    )
    written = await results.export_results(redis, 'big', tmp_path / 'big.csv', 'csv')
    with (tmp_path / 'big.csv').open(encoding='utf-8', newline='') as handle:
        rows = list(csv.DictReader(handle))
    assert written == len(rows) == count
    assert len({row['phone'] for row in rows}) == count
    assert sum(row['final_outcome'] == 'busy' for row in rows) == len(list(contacts)[::3])


async def test_a_failed_export_leaves_the_previous_file_and_no_temporary_file(
    redis, tmp_path: Path, monkeypatch
) -> None:
    await craft_campaign(redis)
    output = tmp_path / 'out.csv'
    output.write_text('previous export\n', encoding='utf-8')

    async def broken(*_args, **_kwargs):
        raise ConnectionError('redis went away')

    monkeypatch.setattr(results, '_batch_rows', broken)
    with pytest.raises(ConnectionError):
        await results.export_results(redis, 'spring', output, 'csv')
    assert output.read_text(encoding='utf-8') == 'previous export\n'
    assert [p.name for p in tmp_path.iterdir()] == ['out.csv']


async def test_export_of_an_unknown_campaign_raises_and_writes_nothing(redis, tmp_path: Path) -> None:
    with pytest.raises(UnknownCampaignError):
        await results.export_results(redis, 'nope', tmp_path / 'x.csv', 'csv')
    assert list(tmp_path.iterdir()) == []


async def test_trunks_status_reports_load_limits_waiting_work_and_holds(redis, tmp_path: Path) -> None:
    trunks_file = tmp_path / 'trunks.toml'
    trunks_file.write_text(
        '[trunks.t1]\nhost = "sip.example.com"\nfrom = "+14155550100"\nmax_concurrent = 10\ncalls_per_second = 2\n'
        '[trunks.t2]\nhost = "sip2.example.com"\nfrom = "+14155550100"\nmax_concurrent = 4\ncalls_per_second = 1\n',
        encoding='utf-8',
    )
    now = await craft_campaign(redis)
    await redis.zadd(k.trunk_slots('t1'), {'a': now + 60_000, 'b': now + 60_000, 'expired': now - 1})
    await redis.set(k.trunk_hold('t2'), 'breaker', px=30_000)
    await redis.set(k.trunk_rate('t1'), now + 1500)
    await redis.zadd(k.ACCOUNT_SLOTS, {'a': now + 60_000})
    await redis.zadd(
        k.ACCOUNT_RATE_MINUTE,
        {f'spring:{PENDING}:1@{now - 1000}': now - 1000, f'spring:{LIVE}:1@{now - 2000}': now - 2000},
    )
    await redis.set(k.ACCOUNT_HOLD, '429', px=10_000)

    rows = await results.trunks_status(redis, TrunkRegistry(trunks_file), AccountLimits(10, 120, None))
    by_name = {row['name']: row for row in rows}
    t1, t2, account = by_name['t1'], by_name['t2'], by_name['account']
    # in flight as `campaign status` counts it (one live call); the limiter's leases beside it
    assert (t1['in_flight'], t1['max_concurrent'], t1['calls_per_second_limit']) == (1, 10, 2)
    assert t1['slots_held'] == 2
    assert t1['calls_last_minute'] == 2
    assert t1['due_now'] == 2
    assert t1['waiting'] == 2
    assert 0 < t1['rate_wait_ms'] <= 1500
    assert t1['hold_ms'] == 0
    assert t2['in_flight'] == 0
    assert t2['calls_last_minute'] == 0
    assert 0 < t2['hold_ms'] <= 30_000
    assert t2['hold_reason'] == 'breaker'
    assert (account['in_flight'], account['calls_last_minute'], account['hold_reason']) == (1, 2, '429')
    assert account['max_concurrent'] is None

    console = Console(record=True, width=160)
    console.print(results.render_trunks(rows))
    text = console.export_text()
    assert 'unlimited' in text
    assert 'breaker' in text


async def test_a_new_export_is_private_and_a_replaced_one_keeps_its_mode(redis, tmp_path: Path) -> None:
    await craft_campaign(redis)
    fresh = tmp_path / 'fresh.csv'
    await results.export_results(redis, 'spring', fresh, 'csv')
    assert fresh.stat().st_mode & 0o777 == 0o600
    shared = tmp_path / 'shared.csv'
    shared.write_text('old\n', encoding='utf-8')
    shared.chmod(0o640)
    await results.export_results(redis, 'spring', shared, 'csv')
    assert shared.stat().st_mode & 0o777 == 0o640
    assert shared.read_text(encoding='utf-8').startswith('contact_id,phone,')
