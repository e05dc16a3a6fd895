"""A real Prometheus scraping two worker processes and the exporter during a campaign: the SIP seconds
it sums across the workers are the seconds the export bills, and the seconds the exporter reports."""

from __future__ import annotations

import subprocess
import time
from typing import TYPE_CHECKING

import pytest

from dialer import constants as k
from simulator.testing import free_port, running_simulator
from tests.fleet_helpers import FAST_ENV, FAST_SIMULATOR, read_export, write_campaign_file, write_contacts, write_trunks
from tests.prometheus_server import Prometheus
from workers.fleet import DIALER, LocalFleet


if TYPE_CHECKING:
    from pathlib import Path

    import redis as redis_sync


pytestmark = [pytest.mark.slow, pytest.mark.prometheus]

CONTACTS = 300
SCRAPE_INTERVAL = 1.0


def start_exporter(fleet: LocalFleet, port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    with (tmp_path / 'exporter.log').open('ab') as log:
        return subprocess.Popen(
            [*DIALER, 'exporter', '--host', '127.0.0.1', '--port', str(port)],
            env={**fleet.env, 'DIALER_METRICS_PORT': '0'},
            stdout=log,
            stderr=log,
        )


def test_prometheus_sums_the_billed_sip_seconds_of_two_workers_to_the_exported_total(
    tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis
) -> None:
    worker_ports, exporter_port = [free_port(), free_port()], free_port()
    write_contacts(tmp_path / 'contacts.csv', CONTACTS)
    with running_simulator(**FAST_SIMULATOR) as sim:
        fleet = LocalFleet(
            redis_url,
            sim.base_url,
            write_trunks(tmp_path / 'trunks.toml', 'sip.prom.example', {'prom': (30, 100.0)}),
            dict(FAST_ENV),
            log_dir=tmp_path,
        )
        prometheus = Prometheus(
            tmp_path, {'dialer-worker': worker_ports, 'dialer-exporter': [exporter_port]}, SCRAPE_INTERVAL
        )
        exporter = start_exporter(fleet, exporter_port, tmp_path)
        try:
            for port in worker_ports:
                fleet.start_worker(DIALER_METRICS_PORT=str(port))
            # every target answers before the campaign starts, so each worker's counters are seen
            up = prometheus.wait_for('up', lambda r: len(r) == 3 and all(s['value'][1] == '1' for s in r))
            assert {s['metric']['job'] for s in up} == {'dialer-worker', 'dialer-exporter'}

            fleet.cli(
                'campaign', 'load', str(tmp_path / 'contacts.csv'),
                '--campaign-file', str(write_campaign_file(tmp_path / 'c.toml', 'prom', 'prom')),
            )  # fmt: skip
            final = fleet.wait_until_finished('prom', timeout=120)
            # billing settles after the calls end: wait until no call or billing is followed any more
            deadline = time.monotonic() + 30
            while sync_redis.zcard(k.TRACKING):
                assert time.monotonic() < deadline, 'billing never settled'
                time.sleep(0.1)
            settled = time.time()
            # the workers are still alive: wait until every target was scraped after billing settled
            prometheus.wait_for(
                'min(timestamp(up))', lambda r: bool(r) and float(r[0]['value'][1]) > settled + SCRAPE_INTERVAL
            )
            prometheus_sip = prometheus.scalar('sum(dialer_sip_billed_seconds_total)')
            exporter_sip = prometheus.scalar('sum(dialer_campaign_sip_billed_seconds{campaign="prom"})')
            per_worker = prometheus.query('sum by (instance) (dialer_calls_created_total)')
            up = prometheus.query('up')
        finally:
            fleet.stop_all()
            fleet.stop(exporter)
            prometheus.stop()
        records = sim.records()

    assert int(final['n:done']) == CONTACTS
    assert len(up) == 3
    assert all(sample['value'][1] == '1' for sample in up), up
    assert len(per_worker) == 2, 'both workers created calls and were scraped'
    assert sum(float(s['value'][1]) for s in per_worker) == len(records)

    fleet.cli('campaign', 'export', 'prom', '--output', str(tmp_path / 'results.csv'))
    rows = read_export(tmp_path / 'results.csv')
    assert len(rows) == CONTACTS
    exported_sip = sum(float(row['sip_billed_seconds']) for row in rows)
    assert exported_sip > 0
    assert prometheus_sip == exported_sip
    assert exporter_sip == exported_sip
    assert exported_sip == sum(int(r['sip_billed_seconds']) for r in records), 'the simulator billed the same'
