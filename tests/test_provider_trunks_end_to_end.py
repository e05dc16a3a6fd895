"""Provider trunks (Twilio, Telnyx, Plivo) through the CLI, two worker processes and the simulator over HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from simulator.testing import free_port, running_simulator
from tests.direct_providers import (
    DIRECT_PROVIDERS,
    SETUPS,
    answer_urls_served,
    provider_records,
    wait_for_answers,
)
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


@pytest.mark.parametrize('kind', DIRECT_PROVIDERS)
def test_direct_mode_places_one_phone_leg_per_attempt_and_polling_alone_reaches_every_outcome(
    tmp_path: Path, redis_url: str, sync_redis: object, kind: str
) -> None:
    provider = SETUPS[kind]
    write_contacts(tmp_path / 'contacts.csv', 20)
    hook_port = free_port()
    trunks = write_provider_trunk(
        tmp_path / 'trunks.toml', kind, 4, 20, mode='"direct"', **provider.trunk_fields,
        additional_params=provider.amd_params, **provider.hook_fields(hook_port),
    )  # fmt: skip
    simulator = {**FAST_SIMULATOR, 'provider_accounts': {kind: provider.account}, 'voicemail_rate': 0.5}
    # a provider that needs `dialer webhooks` for its answer URL loses every status callback: polling alone
    simulator['provider_callback_loss_rate'] = 1.0 if provider.webhooks else 0.0
    with running_simulator(**simulator) as sim:
        env = {**FAST_ENV, **provider.env(sim.base_url)}
        fleet = LocalFleet(redis_url, sim.base_url, trunks, env, log_dir=tmp_path)
        assert fleet.cli('trunks', 'check').returncode == 0, 'direct mode needs no telephony config'
        campaign = wait_for_answers(
            provider, write_campaign_file(tmp_path / 'campaign.toml', 'direct', f'{kind}-numbers')
        )
        fleet.cli('campaign', 'load', str(tmp_path / 'contacts.csv'), '--campaign-file', str(campaign))
        with answer_urls_served(fleet, provider, hook_port):
            fleet.start_worker()
            fleet.start_worker()
            try:
                fleet.wait_until_finished('direct', timeout=120)
            finally:
                fleet.stop_all()
        records, stats = sim.records(), sim.stats()
        legs = provider_records(sim, kind)

    fleet.cli('campaign', 'export', 'direct', '--output', str(tmp_path / 'results.csv'))
    rows = read_export(tmp_path / 'results.csv')
    assert len(rows) == 20
    assert max(creates_per_attempt(records).values()) == 1
    legs_per_attempt = creates_per_attempt([{'metadata': {'attempt_id': leg['attempt_id']}} for leg in legs])
    assert max(legs_per_attempt.values()) == 1, 'one phone leg per attempt'
    assert len(legs) == len(records)
    last_leg: dict[str, dict[str, Any]] = {}
    for leg in sorted(legs, key=lambda item: int(item['attempt_id'].rsplit(':', 1)[1])):
        last_leg[leg['to']] = leg
    for row in rows:
        leg = last_leg[row['phone']]
        assert row['final_outcome'] == provider.outcomes[leg['outcome']], (row, leg)
        assert row['provider_status'] == leg['final']
        assert row['amd_verdict'] == (leg['answered_by'] or '')
        assert row['provider_call_ids'].split(';')[-1] == leg['sid']
        if leg['outcome'] == 'voicemail':
            assert row['voicemail_left'] == 'False', 'a machine answered; the agent left no message'
        assert float(row['sip_billed_seconds']) == 0
        assert row['trunk_kind'] == kind
        assert not any(secret in str(row) for secret in provider.secrets)
    assert any(leg['outcome'] == 'voicemail' for leg in legs), 'the AMD path was exercised'
    assert stats['faults'].get(f'{kind}_answer_failed', 0) == 0, 'every answered leg got its stream'
    assert_within_limits(stats, {kind: (4, 20)})
