"""Trunk and account limits hold across several worker processes, measured by the simulator."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from dialer import constants as k
from simulator.testing import running_simulator
from tests.fleet_helpers import FAST_ENV, assert_within_limits, write_campaign_file, write_contacts, write_trunks
from workers.fleet import LocalFleet


pytestmark = pytest.mark.slow

TRUNKS = {'small': (5, 2), 'wide': (20, 10)}
HOSTS = {'sip.limits.example:5060': TRUNKS['small'], 'sip.limits.example:5061': TRUNKS['wide']}
SIMULATOR = {
    'time_scale': 0.02,
    'ring_min': 2,
    'ring_max': 10,
    'talk_min': 40,
    'talk_max': 120,
    'answer_rate': 0.9,
    'billing_delay': 5,
    'seed': 3,
}


def test_no_limit_is_exceeded_and_a_killed_workers_slots_come_back(tmp_path: Path, redis_url: str, sync_redis) -> None:
    env = {**FAST_ENV, 'DIALER_ACCOUNT_MAX_CONCURRENT': '22', 'DIALER_ACCOUNT_CALLS_PER_SECOND': '11'}
    env['DIALER_DIAL_JOB_TIMEOUT'] = '10'
    with running_simulator(**SIMULATOR, max_concurrent_calls=22) as sim:
        fleet = LocalFleet(
            redis_url, sim.base_url, write_trunks(tmp_path / 'trunks.toml', 'sip.limits.example', TRUNKS), env
        )
        plans = [('small-a', 'small', 25, '212'), ('wide-a', 'wide', 60, '415'), ('wide-b', 'wide', 60, '312')]
        for name, trunk, contacts, prefix in plans:
            write_contacts(tmp_path / f'{name}.csv', contacts, prefix=prefix)
            fleet.cli(
                'campaign', 'load', str(tmp_path / f'{name}.csv'),
                '--campaign-file', str(write_campaign_file(tmp_path / f'{name}.toml', name, trunk)),
            )  # fmt: skip
        for _ in range(3):
            fleet.start_worker()
        # kill a worker while calls are in flight, and replace it
        deadline = time.monotonic() + 60
        while int(sync_redis.zcard(k.trunk_slots('wide'))) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        victim = random.Random(1).choice(fleet.workers)
        fleet.stop(victim, signal.SIGKILL)
        fleet.start_worker()
        try:
            for name, *_ in plans:
                fleet.wait_until_finished(name, timeout=240)
        finally:
            fleet.stop_all()
        stats = sim.stats()

    assert_within_limits(stats, HOSTS)
    assert stats['max_concurrent'] <= 22
    assert stats['max_creates_in_1s'] <= 11
    assert not stats['rejected'].get('limit_429'), 'the account limit was never hit at Ultravox'
    assert stats['duplicate_attempts'] == 0
    for trunk in TRUNKS:
        assert sync_redis.zcard(k.trunk_slots(trunk)) == 0, 'no slot leaked'
    assert sync_redis.zcard(k.ACCOUNT_SLOTS) == 0
