"""The whole product: CSV in through the CLI, two worker processes, the simulator over HTTP, results out."""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING

import pytest

from simulator.testing import running_simulator
from tests.fleet_helpers import (
    FAST_ENV,
    FAST_SIMULATOR,
    creates_per_attempt,
    read_export,
    sip_seconds_by_contact,
    write_campaign_file,
    write_contacts,
    write_trunks,
)
from workers.fleet import LocalFleet


if TYPE_CHECKING:
    from pathlib import Path


pytestmark = pytest.mark.slow


def test_a_thousand_contacts_are_dialled_once_per_attempt_and_exported_call_for_call(
    tmp_path: Path, redis_url: str, sync_redis: object
) -> None:
    expected_rejects = write_contacts(tmp_path / 'contacts.csv', 1000, invalid=10, duplicates=10)
    with running_simulator(**FAST_SIMULATOR) as sim:
        fleet = LocalFleet(
            redis_url,
            sim.base_url,
            write_trunks(tmp_path / 'trunks.toml', 'sip.e2e.example', {'e2e': (60, 150)}),
            dict(FAST_ENV),
            log_dir=tmp_path,
        )
        loaded = fleet.cli(
            'campaign', 'load', str(tmp_path / 'contacts.csv'),
            '--campaign-file', str(write_campaign_file(tmp_path / 'campaign.toml', 'e2e', 'e2e')),
            '--rejects', str(tmp_path / 'rejects.csv'),
        )  # fmt: skip
        assert '1000 contacts enqueued' in loaded.stdout
        with (tmp_path / 'rejects.csv').open(encoding='utf-8') as handle:
            rejects = {row['contact_id']: row for row in csv.DictReader(handle)}
        assert {cid: int(row['line']) for cid, row in rejects.items()} == expected_rejects

        fleet.start_worker()
        fleet.start_worker()
        try:
            final = fleet.wait_until_finished('e2e', timeout=240)
        finally:
            fleet.stop_all()
        records = sim.records()
        stats = sim.stats()

    fleet.cli('campaign', 'export', 'e2e', '--output', str(tmp_path / 'results.csv'))
    rows = read_export(tmp_path / 'results.csv')
    assert len(rows) == 1000
    assert all(row['final_outcome'] for row in rows), 'every valid contact reached a terminal outcome'
    assert int(final['n:done']) == 1000

    # exactly one create per attempt, as the simulator saw it
    per_attempt = creates_per_attempt(records)
    assert max(per_attempt.values()) == 1
    assert stats['duplicate_attempts'] == 0
    assert sum(int(row['attempts']) for row in rows) == len(records)

    # the export matches the simulator call for call
    exported_calls = {cid for row in rows for cid in row['call_ids'].split(';') if cid}
    assert exported_calls == {r['callId'] for r in records}
    simulated_sip = sip_seconds_by_contact(records)
    for row in rows:
        assert int(float(row['sip_billed_seconds'])) == simulated_sip.get(row['contact_id'], 0)
