"""Workers SIGKILLed at random, Ultravox failing, Redis restarted: nothing lost, nothing dialled twice."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest

from dialer import constants as k
from simulator.testing import free_port, running_simulator
from tests.fleet_helpers import (
    FAST_ENV,
    FAST_SIMULATOR,
    assert_within_limits,
    creates_per_attempt,
    start_valkey,
    write_campaign_file,
    write_contacts,
    write_trunks,
)
from workers.fleet import LocalFleet


pytestmark = pytest.mark.slow

FAULTS = {'error_5xx_rate': 0.04, 'lost_response_rate': 0.03, 'drop_rate': 0.02, 'get_error_rate': 0.03}


def _kill_workers_until(fleet: LocalFleet, stop: threading.Event, every: float, kills: list[int]) -> None:
    rng = random.Random(5)
    while not stop.wait(every):
        alive = [p for p in fleet.workers if p.poll() is None]
        if alive:
            fleet.stop(rng.choice(alive), signal.SIGKILL)
            kills.append(1)
        fleet.start_worker()


@pytest.mark.timeout(600)
def test_random_worker_kills_and_provider_faults_neither_lose_nor_double_dial(
    tmp_path: Path, redis_url: str, sync_redis
) -> None:
    trunks = {'chaos': (40, 100.0)}
    env = {**FAST_ENV, 'DIALER_DIAL_JOB_TIMEOUT': '8', 'DIALER_ULTRAVOX_READ_TIMEOUT': '2'}
    env['DIALER_ACCOUNT_CALLS_PER_SECOND'] = '120'  # above the simulator's 50/s: Ultravox answers 429
    write_contacts(tmp_path / 'contacts.csv', 1000)
    with running_simulator(**FAST_SIMULATOR, **FAULTS, creates_per_second=50) as sim:
        fleet = LocalFleet(
            redis_url,
            sim.base_url,
            write_trunks(tmp_path / 'trunks.toml', 'sip.chaos.example', trunks),
            env,
            log_dir=tmp_path,
        )
        fleet.cli(
            'campaign', 'load', str(tmp_path / 'contacts.csv'),
            '--campaign-file', str(write_campaign_file(tmp_path / 'c.toml', 'chaos', 'chaos', max_attempts=3)),
        )  # fmt: skip
        for _ in range(4):
            fleet.start_worker()
        stop, kills = threading.Event(), []
        killer = threading.Thread(target=_kill_workers_until, args=(fleet, stop, 3.0, kills))
        killer.start()
        try:
            final = fleet.wait_until_finished('chaos', timeout=400)
        finally:
            stop.set()
            killer.join()
            fleet.stop_all()
        records, stats = sim.records(), sim.stats()

    assert len(kills) >= 3
    assert max(creates_per_attempt(records).values()) == 1, 'one create per attempt'
    assert stats['duplicate_attempts'] == 0
    assert int(final['n:done']) == 1000, 'every contact reached a terminal outcome'
    assert stats['rejected'].get('limit_429', 0) > 0, 'the 429 path was exercised'
    assert_within_limits(stats, {'sip.chaos.example:5060': trunks['chaos']})
    assert sync_redis.zcard(k.trunk_slots('chaos')) == 0


def test_a_redis_restart_mid_campaign_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    server = start_valkey(port, tmp_path)
    url = f'redis://127.0.0.1:{port}/0'
    write_contacts(tmp_path / 'contacts.csv', 300)
    try:
        with running_simulator(**FAST_SIMULATOR) as sim:
            fleet = LocalFleet(
                url,
                sim.base_url,
                write_trunks(tmp_path / 'trunks.toml', 'sip.r.example', {'r': (20, 30.0)}),
                dict(FAST_ENV),
                log_dir=tmp_path,
            )
            fleet.cli(
                'campaign', 'load', str(tmp_path / 'contacts.csv'),
                '--campaign-file', str(write_campaign_file(tmp_path / 'c.toml', 'restart', 'r')),
            )  # fmt: skip
            fleet.start_worker()
            fleet.start_worker()
            while int(fleet.campaign('restart').get('calls', 0)) < 60:
                time.sleep(0.05)
            server.send_signal(signal.SIGTERM)  # a clean restart: Valkey persists on shutdown
            server.wait(timeout=30)
            time.sleep(1.0)
            server = start_valkey(port, tmp_path)
            try:
                final = fleet.wait_until_finished('restart', timeout=240)
            finally:
                fleet.stop_all()
            records, stats = sim.records(), sim.stats()
    finally:
        server.terminate()
        server.wait()
    assert int(final['n:done']) == 300
    assert stats['duplicate_attempts'] == 0
    assert max(creates_per_attempt(records).values()) == 1
