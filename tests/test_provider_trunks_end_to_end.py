"""Provider trunks (Twilio, Telnyx, Plivo) through the CLI, two worker processes and the simulator over HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from simulator.testing import running_simulator
from tests.fleet_helpers import (
    FAST_ENV,
    FAST_SIMULATOR,
    assert_within_limits,
    creates_per_attempt,
    read_export,
    write_campaign_file,
    write_contacts,
)
from workers.fleet import LocalFleet


if TYPE_CHECKING:
    from pathlib import Path


pytestmark = pytest.mark.slow

PROVIDERS = ('twilio', 'telnyx', 'plivo')
#: What an Ultravox Call of a provider medium can tell (no SIP details): the simulator's played outcome -> ours.
ULTRAVOX_MODE_OUTCOME = {'answered': 'answered', 'connection_error': 'failed', 'system_error': 'failed'}


def write_provider_trunk(path: Path, kind: str, concurrent: int, cps: float, **fields: Any) -> Path:
    lines = [f'[trunks.{kind}-numbers]', f'kind = "{kind}"', 'from = "+14155550100"']
    lines += [f'max_concurrent = {concurrent}', f'calls_per_second = {cps}']
    lines += [f'{key} = {value}' for key, value in fields.items()]
    path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return path


def last_played(records: list[dict[str, Any]]) -> dict[str, str]:
    """contact id -> the outcome the simulator played on the contact's last attempt."""
    last: dict[str, tuple[int, str]] = {}
    for record in records:
        contact, attempt = record['metadata']['contact_id'], int(record['metadata']['attempt'])
        if attempt >= last.get(contact, (0, ''))[0]:
            last[contact] = (attempt, record['outcome'])
    return {contact: outcome for contact, (_, outcome) in last.items()}


@pytest.mark.parametrize('kind', PROVIDERS)
def test_ultravox_mode_provider_trunk_dials_every_contact_once_per_attempt_within_its_limits(
    tmp_path: Path, redis_url: str, sync_redis: object, kind: str
) -> None:
    write_contacts(tmp_path / 'contacts.csv', 30)
    trunks = write_provider_trunk(tmp_path / 'trunks.toml', kind, 4, 20, additional_params='{ }')
    with running_simulator(**FAST_SIMULATOR) as sim:
        fleet = LocalFleet(redis_url, sim.base_url, trunks, dict(FAST_ENV), log_dir=tmp_path)
        # the account has no telephony config for the provider yet: the check says so and how to fix it
        refused = fleet.cli('trunks', 'check', check=False)
        assert refused.returncode != 0
        assert f'/api/telephony_configs/{kind}' in refused.stderr
        assert 'mode = "direct"' in refused.stderr
        sim.configure(telephony_providers=[kind])
        assert fleet.cli('trunks', 'check').returncode == 0

        campaign = write_campaign_file(tmp_path / 'campaign.toml', 'prov', f'{kind}-numbers')
        fleet.cli('campaign', 'load', str(tmp_path / 'contacts.csv'), '--campaign-file', str(campaign))
        fleet.start_worker()
        fleet.start_worker()
        try:
            fleet.wait_until_finished('prov', timeout=120)
        finally:
            fleet.stop_all()
        records, stats = sim.records(), sim.stats()

    fleet.cli('campaign', 'export', 'prov', '--output', str(tmp_path / 'results.csv'))
    rows = read_export(tmp_path / 'results.csv')
    assert len(rows) == 30
    assert max(creates_per_attempt(records).values()) == 1
    assert sum(int(row['attempts']) for row in rows) == len(records)
    assert {r['medium'] for r in records} == {kind}
    played = last_played(records)
    for row in rows:
        assert row['final_outcome'] == ULTRAVOX_MODE_OUTCOME.get(played[row['contact_id']], 'no_answer'), row
        assert float(row['sip_billed_seconds']) == 0, 'a provider leg carries no Ultravox SIP minutes'
        assert row['trunk_kind'] == kind
    assert_within_limits(stats, {kind: (4, 20)})
