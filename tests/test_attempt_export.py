"""``dialer campaign export NAME --attempts``: one row per attempt, matching the simulator call for call,
as CSV, JSON lines and Parquet, with recording links for a campaign that records."""

from __future__ import annotations

import builtins
import csv
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from campaigns.attempt_export import ATTEMPT_COLUMNS, ParquetUnavailableError, export_attempts
from dialer import constants as k
from simulator.testing import running_simulator
from tests.fleet_helpers import FAST_ENV, FAST_SIMULATOR, write_campaign_file, write_contacts, write_trunks
from workers.fleet import LocalFleet


if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis


@pytest.mark.slow
def test_the_attempt_export_matches_the_simulator_call_for_call_in_every_format(
    tmp_path: Path, redis_url: str, sync_redis: Any
) -> None:
    write_contacts(tmp_path / 'contacts.csv', 12)
    campaign_file = write_campaign_file(tmp_path / 'campaign.toml', 'rows', 'rows', max_attempts=3)
    campaign_file.write_text('recording = true\n' + campaign_file.read_text(encoding='utf-8'), encoding='utf-8')
    with running_simulator(**{**FAST_SIMULATOR, 'answer_rate': 0.5, 'no_answer_rate': 0.5}) as sim:
        fleet = LocalFleet(
            redis_url,
            sim.base_url,
            write_trunks(tmp_path / 'trunks.toml', 'sip.rows.example', {'rows': (10, 50)}),
            dict(FAST_ENV),
            log_dir=tmp_path,
        )
        fleet.cli('campaign', 'load', str(tmp_path / 'contacts.csv'), '--campaign-file', str(campaign_file))
        fleet.start_worker()
        try:
            fleet.wait_until_finished('rows', timeout=120)
        finally:
            fleet.stop_all()
        records = {r['callId']: r for r in sim.records()}
        for fmt in ('csv', 'jsonl', 'parquet'):
            out = fleet.cli(
                'campaign', 'export', 'rows', '--attempts', '--format', fmt, '--output', str(tmp_path / f'a.{fmt}')
            )
            assert f'{len(records)} attempts written' in out.stdout
        with (tmp_path / 'a.csv').open(encoding='utf-8', newline='') as handle:
            rows = list(csv.DictReader(handle))
        recorded = [r for r in rows if r['recording_url']]
        assert recorded, 'answered calls of a recording campaign link their recording'
        download = httpx.get(recorded[0]['recording_url'], headers={'X-API-Key': 'local-fleet-key'})
        assert download.status_code == 200
        assert download.content.startswith(b'RIFF')

        # transcripts: every answered call, one file per call or one line per call; a re-run fetches nothing
        answered = {row['call_id'] for row in rows if row['joined_at']}
        # the account's read limit (2 message reads per second) is far below 8 fetches at once
        sim.configure(message_reads_per_second=2)
        for output in (tmp_path / 'transcripts', tmp_path / 'transcripts.jsonl'):
            first = fleet.cli('campaign', 'transcripts', 'rows', '--output', str(output))
            assert f'{len(answered)} transcripts fetched' in first.stdout
            assert ', 0 failed' in first.stdout
            fetches = sim.stats()['requests']['list_messages']
            again = fleet.cli('campaign', 'transcripts', 'rows', '--output', str(output))
            assert f'0 transcripts fetched, {len(answered)} already there' in again.stdout
            assert sim.stats()['requests']['list_messages'] == fetches, 'a re-run fetches nothing'
        assert sim.stats()['rejected']['messages_429'] > 0, 'the read limit refused some fetches'
        files = {p.stem: p for p in (tmp_path / 'transcripts').glob('*.jsonl')}
        assert set(files) == answered
        assert all(p.stat().st_mode & 0o077 == 0 for p in files.values()), 'transcripts are private files'
        lines = (tmp_path / 'transcripts.jsonl').read_text(encoding='utf-8').splitlines()
        assert {json.loads(line)['call_id'] for line in lines} == answered
        spoken = [json.loads(m).get('text') for p in files.values() for m in p.read_text(encoding='utf-8').splitlines()]
        assert any(spoken), 'the files hold what was said'
        in_redis = ' '.join(str(v) for key in sync_redis.keys('*') if sync_redis.type(key) == 'hash'
                            for v in sync_redis.hvals(key))  # fmt: skip
        assert not [text for text in spoken if text and len(text) > 20 and text in in_redis], 'never stored in Redis'

    assert list(rows[0]) == list(ATTEMPT_COLUMNS)
    assert sorted(row['call_id'] for row in rows) == sorted(records)
    for row in rows:
        record = records[row['call_id']]
        assert record['recordingEnabled']
        assert row['attempt_id'] == record['metadata']['attempt_id']
        assert int(row['attempt']) == int(record['metadata']['attempt'])
        assert row['contact_id'] == record['metadata']['contact_id']
        assert record['to'].startswith(f'sip:{row["phone"]}@')
        assert row['trunk'] == 'rows'
        assert row['caller_id'] == '+14155550100'
        assert bool(row['joined_at']) == (record['joined'] is not None) == (row['outcome'] in {'answered', 'voicemail'})
        assert bool(row['recording_url']) == (row['outcome'] in {'answered', 'voicemail'})
        assert row['sip_termination_reason'] == (record['terminationReason'] or '')
        assert row['end_reason'] == record['endReason']
        if row['billing_final'] == 'True':
            assert float(row['sip_billed_seconds']) == record['sip_billed_seconds']
    lines = [json.loads(line) for line in (tmp_path / 'a.jsonl').read_text(encoding='utf-8').splitlines()]
    assert sorted(line['call_id'] for line in lines) == sorted(records)

    import pyarrow.parquet as pq  # noqa: PLC0415  the parquet extra (installed with dev)

    table = pq.read_table(tmp_path / 'a.parquet')
    assert table.column_names == list(ATTEMPT_COLUMNS)
    assert sorted(table.column('call_id').to_pylist()) == sorted(records)
    assert str(table.schema.field('sip_billed_seconds').type) == 'double'


async def test_parquet_without_pyarrow_is_a_clear_error_and_writes_nothing(
    redis: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await redis.hset(k.campaign('spring'), 'config', json.dumps({'name': 'spring', 'trunk': 'a', 'agent_id': 'x'}))
    real_import = builtins.__import__

    def no_pyarrow(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith('pyarrow'):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_pyarrow)
    with pytest.raises(ParquetUnavailableError, match=r"pip install 'dialer\[parquet\]'"):
        await export_attempts(redis, 'spring', tmp_path / 'out.parquet', 'parquet')
    assert list(tmp_path.iterdir()) == []
