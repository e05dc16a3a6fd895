"""Preparing a campaign from the command line: refused loads write nothing, ``--paused`` and
``--start-at``, ``plan --csv``, adding contacts to an existing campaign, number types, prompt
placeholders, rejects files that load again, and input size limits.

Every test drives the real ``dialer`` command (click's runner) against a real Redis.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
import redis as redis_sync

import workers.cli_campaign
import workers.cli_tools  # noqa: F401  registers `dialer campaign plan`
from dialer import constants as k
from tests.cli_helpers import ALL_DAY, MONDAY_0700_NEW_YORK, cli_invoker, ms, set_clock


if TYPE_CHECKING:
    from pathlib import Path


TRUNKS = '[trunks.carrier-a]\nhost = "sip.a.example"\nfrom = "+14155550100"\nmax_concurrent = 5\ncalls_per_second = 5\n'
AGENT = ['--agent-id', 'agent-1', '--trunk', 'carrier-a']


@pytest.fixture
def dialer(tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis):
    """``dialer(*args, expect=0)``: run the CLI against the test Redis and a one-trunk trunks file."""
    return cli_invoker(tmp_path, redis_url, TRUNKS)


def snapshot(redis_url: str) -> list[tuple[bytes, bytes | None, int]]:
    """Every key with its serialized value and TTL."""
    with redis_sync.Redis.from_url(redis_url) as raw:
        return [(key, raw.dump(key), raw.pttl(key)) for key in sorted(raw.scan_iter(count=1000))]


def write_csv(path: Path, rows: list[str], header: str = 'phone,name') -> Path:
    path.write_text(header + '\n' + '\n'.join(rows) + '\n', encoding='utf-8')
    return path


def new_york(count: int, first: int = 0) -> list[str]:
    return [f'+1212{2000000 + i:07d},Person {i}' for i in range(first, first + count)]


def campaign_hash(sync_redis: redis_sync.Redis, name: str) -> dict[str, str]:
    return sync_redis.hgetall(k.campaign(name))


# --- 1. a refused load writes nothing -------------------------------------------------------------


def _refusals(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    good = write_csv(tmp_path / 'good.csv', new_york(3))
    (tmp_path / 'bad.toml').write_text('name = "fresh"\ntrunk = "carrier-a"\nagent_id = "a"\nhours = 3\n')
    prompt = tmp_path / 'prompt.csv'
    write_csv(prompt, ['+12122000001,Ann,gold'], header='phone,name,tier')
    huge = tmp_path / 'huge_header.csv'
    huge.write_text('phone,' + ','.join(f'c{i}' for i in range(700_000)) + '\n+12122000001\n', encoding='utf-8')
    wide = tmp_path / 'wide.csv'
    wide.write_text('phone,' + ','.join(f'c{i}' for i in range(2000)) + '\n', encoding='utf-8')
    new = ['--campaign', 'fresh', *AGENT]
    return {
        'rejects path not writable': (
            [str(good), *new, '--rejects', str(tmp_path / 'no' / 'such' / 'dir' / 'r.csv')],
            'cannot write the rejects file',
        ),
        'rejects path is a directory': ([str(good), *new, '--rejects', str(tmp_path)], 'cannot write the rejects file'),
        'unknown trunk': (
            [str(good), '--campaign', 'fresh', '--agent-id', 'a', '--trunk', 'nope'],
            "unknown trunk 'nope'",
        ),
        'invalid hours': ([str(good), *new, '--hours', '20:00-09:00'], 'must be before end'),
        'invalid number types': ([str(good), *new, '--number-types', 'landline'], 'number types are'),
        'invalid start': ([str(good), *new, '--start-at', '2026-03-02T09:00'], 'has no UTC offset'),
        'no phone column': ([str(write_csv(tmp_path / 'nophone.csv', ['x'], header='name')), *new], 'no phone column'),
        'header too large': ([str(huge), *new], 'header row longer than 64 KiB'),
        'too many columns': ([str(wide), *new], '2001 columns in the header; at most 500'),
        'campaign file invalid': ([str(good), '--campaign-file', str(tmp_path / 'bad.toml')], 'field hours'),
        'prompt placeholder without a column': (
            [str(prompt), '--campaign', 'fresh', '--trunk', 'carrier-a', '--system-prompt', 'Hi {{name}}, {{plan}}'],
            '{{plan}} but the file has no such column',
        ),
        'other settings than the existing campaign': (
            [str(good), '--campaign', 'spring', '--max-attempts', '5'],
            'retry.max_attempts: campaign has 3, given 5',
        ),
        'another trunk than the existing campaign': (
            [str(good), '--campaign', 'spring', '--trunk', 'carrier-b'],
            'trunk: campaign has "carrier-a", given "carrier-b"',
        ),
    }


REFUSAL_IDS = [
    'rejects path not writable',
    'rejects path is a directory',
    'unknown trunk',
    'invalid hours',
    'invalid number types',
    'invalid start',
    'no phone column',
    'header too large',
    'too many columns',
    'campaign file invalid',
    'prompt placeholder without a column',
    'other settings than the existing campaign',
    'another trunk than the existing campaign',
]


@pytest.mark.parametrize('case', REFUSAL_IDS)
def test_a_refused_load_leaves_redis_exactly_as_it_was(
    case: str, dialer, sync_redis: redis_sync.Redis, redis_url: str, tmp_path: Path
) -> None:
    # an existing campaign, so that there is state to disturb
    dialer('campaign', 'load', str(write_csv(tmp_path / 'seed.csv', new_york(2, 100))), '--campaign', 'spring', *AGENT)
    args, message = _refusals(tmp_path)[case]
    before = snapshot(redis_url)

    result = dialer('campaign', 'load', *args, expect=result_code(case))

    assert message in result.output
    assert snapshot(redis_url) == before


def result_code(case: str) -> int:
    # click's own usage errors exit 2, the dialer's refusals 1
    return 2 if case in {'invalid number types', 'invalid start'} else 1


def test_a_multi_megabyte_header_is_refused_with_a_clear_message(
    dialer, sync_redis: redis_sync.Redis, tmp_path: Path
) -> None:
    path = tmp_path / 'five_mb_header.csv'
    with path.open('w', encoding='utf-8') as handle:
        handle.write('phone')
        handle.write(',' * (5 * 1024 * 1024))
        handle.write('\n+12122000001\n')

    result = dialer('campaign', 'load', str(path), '--campaign', 'big', *AGENT, expect=1)

    assert f'Error: {path}: line 1: header row longer than 64 KiB' in result.output
    assert sync_redis.dbsize() == 0


def test_a_giant_data_line_is_refused_without_reading_it_whole(
    dialer, sync_redis: redis_sync.Redis, tmp_path: Path
) -> None:
    path = tmp_path / 'giant_line.csv'
    path.write_text('phone,note\n+12122000001,' + ',' * (3 * 1024 * 1024) + '\n', encoding='utf-8')
    result = dialer('campaign', 'plan', '--csv', str(path), expect=1)
    assert f'{path}: line 2: line longer than 1 MiB' in result.output


def test_a_row_over_the_template_context_limit_is_rejected_with_its_line(
    dialer, sync_redis: redis_sync.Redis, tmp_path: Path
) -> None:
    notes = ','.join(['x' * 4000] * 5)  # 20 000 bytes of context, each cell under the 8 KiB cell limit
    rows = ['+12122000001,ok,a,b,c,d,e', f'+12122000002,big,{notes}']
    path = write_csv(tmp_path / 'c.csv', rows, header='phone,name,n1,n2,n3,n4,n5')

    result = dialer('campaign', 'load', str(path), '--campaign', 'ctx', *AGENT)

    assert '1 contacts enqueued' in result.output
    assert 'template context too large' in result.output
    with (tmp_path / 'c.csv.rejects.csv').open(newline='', encoding='utf-8') as handle:
        rejected = list(csv.DictReader(handle))
    assert [(r['line'], r['reason'].split(':')[0]) for r in rejected] == [('3', 'template context too large')]
    assert '16 KiB' in rejected[0]['reason']


# --- 2. --paused and --start-at --------------------------------------------------------------------


def test_a_campaign_loaded_paused_dials_nothing_until_resumed(
    dialer, sync_redis: redis_sync.Redis, tmp_path: Path
) -> None:
    set_clock(sync_redis, MONDAY_0700_NEW_YORK)
    path = write_csv(tmp_path / 'c.csv', new_york(5))

    result = dialer('campaign', 'load', str(path), '--campaign', 'spring', *AGENT, *ALL_DAY, '--paused')

    assert "campaign 'spring' is paused" in result.output
    assert campaign_hash(sync_redis, 'spring')['state'] == 'paused'
    assert not sync_redis.sismember(k.trunk_campaigns('carrier-a'), 'spring')  # no pacer serves it
    assert sync_redis.zcard(k.campaign_due('spring')) == 5
    plan = dialer('campaign', 'plan', 'spring').output
    assert 'America/New_York' in plan
    assert json.loads(dialer('campaign', 'status', 'spring', '--json').output)['state'] == 'paused'

    assert 'is active' in dialer('campaign', 'resume', 'spring').output
    assert sync_redis.sismember(k.trunk_campaigns('carrier-a'), 'spring')


def test_loading_more_contacts_paused_pauses_an_active_campaign_before_adding_them(
    dialer, sync_redis: redis_sync.Redis, tmp_path: Path
) -> None:
    dialer('campaign', 'load', str(write_csv(tmp_path / 'a.csv', new_york(2))), '--campaign', 'spring', *AGENT)
    assert campaign_hash(sync_redis, 'spring')['state'] == 'active'
    dialer('campaign', 'load', str(write_csv(tmp_path / 'b.csv', new_york(2, 10))), '--campaign', 'spring', '--paused')
    assert campaign_hash(sync_redis, 'spring')['state'] == 'paused'
    assert not sync_redis.sismember(k.trunk_campaigns('carrier-a'), 'spring')


def test_no_contact_is_due_before_start_at(dialer, sync_redis: redis_sync.Redis, tmp_path: Path) -> None:
    set_clock(sync_redis, MONDAY_0700_NEW_YORK)
    start = MONDAY_0700_NEW_YORK + timedelta(hours=5, minutes=17)
    path = write_csv(tmp_path / 'c.csv', new_york(4))

    result = dialer(
        'campaign', 'load', str(path), '--campaign', 'spring', *AGENT, *ALL_DAY, '--start-at', start.isoformat()
    )

    assert 'no contact is dialled before 2026-03-02 17:17 UTC' in result.output
    scores = [score for _, score in sync_redis.zrange(k.campaign_due('spring'), 0, -1, withscores=True)]
    assert scores == [ms(start)] * 4
    # contacts added later to the same campaign are held as well
    dialer('campaign', 'load', str(write_csv(tmp_path / 'd.csv', new_york(1, 50))), '--campaign', 'spring')
    assert sync_redis.zscore(k.campaign_due('spring'), '+12122000050') == ms(start)


def test_start_at_inside_closed_hours_waits_for_the_next_opening(
    dialer, sync_redis: redis_sync.Redis, tmp_path: Path
) -> None:
    set_clock(sync_redis, MONDAY_0700_NEW_YORK)  # 07:00 in New York; hours 09:00-20:00 local
    path = write_csv(tmp_path / 'c.csv', new_york(1))
    dialer('campaign', 'load', str(path), '--campaign', 'spring', *AGENT, '--start-at', '2026-03-02T13:00:00+00:00')
    # 13:00 UTC is 08:00 in New York: first due at 09:00 local, 14:00 UTC
    assert sync_redis.zscore(k.campaign_due('spring'), '+12122000000') == ms(datetime(2026, 3, 2, 14, 0, tzinfo=UTC))


def test_start_at_hh_mm_is_the_next_such_utc_time(dialer, sync_redis: redis_sync.Redis, tmp_path: Path) -> None:
    set_clock(sync_redis, MONDAY_0700_NEW_YORK)  # 12:00 UTC
    dialer('campaign', 'load', str(write_csv(tmp_path / 'a.csv', new_york(1))), '--campaign', 'later', *AGENT,
           *ALL_DAY, '--start-at', '15:30')  # fmt: skip
    dialer('campaign', 'load', str(write_csv(tmp_path / 'b.csv', new_york(1))), '--campaign', 'tomorrow', *AGENT,
           *ALL_DAY, '--start-at', '11:00')  # fmt: skip
    assert sync_redis.zscore(k.campaign_due('later'), '+12122000000') == ms(datetime(2026, 3, 2, 15, 30, tzinfo=UTC))
    assert sync_redis.zscore(k.campaign_due('tomorrow'), '+12122000000') == ms(datetime(2026, 3, 3, 11, 0, tzinfo=UTC))


# --- 3. plan --csv ---------------------------------------------------------------------------------


def _table_rows(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith('│')]


def test_plan_of_a_csv_shows_the_plan_a_load_gives_and_writes_nothing(
    dialer, sync_redis: redis_sync.Redis, redis_url: str, tmp_path: Path
) -> None:
    set_clock(sync_redis, MONDAY_0700_NEW_YORK)
    rows = [
        *new_york(3),  # New York: 07:00, opens at 14:00 UTC
        '+14155552671,LA',  # Los Angeles: 04:00, opens at 17:00 UTC
        '+442079460958,London',  # 12:00 in London: callable now
        '+19005550123,Premium',
        'not a number,Bad',
        '+12122000000,Dup',
    ]
    path = write_csv(tmp_path / 'c.csv', rows)
    options = ['--campaign', 'spring', *AGENT, '--default-region', 'US']
    before = snapshot(redis_url)

    planned = dialer('campaign', 'plan', '--csv', str(path), *options[2:]).output

    assert snapshot(redis_url) == before
    assert not (tmp_path / 'c.csv.rejects.csv').exists()
    assert 'c.csv: 8 rows, 5 would be enqueued, 3 rejected' in planned
    for reason in ('duplicate phone', 'invalid phone', 'number type not allowed'):
        assert f'1  {reason}' in planned
    dialer('campaign', 'load', str(path), *options)
    loaded = dialer('campaign', 'plan', 'spring').output
    assert _table_rows(planned) == _table_rows(loaded)
    assert any('Europe/London' in row and '│ 1 ' in row for row in _table_rows(planned))


def test_plan_of_a_csv_uses_an_existing_campaigns_settings(
    dialer, sync_redis: redis_sync.Redis, tmp_path: Path
) -> None:
    set_clock(sync_redis, MONDAY_0700_NEW_YORK)
    dialer('campaign', 'load', str(write_csv(tmp_path / 'a.csv', new_york(1))), '--campaign', 'spring', *AGENT,
           '--hours', '10:00-18:00')  # fmt: skip
    planned = dialer('campaign', 'plan', 'spring', '--csv', str(write_csv(tmp_path / 'b.csv', new_york(2, 5)))).output
    assert '2026-03-02 15:00' in planned  # 10:00 in New York
    refused = dialer('campaign', 'plan', 'spring', '--csv', str(tmp_path / 'b.csv'), '--hours', '09:00-18:00', expect=1)
    assert 'hours.start: campaign has "10:00:00", given "09:00:00"' in refused.output


def test_plan_needs_a_name_or_a_csv(dialer) -> None:
    assert 'give a campaign NAME, or --csv FILE' in dialer('campaign', 'plan', expect=2).output
    assert (
        'give a campaign NAME, or --csv FILE'
        in dialer('campaign', 'plan', 'x', '--hours', '10:00-18:00', expect=2).output
    )


# --- 4. adding contacts to an existing campaign ----------------------------------------------------


def test_load_into_an_existing_campaign_by_name_alone_keeps_its_settings(
    dialer, sync_redis: redis_sync.Redis, tmp_path: Path
) -> None:
    first = write_csv(tmp_path / 'a.csv', new_york(3))
    dialer('campaign', 'load', str(first), '--campaign', 'spring', *AGENT, '--hours', '10:00-18:00',
           '--max-attempts', '1', '--retry-delay', 'busy=5m')  # fmt: skip
    config_before = campaign_hash(sync_redis, 'spring')['config']

    result = dialer('campaign', 'load', str(write_csv(tmp_path / 'b.csv', new_york(2, 10))), '--campaign', 'spring')

    assert "2 contacts enqueued into 'spring'" in result.output
    assert campaign_hash(sync_redis, 'spring')['config'] == config_before
    assert sync_redis.hlen(k.campaign_contacts('spring')) == 5
    # options that agree with the campaign are accepted
    agree = write_csv(tmp_path / 'c.csv', new_york(1, 20))
    dialer('campaign', 'load', str(agree), '--campaign', 'spring', '--hours', '10:00-18:00', '--trunk', 'carrier-a')
    assert sync_redis.hlen(k.campaign_contacts('spring')) == 6


def test_options_that_differ_from_the_existing_campaign_are_refused_naming_each_difference(
    dialer, sync_redis: redis_sync.Redis, redis_url: str, tmp_path: Path
) -> None:
    dialer('campaign', 'load', str(write_csv(tmp_path / 'a.csv', new_york(1))), '--campaign', 'spring', *AGENT)
    before = snapshot(redis_url)

    result = dialer('campaign', 'load', str(write_csv(tmp_path / 'b.csv', new_york(1, 5))), '--campaign', 'spring',
                    '--hours', '10:00-18:00', '--days', 'mon-fri', '--agent-id', 'agent-2', expect=1)  # fmt: skip

    assert 'agent_id: campaign has "agent-1", given "agent-2"' in result.output
    assert 'hours.start: campaign has "09:00:00", given "10:00:00"' in result.output
    assert 'hours.end: campaign has "20:00:00", given "18:00:00"' in result.output
    assert 'hours.days' in result.output
    assert 'dialer campaign update' in result.output
    assert snapshot(redis_url) == before


# --- 5. number types --------------------------------------------------------------------------------


def test_premium_rate_and_other_non_dialable_numbers_are_rejected_with_a_reason(
    dialer, sync_redis: redis_sync.Redis, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / 'c.csv', ['+12122000001,Ann', '+19005550123,Premium', '+18005550199,Free',
                                          '+449098790000,UkPremium', '+33612345678,Mobile'])  # fmt: skip
    result = dialer('campaign', 'load', str(path), '--campaign', 'spring', *AGENT)
    assert '2 contacts enqueued' in result.output
    assert '3  number type not allowed' in result.output
    with (tmp_path / 'c.csv.rejects.csv').open(newline='', encoding='utf-8') as handle:
        reasons = {row['phone']: row['reason'] for row in csv.DictReader(handle)}
    assert 'a premium_rate number' in reasons['+19005550123']
    assert 'a toll_free number' in reasons['+18005550199']
    assert 'a premium_rate number' in reasons['+449098790000']


def test_the_number_types_allowed_are_configurable(dialer, sync_redis: redis_sync.Redis, tmp_path: Path) -> None:
    path = write_csv(tmp_path / 'c.csv', ['+12122000001,Ann', '+18005550199,Free', '+33612345678,Mobile'])
    result = dialer('campaign', 'load', str(path), '--campaign', 'spring', *AGENT, '--number-types', 'toll-free,mobile')
    assert '2 contacts enqueued' in result.output  # the toll free and the French mobile, not the US landline
    assert sync_redis.hexists(k.campaign_contacts('spring'), '+18005550199')
    config = json.loads(campaign_hash(sync_redis, 'spring')['config'])
    assert config['number_types'] == ['toll_free', 'mobile']
    (tmp_path / 'c.toml').write_text('name = "filed"\ntrunk = "carrier-a"\nagent_id = "a"\nnumber_types = ["voip"]\n')
    result = dialer('campaign', 'load', str(path), '--campaign-file', str(tmp_path / 'c.toml'), '--rejects',
                    str(tmp_path / 'r.csv'))  # fmt: skip
    assert '0 contacts enqueued' in result.output


# --- 6. a contact whose zones cannot be narrowed down -----------------------------------------------


def test_a_contact_with_a_whole_countrys_zones_prints_a_one_line_plan_row(
    dialer, sync_redis: redis_sync.Redis, tmp_path: Path
) -> None:
    set_clock(sync_redis, MONDAY_0700_NEW_YORK)
    path = write_csv(tmp_path / 'c.csv', ['+19005550123,Premium'])
    dialer('campaign', 'load', str(path), '--campaign', 'spring', *AGENT, '--number-types', 'premium_rate')
    for output in (dialer('campaign', 'plan', 'spring').output, dialer('campaign', 'plan', '--csv', str(path),
                   '--number-types', 'premium_rate').output):  # fmt: skip
        rows = _table_rows(output)
        assert len(rows) == 1, output
        assert ' zones (America/' in rows[0]


# --- 7. a system prompt and the CSV's columns -------------------------------------------------------


def test_columns_a_system_prompt_does_not_use_are_named_in_a_warning(
    dialer, sync_redis: redis_sync.Redis, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / 'c.csv', ['+12122000001,Ann,gold,red'], header='phone,name,tier,colour')
    prompt = 'You call {{ name }} about their {{tier}} plan.'
    result = dialer('campaign', 'load', str(path), '--campaign', 'p', '--trunk', 'carrier-a', '--system-prompt', prompt)
    assert '1 contacts enqueued' in result.output
    assert 'warning: the system prompt uses no {{placeholder}} for these columns: colour' in result.stderr
    assert 'tier' not in result.stderr.split('columns:')[1]


def test_an_agent_campaign_is_not_warned_about_columns(dialer, sync_redis: redis_sync.Redis, tmp_path: Path) -> None:
    path = write_csv(tmp_path / 'c.csv', ['+12122000001,Ann,gold'], header='phone,name,tier')
    result = dialer('campaign', 'load', str(path), '--campaign', 'a', *AGENT)
    assert 'warning' not in result.stderr


# --- 8. the rejects file loads again once fixed -----------------------------------------------------


def test_a_fixed_rejects_file_loads_again_as_it_is(dialer, sync_redis: redis_sync.Redis, tmp_path: Path) -> None:
    rows = [
        '+12122000001,Ann,gold,"=cmd|x"',
        '+1 212 200 00,Bob,silver,-2',  # too short
        '+1 (212) 200-00x3,Cy,bronze,note',  # letters
        ',Dee,gold,@home',  # empty
        '+12122000001,Eve,gold,dup',  # duplicate
    ]
    path = write_csv(tmp_path / 'c.csv', rows, header='phone,name,tier,notes')
    dialer('campaign', 'load', str(path), '--campaign', 'spring', *AGENT)
    rejects = tmp_path / 'c.csv.rejects.csv'
    with rejects.open(newline='', encoding='utf-8') as handle:
        table = list(csv.reader(handle))
    assert table[0] == ['line', 'reason', 'phone', 'name', 'tier', 'notes']
    by_name = {row[3]: row for row in table[1:]}
    assert by_name['Bob'][2] == '+1 212 200 00'  # the phone as written, not defused
    assert by_name['Bob'][5] == "'-2"  # a free-text cell is
    assert by_name['Dee'][5] == "'@home"
    fixes = {'Bob': '+1 212 200 0002', 'Cy': '+1 (212) 200-0003', 'Dee': '+12122000004'}
    for row in table[1:]:
        row[2] = fixes.get(row[3], row[2])
    with rejects.open('w', newline='', encoding='utf-8') as handle:
        csv.writer(handle).writerows(table)

    result = dialer('campaign', 'load', str(rejects), '--campaign', 'spring')

    assert '3 contacts enqueued' in result.output
    assert '1 rejected' in result.output  # the duplicate is still a duplicate
    contact = json.loads(sync_redis.hget(k.campaign_contacts('spring'), '+12122000002'))
    assert contact['n'] == 'Bob'
    assert sorted(contact['c']) == ['notes', 'tier']  # line and reason are not template context
    assert contact['c']['tier'] == 'silver'
    again = tmp_path / 'c.csv.rejects.csv.rejects.csv'
    with again.open(newline='', encoding='utf-8') as handle:
        assert next(csv.reader(handle)) == ['line', 'reason', 'phone', 'name', 'tier', 'notes']
