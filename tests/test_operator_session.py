"""A scripted operator session through the real CLI: prepare paused, preview, inspect, start, add
contacts, change the hours, watch, export; every command exits 0 and every count agrees with the
simulator's record."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest

from simulator.testing import running_simulator
from tests.fleet_helpers import FAST_ENV, FAST_SIMULATOR, write_campaign_file, write_contacts, write_trunks
from workers.fleet import LocalFleet


if TYPE_CHECKING:
    from pathlib import Path


pytestmark = pytest.mark.slow


def closed_window_now() -> str:
    """A one-hour window, in New York time, that is closed right now (six hours away)."""
    hour = (datetime.now(ZoneInfo('America/New_York')).hour + 6) % 24
    return f'{hour:02d}:00-{hour + 1:02d}:00' if hour < 23 else '23:00-23:59'


def test_a_scripted_operator_session_runs_clean_and_every_count_agrees(
    tmp_path: Path, redis_url: str, sync_redis: object
) -> None:
    with running_simulator(**FAST_SIMULATOR) as sim:
        trunks = write_trunks(tmp_path / 'trunks.toml', 'sip.ops.example', {'ops': (20, 50.0)})
        fleet = LocalFleet(redis_url, sim.base_url, trunks, dict(FAST_ENV), log_dir=tmp_path)

        def ok(*args: str) -> str:
            done = fleet.cli(*args, check=False)
            assert done.returncode == 0, f'dialer {" ".join(args)}: {done.stderr}'
            return done.stdout

        def status() -> dict:
            return json.loads(ok('campaign', 'status', 'ops', '--json'))

        write_contacts(tmp_path / 'first.csv', 300, prefix='212')
        more = [f'+1646{2000000 + i:07d},Later {i},later{i},silver' for i in range(50)]
        (tmp_path / 'more.csv').write_text('phone,name,contact_id,plan\n' + '\n'.join(more) + '\n')
        campaign_file = write_campaign_file(tmp_path / 'ops.toml', 'ops', 'ops')
        ok('campaign', 'load', str(tmp_path / 'first.csv'), '--campaign-file', str(campaign_file), '--paused')
        assert status()['state'] == 'paused'
        assert status()['due_now'] == 300
        assert '300' in ok('campaign', 'plan', 'ops')
        shown = json.loads(ok('campaign', 'show', 'ops', '--json'))
        assert (shown['trunk'], shown['trunk_details']['max_concurrent']) == ('ops', 20)

        # hours changed while paused: every waiting contact moves to the new opening, and back
        ok('campaign', 'update', 'ops', '--hours', closed_window_now(), '--no-legal-bound')
        assert (status()['due_now'], status()['waiting']) == (0, 300), 'all rescheduled to the new opening'
        ok('campaign', 'update', 'ops', '--hours', '00:00-24:00')
        assert (status()['due_now'], status()['waiting']) == (300, 0), 'all due again'

        ok('campaign', 'resume', 'ops')
        fleet.start_worker()
        fleet.start_worker()
        try:
            ok('campaign', 'load', str(tmp_path / 'more.csv'), '--campaign', 'ops')
            final = fleet.wait_until_finished('ops', timeout=240)
        finally:
            fleet.stop_all()
        records = sim.records()

        end = status()
        exported = list(csv.DictReader(io.StringIO(ok('campaign', 'export', 'ops', '--output', '-'))))

    assert end['contacts'] == 350 == len(exported)
    assert int(final['n:done']) == 350
    assert end['calls_created'] == len(records), 'calls created = calls the simulator saw'
    assert end['attempts_ended'] == sum(int(row['attempts']) for row in exported)
    calls = {call for row in exported for call in row['call_ids'].split(';') if call}
    assert calls == {record['callId'] for record in records}
    answered = sum(1 for record in records if record['outcome'] == 'answered')
    assert end['attempt_outcomes']['answered'] == answered
    assert sum(end['outcomes'].values()) == 350
