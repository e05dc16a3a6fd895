"""The streaming CSV loader against a real Redis."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis
from test_bad_inputs import redis_snapshot

from campaigns import loader as loader_module
from campaigns.csvfile import CsvError
from campaigns.lifecycle import CampaignConflictError
from campaigns.loader import LoadSummary, load_contacts, neutralise
from dialer import constants as k
from dialer.models import CallingHours, CampaignConfig, ContactRecord, Weekday


CONFIG = CampaignConfig(name='spring', trunk='carrier-a', agent_id='agent-1')


def _write(tmp_path: Path, content: str | bytes, name: str = 'contacts.csv') -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode('utf-8') if isinstance(content, str) else content)
    return path


def _rejects(path: Path) -> list[dict[str, str]]:
    with path.open(newline='', encoding='utf-8') as handle:
        return list(csv.DictReader(handle))


async def _load(
    redis: aredis.Redis, path: Path, tmp_path: Path, config: CampaignConfig = CONFIG, **kwargs: object
) -> LoadSummary:
    return await load_contacts(redis, config, path, rejects_path=tmp_path / 'rejects.csv', **kwargs)  # type: ignore[arg-type]


async def _contacts(redis: aredis.Redis, name: str = 'spring') -> dict[str, dict[str, object]]:
    raw = await redis.hgetall(k.campaign_contacts(name))
    return {number: json.loads(record) for number, record in raw.items()}


async def test_bom_crlf_and_quoted_fields_load_with_the_physical_line_where_each_row_starts(
    redis: aredis.Redis, tmp_path: Path
) -> None:
    content = (
        '\ufeffphone,name,notes\r\n'
        '+14155552671,"Smith, Ann","first line\r\nsecond line"\r\n'
        '\r\n'
        '(415) 555-2672,Bob,"a, b, c"\r\n'
        '+1 415 555 2673,"Cy ""the guy""",plain\r\n'
    )
    summary = await _load(redis, _write(tmp_path, content), tmp_path)

    assert (summary.rows, summary.accepted, summary.rejected) == (3, 3, 0)
    contacts = await _contacts(redis)
    assert contacts['+14155552671'] == {
        'i': '2',
        'l': 2,
        'n': 'Smith, Ann',
        'c': {'notes': 'first line\r\nsecond line'},
    }
    # the quoted newline and the blank line both count: Bob's row starts on line 5
    assert contacts['+14155552672']['l'] == 5
    assert contacts['+14155552672']['c'] == {'notes': 'a, b, c'}
    assert contacts['+14155552673']['n'] == 'Cy "the guy"'
    assert await redis.zcard(k.campaign_due('spring')) == 3
    campaign = await redis.hgetall(k.campaign('spring'))
    assert campaign['contacts'] == '3'
    assert campaign['n:pending'] == '3'
    assert 'loading' not in campaign


@pytest.mark.parametrize('header', ['Phone Number', 'MSISDN', 'mobile-number', ' Tel ', 'PhoneNumber', 'number'])
async def test_phone_column_aliases_are_recognised(redis: aredis.Redis, tmp_path: Path, header: str) -> None:
    path = _write(tmp_path, f'name,{header}\nAnn,+14155552671\n')
    summary = await _load(redis, path, tmp_path)
    assert summary.accepted == 1
    assert list(await _contacts(redis)) == ['+14155552671']


async def test_invalid_empty_and_duplicate_numbers_are_rejected_with_line_numbers(
    redis: aredis.Redis, tmp_path: Path
) -> None:
    content = (
        'phone,name\n'
        '+14155552671,Ann\n'  # 2
        'not a number,Bob\n'  # 3
        ',Cy\n'  # 4
        '(415) 555-2671,Ann again\n'  # 5: the same number as line 2, written differently
        '555-12,Dee\n'  # 6
        '+44 7400 123456,Eve\n'  # 7
        '+447400123456,Eve again\n'  # 8
    )
    summary = await _load(redis, _write(tmp_path, content), tmp_path)

    assert summary.accepted == 2
    assert summary.rejected == 5
    assert summary.rejects_by_reason == {'invalid phone': 2, 'empty phone': 1, 'duplicate phone': 2}
    rejects = _rejects(tmp_path / 'rejects.csv')
    assert [(r['line'], r['reason'].split(':')[0], r['phone']) for r in rejects] == [
        ('3', 'invalid phone', 'not a number'),
        ('4', 'empty phone', ''),
        ('5', 'duplicate phone', '(415) 555-2671'),
        ('6', 'invalid phone', '555-12'),
        ('8', 'duplicate phone', '+447400123456'),
    ]
    assert rejects[2]['reason'] == 'duplicate phone: same number as line 2'
    campaign = await redis.hgetall(k.campaign('spring'))
    assert (campaign['contacts'], campaign['rejected']) == ('2', '5')


async def test_duplicate_contact_ids_are_rejected_and_leave_no_trace(redis: aredis.Redis, tmp_path: Path) -> None:
    content = 'External ID,phone\nA-1,+14155552671\nA-2,+14155552672\nA-1,+14155552673\n ,+14155552674\n'
    summary = await _load(redis, _write(tmp_path, content), tmp_path)

    assert summary.accepted == 2
    assert summary.rejects_by_reason == {'duplicate contact_id': 1, 'empty contact_id': 1}
    rejects = _rejects(tmp_path / 'rejects.csv')
    assert rejects[0]['line'] == '4'
    assert rejects[0]['reason'] == "duplicate contact_id: contact_id 'A-1' is already used on line 2"
    assert rejects[0]['External ID'] == 'A-1'
    assert set(await _contacts(redis)) == {'+14155552671', '+14155552672'}
    assert await redis.hgetall(k.campaign_ids('spring')) == {'A-1': '+14155552671', 'A-2': '+14155552672'}
    assert await redis.zcard(k.campaign_due('spring')) == 2


async def test_ids_names_and_context_in_any_characters_are_stored_exactly(redis: aredis.Redis, tmp_path: Path) -> None:
    # the rows travel to Redis packed with byte lengths: multi-byte text, spaces, quotes, newlines and
    # digits in an id must neither shift nor split the rows that follow
    tricky = ['Zoë 中文 🙂', 'a b 12 34 ', 'x"y,z', 'two\nlines', '0 0 0 0 0 ', '\u00e9\\']
    lines = ['contact_id,phone,name,note']
    for n, text in enumerate(tricky):
        quoted = '"' + text.replace('"', '""') + '"'
        lines.append(f'{quoted},+1415555{2671 + n},{quoted},{quoted}')
    lines.append('"Zoë 中文 🙂",+14155559999,dup,dup')
    summary = await _load(redis, _write(tmp_path, '\n'.join(lines) + '\n'), tmp_path)

    assert summary.accepted == len(tricky)
    contacts = await _contacts(redis)
    for n, text in enumerate(tricky):
        record = contacts[f'+1415555{2671 + n}']
        assert record['i'] == text.strip()
        assert record['n'] == text.strip()
        assert record['c'] == {'note': text}
    assert await redis.hgetall(k.campaign_ids('spring')) == {
        text.strip(): f'+1415555{2671 + n}' for n, text in enumerate(tricky)
    }
    (reject,) = _rejects(tmp_path / 'rejects.csv')
    assert reject['reason'] == "duplicate contact_id: contact_id 'Zoë 中文 🙂' is already used on line 2"


async def test_contact_id_defaults_to_the_line_number(redis: aredis.Redis, tmp_path: Path) -> None:
    await _load(redis, _write(tmp_path, 'phone\n\n+14155552671\n'), tmp_path)
    assert (await _contacts(redis))['+14155552671']['i'] == '3'
    assert not await redis.exists(k.campaign_ids('spring'))


async def test_template_context_keeps_every_other_column_under_its_header(redis: aredis.Redis, tmp_path: Path) -> None:
    content = (
        'Contact ID,Phone,Name,TZ, Plan Name ,renewal-date\nc1,+14155552671, Ann ,America/Chicago,Gold,2024-07-01\n'
    )
    await _load(redis, _write(tmp_path, content), tmp_path)
    record = (await _contacts(redis))['+14155552671']
    assert record == {
        'i': 'c1',
        'l': 2,
        'n': 'Ann',
        'z': 'America/Chicago',
        'c': {'Plan Name': 'Gold', 'renewal-date': '2024-07-01'},
    }


async def test_loading_the_same_file_twice_adds_nothing(redis: aredis.Redis, tmp_path: Path, redis_url: str) -> None:
    path = _write(tmp_path, 'phone,name\n+14155552671,Ann\n+14155552672,Bob\nbad,Cy\n')
    first = await _load(redis, path, tmp_path)
    before = await redis_snapshot(redis_url)
    (tmp_path / 'rejects.csv').unlink()

    again = await _load(redis, path, tmp_path)

    assert first.accepted == 2
    assert again.skipped_whole_file
    assert again.accepted == 0
    assert again.digest == first.digest
    assert await redis_snapshot(redis_url) == before
    assert not (tmp_path / 'rejects.csv').exists()


async def test_an_interrupted_load_rerun_completes_without_reporting_duplicates(
    redis: aredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [f'+1415555{i:04d},Contact {i}' for i in range(10)] + ['+14155550003,dup of line 5']
    path = _write(tmp_path, 'phone,name\n' + '\n'.join(rows) + '\n')
    real_write = loader_module._Writer.write
    calls = 0

    async def crash_on_third_batch(self: loader_module._Writer, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ConnectionError('Redis went away')
        await real_write(self, *args)

    monkeypatch.setattr(loader_module._Writer, 'write', crash_on_third_batch)
    with pytest.raises(ConnectionError):
        await _load(redis, path, tmp_path, batch_size=3)
    monkeypatch.undo()

    loads = await redis.hgetall(k.campaign_loads('spring'))
    (status,) = [json.loads(value) for value in loads.values()]
    assert status['status'] == 'failed'
    assert await redis.hlen(k.campaign_contacts('spring')) == 6

    summary = await _load(redis, path, tmp_path, batch_size=3)

    assert summary.already_loaded == 6
    assert summary.accepted == 4
    assert summary.rejects_by_reason == {'duplicate phone': 1}
    assert [r['line'] for r in _rejects(tmp_path / 'rejects.csv')] == ['12']
    campaign = await redis.hgetall(k.campaign('spring'))
    assert (campaign['contacts'], campaign['n:pending'], campaign['rejected']) == ('10', '10', '1')
    assert 'loading' not in campaign
    (status,) = [json.loads(value) for value in (await redis.hgetall(k.campaign_loads('spring'))).values()]
    assert status['status'] == 'done'


async def test_a_broken_row_after_the_first_batch_keeps_earlier_rows_and_records_the_failure(
    redis: aredis.Redis, tmp_path: Path
) -> None:
    rows = [f'+1415555{i:04d},Contact {i}' for i in range(5)]
    broken = _write(tmp_path, 'phone,name\n' + '\n'.join(rows) + '\n+14155559999,"never closed\n')

    with pytest.raises(CsvError) as raised:
        await _load(redis, broken, tmp_path, batch_size=2)

    assert str(raised.value) == f'{broken}: line 7: a quoted field in the row starting here is never closed'
    assert await redis.hlen(k.campaign_contacts('spring')) == 5
    (status,) = [json.loads(value) for value in (await redis.hgetall(k.campaign_loads('spring'))).values()]
    assert (status['status'], status['line']) == ('failed', 7)
    assert 'loading' not in await redis.hgetall(k.campaign('spring'))

    fixed = _write(tmp_path, 'phone,name\n' + '\n'.join(rows) + '\n+14155559999,"closed"\n', 'fixed.csv')
    summary = await _load(redis, fixed, tmp_path, batch_size=2)
    assert (summary.already_loaded, summary.accepted, summary.rejected) == (5, 1, 0)


async def _state(redis: aredis.Redis) -> tuple[object, ...]:
    return (
        await redis.hgetall(k.campaign_contacts('spring')),
        await redis.zrange(k.campaign_due('spring'), 0, -1),
        await redis.hgetall(k.campaign('spring')),
        await redis.hgetall(k.campaign_loads('spring')),
    )


async def test_rows_are_checked_the_same_in_worker_processes(redis: aredis.Redis, tmp_path: Path) -> None:
    rows = [f'+1415555{i % 40:04d},Contact {i},x{i}' if i % 7 else f'bad{i},Nobody,y' for i in range(200)]
    path = _write(tmp_path, 'phone,name,extra\n' + '\n'.join(rows) + '\n')
    inline = await _load(redis, path, tmp_path, workers=0, batch_size=16)
    inline_rejects = (tmp_path / 'rejects.csv').read_text()
    inline_state = await _state(redis)
    await redis.flushdb()

    pooled = await _load(redis, path, tmp_path, workers=2, batch_size=16)

    assert pooled == inline
    assert inline.rejects_by_reason == {'invalid phone': 29, 'duplicate phone': 131}
    assert (tmp_path / 'rejects.csv').read_text() == inline_rejects
    assert await _state(redis) == inline_state


@pytest.mark.parametrize(
    'content',
    [
        'name,email\nAnn,a@example.com\n',
        'phone,name,PHONE\n+14155552671,Ann,+14155552672\n',
        'phone,,name\n+14155552671,x,Ann\n',
        'phone,mobile\n+14155552671,+14155552672\n',
    ],
    ids=['no-phone', 'duplicate-header', 'empty-header', 'ambiguous-phone'],
)
async def test_fatal_header_errors_leave_redis_unchanged(
    redis: aredis.Redis, tmp_path: Path, redis_url: str, content: str
) -> None:
    await _load(redis, _write(tmp_path, 'phone\n+14155550000\n', 'seed.csv'), tmp_path)
    before = await redis_snapshot(redis_url)
    path = _write(tmp_path, content)

    with pytest.raises(CsvError) as raised:
        await _load(redis, path, tmp_path, config=CONFIG.model_copy(update={'name': 'other'}))

    assert str(raised.value).startswith(f'{path}: line 1: ')
    assert await redis_snapshot(redis_url) == before


async def test_a_different_configuration_for_an_existing_campaign_is_refused_before_loading(
    redis: aredis.Redis, tmp_path: Path
) -> None:
    await _load(redis, _write(tmp_path, 'phone\n+14155550000\n', 'seed.csv'), tmp_path)
    with pytest.raises(CampaignConflictError):
        await _load(
            redis, _write(tmp_path, 'phone\n+14155550001\n'), tmp_path, config=CONFIG.model_copy(update={'trunk': 'b'})
        )
    assert await redis.hlen(k.campaign_contacts('spring')) == 1


async def test_time_zone_problems_are_rejected(redis: aredis.Redis, tmp_path: Path) -> None:
    hours = CallingHours(start='09:00', end='12:00', days=(Weekday.MON,))
    # +800 is international freephone (toll free): allowed here for its lack of a zone
    config = CONFIG.model_copy(update={'hours': hours, 'number_types': ('toll_free', 'fixed_line_or_mobile', 'mobile')})
    content = (
        'phone,timezone\n'
        '+80012345678,\n'  # no zone from the number and no default
        '+79123456789,\n'  # Moscow to Kamchatka: 09:00-12:00 never holds everywhere at once
        '+14155552671,Mars/Olympus\n'
        '+14155552672,America/Los_Angeles\n'
    )
    summary = await _load(redis, _write(tmp_path, content), tmp_path, config=config)
    assert summary.rejects_by_reason == {'no time zone': 1, 'never callable': 1, 'invalid timezone': 1}
    assert summary.accepted == 1


async def test_the_initial_due_time_is_the_next_calling_window_in_redis_time(
    redis: aredis.Redis, tmp_path: Path
) -> None:
    # 2024-01-01 is a Monday; at 12:00 UTC it is 04:00 in Los Angeles, so the window opens at 17:00 UTC
    now_ms = 1_704_110_400_000
    seconds, micros = await redis.time()
    offset = now_ms - (seconds * 1000 + micros // 1000)
    await redis.set(k.CLOCK_OFFSET, offset)
    await _load(redis, _write(tmp_path, 'phone,timezone\n+14155552671,America/Los_Angeles\n'), tmp_path)
    due = await redis.zscore(k.campaign_due('spring'), '+14155552671')
    assert due == 1_704_128_400_000


def test_formula_cells_are_neutralised_but_e164_numbers_are_not() -> None:
    assert neutralise('=1+2') == "'=1+2"
    assert neutralise('+1 (415) 555') == "'+1 (415) 555"
    assert neutralise('-5') == "'-5"
    assert neutralise('@x') == "'@x"
    assert neutralise('\tx') == "'\tx"
    assert neutralise('+14155552671') == '+14155552671'
    assert neutralise('Ann') == 'Ann'


async def test_progress_bar_does_not_change_the_result(redis: aredis.Redis, tmp_path: Path) -> None:
    summary = await _load(redis, _write(tmp_path, 'phone\n+14155552671\n'), tmp_path, progress=True)
    assert summary.accepted == 1


async def test_a_header_only_file_is_not_an_error_and_loads_nothing(redis: aredis.Redis, tmp_path: Path) -> None:
    summary = await _load(redis, _write(tmp_path, 'phone,name\r\n'), tmp_path)
    assert (summary.rows, summary.accepted, summary.rejected) == (0, 0, 0)
    assert _rejects(tmp_path / 'rejects.csv') == []
    campaign = await redis.hgetall(k.campaign('spring'))
    assert 'loading' not in campaign


@pytest.mark.parametrize(
    ('name', 'timezone', 'context'),
    [('', '', {}), ('Zoë "Z" 中文', 'Europe/Berlin', {'plan': 'gold', 'note': 'a\nb\x1f'}), ('Ann', '', {'k': ''})],
)
def test_the_loaders_fast_record_json_is_the_models_own(name: str, timezone: str, context: dict[str, str]) -> None:
    fast = ContactRecord.dump_fields('c-1', 7, name, timezone, context)
    model = ContactRecord(contact_id='c-1', line=7, name=name or None, timezone=timezone or None, context=context)
    assert json.loads(fast) == json.loads(model.dump())
    assert ContactRecord.model_validate_json(fast) == model
