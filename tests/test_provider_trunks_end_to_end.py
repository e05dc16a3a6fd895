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


#: Direct mode, Twilio: the played outcome -> ours, as the polled Call resource tells it (its status
#: alone: a declined call reads "busy", an invalid number "failed").
TWILIO_DIRECT_OUTCOME = {
    'answered': 'answered',
    'no_answer': 'no_answer',
    'unavailable': 'no_answer',
    'busy': 'busy',
    'rejected': 'busy',
    'invalid_number': 'failed',
    'connection_error': 'failed',
    'system_error': 'failed',
    'voicemail': 'voicemail',  # answered by a machine, as Twilio's AMD (AnsweredBy) says
}
TWILIO_SID = 'AC' + '1' * 32


def test_direct_mode_twilio_places_one_phone_leg_per_attempt_and_polling_alone_reaches_every_outcome(
    tmp_path: Path, redis_url: str, sync_redis: object
) -> None:
    write_contacts(tmp_path / 'contacts.csv', 20)
    trunks = write_provider_trunk(
        tmp_path / 'trunks.toml', 'twilio', 4, 20, mode='"direct"', account_sid=f'"{TWILIO_SID}"',
        auth_token_env='"TWILIO_TOKEN"', additional_params='{ MachineDetection = "Enable" }',
    )  # fmt: skip
    account = {'twilio': {'account_sid': TWILIO_SID, 'auth_token': 'tw-s3cret-token'}}
    with running_simulator(**FAST_SIMULATOR, provider_accounts=account, voicemail_rate=0.5) as sim:
        env = {**FAST_ENV, 'TWILIO_TOKEN': 'tw-s3cret-token', 'DIALER_TWILIO_BASE_URL': sim.base_url}
        fleet = LocalFleet(redis_url, sim.base_url, trunks, env, log_dir=tmp_path)
        assert fleet.cli('trunks', 'check').returncode == 0, 'direct mode needs no telephony config'
        campaign = write_campaign_file(tmp_path / 'campaign.toml', 'direct', 'twilio-numbers')
        fleet.cli('campaign', 'load', str(tmp_path / 'contacts.csv'), '--campaign-file', str(campaign))
        fleet.start_worker()
        fleet.start_worker()
        try:
            fleet.wait_until_finished('direct', timeout=120)
        finally:
            fleet.stop_all()
        records = sim.records()
        legs = sim.client.get('/_sim/provider_calls/twilio').json()

    fleet.cli('campaign', 'export', 'direct', '--output', str(tmp_path / 'results.csv'))
    rows = read_export(tmp_path / 'results.csv')
    assert max(creates_per_attempt(records).values()) == 1
    legs_per_attempt = creates_per_attempt([{'metadata': {'attempt_id': leg['attempt_id']}} for leg in legs])
    assert max(legs_per_attempt.values()) == 1, 'one phone leg per attempt'
    assert len(legs) == len(records)
    last_leg: dict[str, dict[str, Any]] = {}
    for leg in legs:
        last_leg[leg['attempt_id'].rsplit(':', 2)[1]] = max(
            leg, last_leg.get(leg['attempt_id'].rsplit(':', 2)[1], leg), key=lambda item: item['attempt_id']
        )
    for row in rows:
        leg = last_leg[row['phone']]
        assert row['final_outcome'] == TWILIO_DIRECT_OUTCOME[leg['outcome']], (row, leg)
        assert row['provider_status'] == leg['final']
        assert row['amd_verdict'] == (leg['answered_by'] or '')
        if leg['outcome'] == 'voicemail':
            assert row['voicemail_left'] == 'False', 'a machine answered; the agent left no message'
        assert float(row['sip_billed_seconds']) == 0
        assert 'tw-s3cret-token' not in str(row)
    assert any(leg['outcome'] == 'voicemail' for leg in legs), 'the AMD path was exercised'
