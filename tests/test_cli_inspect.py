"""Seeing what is configured and stored, from the command line: ``campaign show``, ``campaign list``,
``export --output -``, ``dnc list``/``dnc check`` and the trunk fields ``trunks check`` accepts.

Every test drives the real ``dialer`` command (click's runner) against a real Redis.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import workers.cli_campaign
import workers.cli_tools  # noqa: F401  registers `dialer trunks` and `dialer dnc`
from campaigns import dnc
from dialer import constants as k
from tests.cli_helpers import cli_invoker
from workers.cli import cli


TRUNKS = (
    '[trunks.carrier-a]\nhost = "sip.a.example:5061"\ntransport = "tls"\nfrom = "+14155550100"\n'
    'username = "acct-42"\npassword = "pw-never-shown"\nmax_concurrent = 50\ncalls_per_second = 5\n'
)


@pytest.fixture
def dialer(tmp_path: Path, redis_url: str, sync_redis):
    return cli_invoker(tmp_path, redis_url, TRUNKS, log_level='info')


def load(dialer, tmp_path: Path, count: int, *options: str, name: str = 'spring') -> Path:
    path = tmp_path / f'{name}.csv'
    rows = [f'+1212{2000000 + i:07d},Person {i},=cmd()' for i in range(count)]
    path.write_text('phone,name,note\n' + '\n'.join(rows) + '\n', encoding='utf-8')
    dialer('campaign', 'load', str(path), '--campaign', name, '--trunk', 'carrier-a', *options)
    return path


# --------------------------------------------------------------------------------------------- show


def test_show_prints_every_setting_as_text_and_json(dialer, tmp_path: Path, sync_redis) -> None:
    load(
        dialer, tmp_path, 4, '--agent-id', 'agent-7', '--hours', '10:00-18:30', '--days', 'mon-fri',
        '--max-attempts', '4', '--retry-on', 'no_answer,busy', '--retry-delay', 'no_answer=2h,busy=5m',
        '--max-per-24h', '2', '--first-speaker', 'agent', '--default-timezone', 'America/Chicago',
    )  # fmt: skip
    text = dialer('campaign', 'show', 'spring').output
    for expected in (
        'campaign spring (active, 4 contacts)',
        'carrier-a: sip.a.example:5061 (tls), from +14155550100, 50 concurrent, 5/s',
        'agent-7',
        '10:00-18:30 mon-fri',
        'no_answer after 2h, busy after 5m',
        'at most 4 per contact, 2 in any 24 h',
        'America/Chicago',
        'first speaker    agent',
        'interested, not_interested, callback_requested, do_not_call, wrong_person',
        'callback_requested after 1d (or when asked)',
        'answered by the campaign agent, closing the contact, routed for 7d after the campaign ends',
        'recording        off',
    ):
        assert expected in text, (expected, text)
    assert 'pw-never-shown' not in text
    assert '+1212' not in text, 'no contact number'

    shown = json.loads(dialer('campaign', 'show', 'spring', '--json').output)
    assert shown['name'] == 'spring'
    assert shown['state'] == 'active'
    assert shown['contacts'] == 4
    assert shown['agent_id'] == 'agent-7'
    assert shown['hours'] == {'start': '10:00', 'end': '18:30', 'days': ['mon', 'tue', 'wed', 'thu', 'fri'],
                              'legal_bound': True}  # fmt: skip
    retry = shown['retry']
    assert (retry['retry_on'], retry['max_attempts'], retry['max_per_24h']) == (['no_answer', 'busy'], 4, 2)
    assert {o: retry['delays'][o] for o in ('no_answer', 'busy')} == {'no_answer': 7200.0, 'busy': 300.0}
    assert shown['first_speaker'] == 'agent'
    assert shown['trunk'] == 'carrier-a'
    assert shown['trunk_details']['host'] == 'sip.a.example:5061'
    assert 'password' not in json.dumps(shown)


def test_show_of_an_unknown_campaign_is_an_error_naming_it(dialer) -> None:
    result = dialer('campaign', 'show', 'nope', expect=1)
    assert "unknown campaign 'nope'" in result.output


def test_campaign_list_says_when_there_are_none(dialer, tmp_path: Path) -> None:
    assert 'no campaigns yet' in dialer('campaign', 'list').output
    load(dialer, tmp_path, 1, '--agent-id', 'a')
    assert dialer('campaign', 'list').output == 'spring\tactive\n'


# ------------------------------------------------------------------------------------------- export


@pytest.mark.parametrize('fmt', ['csv', 'jsonl'])
def test_export_to_dash_writes_the_rows_to_stdout(dialer, tmp_path: Path, fmt: str) -> None:
    load(dialer, tmp_path, 5, '--agent-id', 'a')
    result = dialer('campaign', 'export', 'spring', '--output', '-', '--format', fmt)
    if fmt == 'csv':
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
    else:
        rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r['phone'] for r in rows) == [f'+1212{2000000 + i:07d}' for i in range(5)]
    assert '5 contacts written to standard output' in result.stderr
    assert not Path('-').exists(), 'nothing written to a file named -'


# ---------------------------------------------------------------------------------------------- dnc


def test_dnc_check_normalises_and_says_listed_or_not(dialer, sync_redis) -> None:
    dialer('dnc', 'add', '+14155552671')
    assert dialer('dnc', 'check', '(415) 555-2671').output == '+14155552671 is on the do-not-call list\n'
    assert dialer('dnc', 'check', '+1 415 555 2672').output == '+14155552672 is not on the do-not-call list\n'
    assert dialer('dnc', 'check', '020 7946 0018', '--region', 'GB').output.startswith('+442079460018 is not on')


@pytest.mark.parametrize('bad', ['555-NOPE', '12', '+999123'])
def test_dnc_check_of_a_bad_number_is_an_error_naming_it(dialer, bad: str) -> None:
    result = dialer('dnc', 'check', bad, expect=1)
    assert repr(bad) in result.output
    assert 'Traceback' not in result.output


def test_dnc_list_prints_every_number_sorted_and_the_same_every_time(dialer, sync_redis, monkeypatch) -> None:
    numbers = [f'+1{area}555{i:04d}' for area in ('212', '415', '312', '907') for i in range(0, 1000, 7)]
    sync_redis.sadd(k.DNC, *numbers)
    first = dialer('dnc', 'list').output.splitlines()
    assert first == sorted(numbers)
    assert dialer('dnc', 'list').output.splitlines() == first
    assert dialer('dnc', 'list', '--limit', '3').output.splitlines() == sorted(numbers)[:3]
    assert dialer('dnc', 'list', '--count').output == f'{len(numbers)} numbers on the do-not-call list\n'
    # a list longer than one chunk is read in prefix groups: same output
    monkeypatch.setattr(dnc, 'LIST_CHUNK', 50)
    assert dialer('dnc', 'list').output.splitlines() == first


def test_dnc_list_of_an_empty_list_says_so(dialer) -> None:
    result = dialer('dnc', 'list')
    assert result.stdout == ''
    assert 'empty' in result.stderr


def test_dnc_commands_do_not_repeat_their_summary_as_a_log_line(dialer) -> None:
    result = dialer('dnc', 'add', '+14155552671', '+14155552672')
    assert result.output == '2 numbers added\n'


# ------------------------------------------------------------------------------------------- trunks


@pytest.mark.parametrize('field', ['host', 'from', 'username'])
@pytest.mark.parametrize(
    'value',
    ['sip.a.example\\n', 'sip.a .example', '\\tsip.a.example', 'sip.a.example\\r\\nX: y', 'a\\u200bb', 'a\\u0000b'],
)
def test_trunk_fields_refuse_whitespace_and_control_characters(tmp_path: Path, field: str, value: str) -> None:
    fields = {'host': '"sip.a.example"', 'from': '"+14155550100"', 'username': '"acct"'}
    fields[field] = f'"{value}"'
    body = ''.join(f'{key} = {text}\n' for key, text in fields.items())
    path = tmp_path / 'trunks.toml'
    path.write_text(f'[trunks.carrier-a]\n{body}max_concurrent = 1\ncalls_per_second = 1\n', encoding='utf-8')
    result = CliRunner().invoke(cli, ['trunks', 'check'], env={'DIALER_TRUNKS_FILE': str(path)})
    assert result.exit_code == 1, result.output
    assert f"{path}: trunk 'carrier-a': field {field}: must not contain" in result.output
    assert 'Value error' not in result.output
