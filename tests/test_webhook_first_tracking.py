"""Webhook-first tracking: while webhooks arrive, live calls are polled only as a safety net, and a
call whose ``call.ended`` webhook is lost still ends, caught by that safety poll."""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING

import pytest

from simulator.testing import free_port, running_simulator
from tests.fleet_helpers import (
    FAST_ENV,
    FAST_SIMULATOR,
    creates_per_attempt,
    wait_for,
    write_campaign_file,
    write_contacts,
    write_trunks,
)
from workers.fleet import LocalFleet


def _all_billed(fleet: LocalFleet) -> list[dict[str, str]] | None:
    """Every attempt's export row once all of them have final billing (None before)."""
    export = fleet.cli('campaign', 'export', 'first', '--attempts', '--output', '-').stdout
    rows = list(csv.DictReader(io.StringIO(export)))
    return rows if rows and all(row['billing_final'] == 'True' for row in rows) else None


if TYPE_CHECKING:
    from pathlib import Path


pytestmark = pytest.mark.slow

SECRET = 'whsec-first-0123456789'


@pytest.mark.parametrize(
    'events',
    [['call.ended', 'call.billed'], ['call.ended'], ['call.billed']],
    ids=['delivered', 'billing by poll', 'ended lost'],
)
def test_calls_end_with_few_polls_while_webhooks_arrive_and_a_lost_webhook_is_caught(
    tmp_path: Path, redis_url: str, sync_redis: object, events: list[str]
) -> None:
    hook_port = free_port()
    # safety polls every 2 s; the calls last ~0.1-0.5 s: a call is polled again only if its webhook is lost
    env = {**FAST_ENV, 'DIALER_WEBHOOK_SECRETS': json.dumps([SECRET]), 'DIALER_POLL_SAFETY_INTERVAL': '2'}
    with running_simulator(**FAST_SIMULATOR, webhook_events=events) as sim:
        trunks = write_trunks(tmp_path / 'trunks.toml', 'sip.first.example', {'w': (20, 40.0)})
        fleet = LocalFleet(redis_url, sim.base_url, trunks, env, log_dir=tmp_path)
        hooks = fleet.start_webhooks(hook_port)
        try:
            sim.configure(webhook_url=f'http://127.0.0.1:{hook_port}/webhooks/ultravox', webhook_secret=[SECRET])
            write_contacts(tmp_path / 'c.csv', 120)
            fleet.cli(
                'campaign', 'load', str(tmp_path / 'c.csv'),
                '--campaign-file', str(write_campaign_file(tmp_path / 'c.toml', 'first', 'w', max_attempts=1)),
            )  # fmt: skip
            fleet.start_worker()
            final = fleet.wait_until_finished('first', timeout=240)
            rows = wait_for(lambda: _all_billed(fleet), timeout=60, what='final billing of every attempt')
        finally:
            fleet.stop_all()
            hooks.terminate()
            hooks.wait(timeout=30)
        records, stats = sim.records(), sim.stats()
    assert int(final['n:done']) == 120, 'every call ended, webhook or not'
    assert max(creates_per_attempt(records).values()) == 1
    polls = stats['requests'].get('get_call', 0)
    # Ultravox's own figures, not computed ones: without call.billed, the billing poll a safety interval
    # after the end finds them final (the README's registration is call.ended alone)
    assert {row['billing_source'] for row in rows} == {'ultravox'}
    if 'call.ended' in events:
        # the first calls are polled as usual until the first webhook arrives; after that, about one
        # poll per call (the one its webhook triggers) and one for its billing
        assert polls <= 3 * len(records), f'{polls} polls for {len(records)} calls'
