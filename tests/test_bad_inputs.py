"""Every bad input in tests/bad_inputs is refused with a message naming the file, and changes nothing."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import redis.asyncio as aredis
from bad_inputs import BAD_INPUTS, CORPUS, REJECTED_ROWS, BadInput, RejectedRows, materialise

from campaigns.campaign_file import CampaignFileError, build_config, load_campaign_file
from campaigns.csvfile import CsvError
from campaigns.loader import load_contacts
from dialer.models import CampaignConfig
from dialer.trunks import TrunkConfigError, load_trunks


CONFIG = CampaignConfig(name='spring', trunk='carrier-a', agent_id='agent-1')


async def redis_snapshot(redis_url: str) -> list[tuple[bytes, bytes | None, int]]:
    """Every key with its serialized value and TTL: equal snapshots mean byte-for-byte equal data."""
    raw = aredis.Redis.from_url(redis_url)
    try:
        keys = sorted([key async for key in raw.scan_iter(count=1000)])
        return [(key, await raw.dump(key), await raw.pttl(key)) for key in keys]
    finally:
        await raw.aclose()


async def _seed(redis: aredis.Redis, tmp_path: Path) -> None:
    """A campaign that already holds contacts, so 'unchanged' means something."""
    good = tmp_path / 'good.csv'
    good.write_text('phone,name\n+14155552671,Ann\n+14155552672,Bob\n', encoding='utf-8')
    await load_contacts(redis, CONFIG, good, rejects_path=tmp_path / 'good-rejects.csv')


async def _attempt(case: BadInput, path: Path, redis: aredis.Redis, rejects: Path) -> None:
    if case.kind == 'csv':
        await load_contacts(redis, CONFIG, path, rejects_path=rejects)
    elif case.kind == 'campaign':
        build_config(load_campaign_file(path), {})
    else:
        load_trunks(path)


def test_the_corpus_has_enough_cases_and_every_file_exists() -> None:
    assert len(BAD_INPUTS) >= 25
    for case in BAD_INPUTS:
        if case.file not in {'missing.csv', 'nul_after_64k.csv', 'enormous_field.csv'}:
            assert (CORPUS / case.file).exists(), case.file
    for rows in REJECTED_ROWS:
        assert (CORPUS / rows.file).exists(), rows.file


@pytest.mark.parametrize('case', BAD_INPUTS, ids=lambda case: case.id)
async def test_bad_input_is_refused_naming_the_file_and_redis_is_unchanged(
    case: BadInput, redis: aredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    await _seed(redis, tmp_path)
    before = await redis_snapshot(redis_url)
    path = materialise(case, tmp_path)
    rejects = tmp_path / 'rejects.csv'

    with pytest.raises((CsvError, CampaignFileError, TrunkConfigError)) as raised:
        await _attempt(case, path, redis, rejects)

    message = str(raised.value)
    assert message.startswith(f'{path}: '), message
    assert case.expected in message, message
    if case.line is not None:
        assert f': line {case.line}: ' in message, message
    if case.field is not None:
        assert f'field {case.field}: ' in message, message
    assert await redis_snapshot(redis_url) == before
    assert not rejects.exists()


@pytest.mark.parametrize('case', REJECTED_ROWS, ids=lambda case: case.file.removesuffix('.csv'))
async def test_bad_rows_are_rejected_with_their_line_and_reason(
    case: RejectedRows, redis: aredis.Redis, tmp_path: Path
) -> None:
    rejects = tmp_path / 'rejects.csv'
    summary = await load_contacts(redis, CONFIG, CORPUS / case.file, rejects_path=rejects)

    with rejects.open(newline='', encoding='utf-8') as handle:
        rows = list(csv.reader(handle))
    with (CORPUS / case.file).open(newline='', encoding='utf-8', errors='replace') as handle:
        header = next(csv.reader(handle))
    assert rows[0] == ['line', 'reason', *header]
    assert [int(row[0]) for row in rows[1:]] == [line for line, _ in case.rejects]
    for row, (_, reason) in zip(rows[1:], case.rejects, strict=True):
        assert reason in row[1]
    assert summary.rejected == len(case.rejects)
    assert summary.accepted == case.accepted
    assert await redis.hlen('dialer:campaign:spring:contacts') == case.accepted
    cells = {cell for row in rows[1:] for cell in row}
    for cell in case.neutralised:
        assert cell in cells
    for cell in case.as_written:
        assert cell in cells


def test_a_retry_delay_given_on_the_command_line_keeps_the_files_delays_for_other_outcomes() -> None:
    from dialer.models import RetryPolicy  # noqa: PLC0415

    file_options = {
        'name': 'spring',
        'trunk': 't1',
        'agent_id': '6f9a1c3e-8a39-4bb6-9a55-0f3d5d8e2a10',
        'retry': {'delays': {**RetryPolicy().delays, 'no_answer': 7200, 'busy': 600, 'failed': 900}},
    }
    config = build_config(file_options, {'retry': {'delays': {'busy': 60}}}, source='spring.toml')
    assert config.retry.delays['busy'] == 60
    assert config.retry.delays['no_answer'] == 7200
    assert config.retry.delays['failed'] == 900
