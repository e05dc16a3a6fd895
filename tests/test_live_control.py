"""Pause, resume, cancel, do-not-call and live edits on a running campaign, through the CLI, with a
real fleet: nothing lost, nothing dialled twice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from simulator.testing import running_simulator
from tests.fleet_helpers import (
    FAST_ENV,
    creates_per_attempt,
    read_export,
    write_campaign_file,
    write_contacts,
    write_trunks,
)
from workers.fleet import LocalFleet


pytestmark = pytest.mark.slow

#: Calls of about a second, so a campaign of a few hundred contacts is still running while we steer it.
SIMULATOR = {'time_scale': 0.01, 'ring_min': 5, 'ring_max': 20, 'talk_min': 40, 'talk_max': 100, 'seed': 5}


def wait_for(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, 'condition never met'
        time.sleep(0.05)


@pytest.fixture
def fleet(tmp_path: Path, redis_url: str, sync_redis):
    with running_simulator(**SIMULATOR) as sim:
        trunks = write_trunks(tmp_path / 'trunks.toml', 'sip.ctl.example', {'ctl': (10, 20.0)})
        fleet = LocalFleet(redis_url, sim.base_url, trunks, dict(FAST_ENV), log_dir=tmp_path)
        fleet.sim = sim  # type: ignore[attr-defined]
        write_contacts(tmp_path / 'contacts.csv', 200)
        fleet.cli(
            'campaign', 'load', str(tmp_path / 'contacts.csv'),
            '--campaign-file', str(write_campaign_file(tmp_path / 'c.toml', 'ctl', 'ctl')),
        )  # fmt: skip
        yield fleet
        fleet.stop_all()


def creates(fleet: LocalFleet) -> int:
    return len(fleet.sim.records())  # type: ignore[attr-defined]


def test_pause_stops_new_dials_and_resume_finishes_every_contact_once_per_attempt(fleet, tmp_path) -> None:
    fleet.start_worker()
    fleet.start_worker()
    wait_for(lambda: creates(fleet) >= 20)
    assert 'is paused' in fleet.cli('campaign', 'pause', 'ctl').stdout
    time.sleep(2.0)  # "within a couple of seconds"
    at_pause = creates(fleet)
    time.sleep(3.0)
    assert creates(fleet) == at_pause, 'no new dial while paused'
    wait_for(lambda: int(fleet.campaign('ctl').get('n:in_call', 0)) == 0, timeout=30)  # calls in flight finish
    assert fleet.campaign('ctl')['state'] == 'paused'
    assert 'is active' in fleet.cli('campaign', 'resume', 'ctl').stdout
    final = fleet.wait_until_finished('ctl', timeout=180)
    records = fleet.sim.records()  # type: ignore[attr-defined]
    assert int(final['n:done']) == 200
    assert max(creates_per_attempt(records).values()) == 1
    fleet.cli('campaign', 'export', 'ctl', '--output', str(tmp_path / 'out.csv'))
    assert sum(int(r['attempts']) for r in read_export(tmp_path / 'out.csv')) == len(records)


def test_cancel_ends_every_undialled_contact_as_cancelled(fleet, tmp_path) -> None:
    fleet.start_worker()
    wait_for(lambda: creates(fleet) >= 10)
    fleet.cli('campaign', 'cancel', 'ctl')
    final = fleet.wait_until_finished('ctl', timeout=60)
    assert final['state'] == 'cancelled'
    assert int(final['n:done']) == 200, 'every contact ended, none is left pending'
    assert int(final['o:cancelled']) >= 100
    fleet.cli('campaign', 'export', 'ctl', '--output', str(tmp_path / 'out.csv'))
    rows = read_export(tmp_path / 'out.csv')
    cancelled = [r for r in rows if r['final_outcome'] == 'cancelled']
    dialled = {r['metadata']['contact_id'] for r in fleet.sim.records()}  # type: ignore[attr-defined]
    assert not {r['contact_id'] for r in cancelled if r['attempts'] == '0'} & dialled


def test_a_number_added_to_dnc_mid_campaign_is_never_called(fleet, tmp_path) -> None:
    late = '+12122000199'  # the last contact loaded: still queued when the fleet starts
    fleet.cli('campaign', 'update', 'ctl', '--max-attempts', '3')  # a live edit, applied within seconds
    fleet.start_worker()
    wait_for(lambda: creates(fleet) >= 5)
    fleet.cli('dnc', 'add', late)
    final = fleet.wait_until_finished('ctl', timeout=180)
    called = {r['to'].split('@')[0].removeprefix('sip:') for r in fleet.sim.records()}  # type: ignore[attr-defined]
    assert late not in called
    assert int(final['o:dnc']) == 1


def test_a_worker_stopped_with_sigterm_exits_cleanly_and_its_work_is_finished_by_the_fleet(fleet) -> None:
    leaving = fleet.start_worker()
    wait_for(lambda: creates(fleet) >= 20)
    fleet.start_worker()
    started = time.monotonic()
    fleet.stop(leaving)  # SIGTERM
    assert leaving.returncode == 0
    assert time.monotonic() - started < 15, 'finishes within the shutdown grace'
    final = fleet.wait_until_finished('ctl', timeout=180)
    assert int(final['n:done']) == 200
    assert max(creates_per_attempt(fleet.sim.records()).values()) == 1  # type: ignore[attr-defined]
