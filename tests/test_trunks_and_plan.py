"""Trunk limits edited live, and the calling plan (a dry run) of a campaign."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from campaigns.loader import load_contacts
from campaigns.plan import plan_campaign
from dialer import constants as k
from dialer.models import CampaignConfig
from dialer.sip import sip_uri
from dialer.trunks import TrunkConfigError, TrunkRegistry, load_trunks


TRUNK = (
    '[trunks.a]\nhost = "sip.a.example:5061"\ntransport = "tls"\nfrom = "+14155550100"\n'
    'max_concurrent = {mc}\ncalls_per_second = 2\n'
)


def write(path: Path, text: str, mtime: float) -> None:
    path.write_text(text, encoding='utf-8')
    os.utime(path, (mtime, mtime))


def test_editing_a_trunks_limits_reaches_a_running_registry_and_a_broken_edit_keeps_the_last_good(
    tmp_path: Path,
) -> None:
    path = tmp_path / 'trunks.toml'
    write(path, TRUNK.format(mc=5), 1_000)
    registry = TrunkRegistry(path)
    assert registry.get('a').max_concurrent == 5
    write(path, TRUNK.format(mc=12), 2_000)
    assert registry.refresh()
    assert registry.get('a').max_concurrent == 12
    write(path, TRUNK.format(mc=-1), 3_000)
    with pytest.raises(TrunkConfigError, match="trunk 'a': field max_concurrent"):
        registry.refresh()
    assert registry.get('a').max_concurrent == 12


def test_the_password_can_come_from_the_environment_and_is_never_shown(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / 'trunks.toml'
    path.write_text(TRUNK.format(mc=1) + 'username = "u"\npassword_env = "TRUNK_A_PW"\n', encoding='utf-8')
    monkeypatch.setenv('TRUNK_A_PW', 'pw-from-env')
    trunk = load_trunks(path)['a']
    assert trunk.resolved_password().get_secret_value() == 'pw-from-env'
    assert 'pw-from-env' not in repr(trunk)
    assert trunk.medium('+15551234567', trunk.resolved_password())['sip']['outgoing'] == {
        'to': 'sip:+15551234567@sip.a.example:5061;transport=tls',
        'from': '+14155550100',
        'username': 'u',
        'password': 'pw-from-env',
    }


def test_udp_is_the_default_transport_and_gets_no_uri_parameter() -> None:
    assert sip_uri('+15551234567', '10.0.0.1:5060') == 'sip:+15551234567@10.0.0.1:5060'
    assert sip_uri('+15551234567', 'h.example', 'tcp') == 'sip:+15551234567@h.example;transport=tcp'


async def test_the_plan_groups_contacts_by_zone_and_says_when_each_group_opens(redis, tmp_path: Path) -> None:
    config = CampaignConfig(name='plan', trunk='a', agent_id='x', hours={'start': '09:00', 'end': '17:00'})
    csv = tmp_path / 'c.csv'
    csv.write_text(
        'phone,timezone\n+12125550101,America/New_York\n+12125550102,America/New_York\n+442079460958,Europe/London\n',
        encoding='utf-8',
    )
    # the plan counts due instants, which the load takes from the dialer's clock: set it first
    seconds, micros = await redis.time()
    late = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)  # 18:00 London, 13:00 New York
    await redis.set(k.CLOCK_OFFSET, int(late.timestamp() * 1000) - (seconds * 1000 + micros // 1000))
    await load_contacts(redis, config, csv, rejects_path=tmp_path / 'r.csv')
    _, plans = await plan_campaign(redis, 'plan')
    by_zone = {p.zones: p for p in plans}
    assert (by_zone[('America/New_York',)].callable_now, by_zone[('America/New_York',)].waiting) == (2, 0)
    london = by_zone[('Europe/London',)]  # closed until tomorrow 09:00
    assert (london.callable_now, london.waiting) == (0, 1)
    assert london.opens_at == datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    tomorrow = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
    _, plans = await plan_campaign(redis, 'plan', now=tomorrow)
    assert {p.zones: p.callable_now for p in plans} == {('America/New_York',): 2, ('Europe/London',): 1}
