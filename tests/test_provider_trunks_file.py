"""Provider trunks in the trunks file: every mistake is refused with the file, the trunk and the field named."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from dialer.trunks import TrunkConfigError, load_trunks


if TYPE_CHECKING:
    from pathlib import Path

SID = 'AC' + '1' * 32
DIRECT = {
    'twilio': f'account_sid = "{SID}"\nauth_token = "tw-token"\n',
    'telnyx': 'connection_id = "conn-1"\napi_key = "KEY-telnyx"\n',
    'plivo': 'auth_id = "MAXXXXXXXXXXXXXXXXXX"\nauth_token = "pl-token"\n',
}


def trunks_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / 'trunks.toml'
    path.write_text(
        '[trunks.ok]\nhost = "sip.example.com"\nfrom = "+14155550100"\nmax_concurrent = 1\ncalls_per_second = 1\n\n'
        '[trunks.numbers]\nfrom = "+14155550100"\nmax_concurrent = 2\ncalls_per_second = 1\n' + body,
        encoding='utf-8',
    )
    return path


def refusal(tmp_path: Path, body: str) -> str:
    path = trunks_file(tmp_path, body)
    with pytest.raises(TrunkConfigError) as caught:
        load_trunks(path)
    message = str(caught.value)
    assert str(path) in message
    assert "trunk 'numbers'" in message
    return message


@pytest.mark.parametrize('kind', ['twilio'])
def test_a_complete_direct_mode_trunk_loads(tmp_path: Path, kind: str) -> None:
    trunk = load_trunks(trunks_file(tmp_path, f'kind = "{kind}"\nmode = "direct"\n{DIRECT[kind]}'))['numbers']
    assert trunk.kind == kind
    assert trunk.medium('+12125550123') == {kind: {}}
    assert 'token' not in repr(trunk).lower().replace('auth_token', '').replace('api_key', '')


@pytest.mark.parametrize('kind', sorted(DIRECT))
def test_every_missing_direct_mode_credential_names_the_trunk_and_the_field(tmp_path: Path, kind: str) -> None:
    lines = DIRECT[kind].splitlines()
    for dropped in lines:
        field = dropped.split(' = ')[0]
        kept = '\n'.join(line for line in lines if line != dropped)
        message = refusal(tmp_path, f'kind = "{kind}"\nmode = "direct"\n{kept}\n')
        assert f'field {field}: is required in direct mode' in message


@pytest.mark.parametrize('kind', ['telnyx', 'plivo'])
def test_direct_mode_of_a_provider_the_dialer_cannot_dial_yet_is_refused_at_load_not_at_the_first_call(
    tmp_path: Path, kind: str
) -> None:
    message = refusal(tmp_path, f'kind = "{kind}"\nmode = "direct"\n{DIRECT[kind]}')
    assert f'field mode: direct mode is not available for {kind} yet; use mode = "ultravox"' in message


def test_a_credential_given_from_an_unset_environment_variable_names_the_field(tmp_path: Path) -> None:
    body = f'kind = "twilio"\nmode = "direct"\naccount_sid = "{SID}"\nauth_token_env = "NO_SUCH_VARIABLE_12"\n'
    assert 'field auth_token_env: $NO_SUCH_VARIABLE_12 is not set' in refusal(tmp_path, body)


def test_an_unknown_mode_names_the_trunk_and_the_field(tmp_path: Path) -> None:
    message = refusal(tmp_path, 'kind = "twilio"\nmode = "carrier-pigeon"\n')
    assert 'field mode:' in message
    assert "'ultravox'" in message
    assert "'direct'" in message


def test_an_unknown_provider_names_the_trunk_and_the_field(tmp_path: Path) -> None:
    message = refusal(tmp_path, 'kind = "vonage"\n')
    assert "field kind: unknown trunk kind 'vonage'" in message
    assert 'twilio, telnyx, plivo' in message


@pytest.mark.parametrize('kind', sorted(DIRECT))
def test_credentials_in_ultravox_mode_are_refused_with_the_telephony_config_named(tmp_path: Path, kind: str) -> None:
    message = refusal(tmp_path, f'kind = "{kind}"\n{DIRECT[kind]}')
    assert f'/api/telephony_configs/{kind}' in message


def test_an_undocumented_or_out_of_range_additional_param_names_the_field(tmp_path: Path) -> None:
    unknown = refusal(tmp_path, 'kind = "twilio"\nadditional_params = { Tiemout = 25 }\n')
    assert 'field additional_params.Tiemout: is not a documented twilio parameter' in unknown
    out_of_range = refusal(tmp_path, 'kind = "twilio"\nadditional_params = { Timeout = 900 }\n')
    assert 'field additional_params.Timeout: must be a whole number from 1 to 600' in out_of_range
    owned_param = 'additional_params = { StatusCallback = "https://x.example" }\n'
    owned = refusal(tmp_path, f'kind = "twilio"\nmode = "direct"\n{DIRECT["twilio"]}{owned_param}')
    assert 'field additional_params.StatusCallback: is set by the dialer in direct mode' in owned
