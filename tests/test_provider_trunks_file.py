"""Provider trunks in the trunks file: every mistake is refused with the file, the trunk and the field named."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import pytest

from dialer.providers.telnyx import public_key_of
from dialer.trunks import TrunkConfigError, load_trunks


if TYPE_CHECKING:
    from pathlib import Path

SID = 'AC' + '1' * 32
TELNYX_PUBLIC = public_key_of(base64.b64encode(bytes(range(32))).decode())  # a fixed key: stable test ids
DIRECT = {
    'twilio': f'account_sid = "{SID}"\nauth_token = "tw-token"\n',
    'telnyx': f'connection_id = "conn-1"\napi_key = "KEY-telnyx"\npublic_key = "{TELNYX_PUBLIC}"\n',
    # Plivo fetches each answered call's XML from `dialer webhooks`: direct mode needs its public URL
    'plivo': 'auth_id = "MAXXXXXXXXXXXXXXXXXX"\nauth_token = "pl-token"\ncallback_url = "https://hooks.example.com"\n',
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


@pytest.mark.parametrize('kind', sorted(DIRECT))
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


def test_a_plivo_direct_mode_trunk_without_its_answer_url_or_with_a_dialer_owned_param_names_the_field(
    tmp_path: Path,
) -> None:
    no_url = DIRECT['plivo'].replace('callback_url = "https://hooks.example.com"\n', '')
    message = refusal(tmp_path, f'kind = "plivo"\nmode = "direct"\n{no_url}')
    assert 'field callback_url: is required in direct mode for plivo' in message
    assert '/webhooks/plivo/answer' in message
    owned = 'additional_params = { hangup_method = "GET" }\n'
    message = refusal(tmp_path, f'kind = "plivo"\nmode = "direct"\n{DIRECT["plivo"]}{owned}')
    assert 'field additional_params.hangup_method: is set by the dialer in direct mode' in message
    # ultravox mode needs no answer URL: Ultravox answers the call
    assert load_trunks(trunks_file(tmp_path, 'kind = "plivo"\n'))['numbers'].mode == 'ultravox'


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


@pytest.mark.parametrize(
    ('kind', 'verifier'),
    [
        ('twilio', 'auth_token = "tw-token"'),
        ('telnyx', f'public_key = "{TELNYX_PUBLIC}"'),
        ('plivo', 'auth_token = "pl-token"'),
    ],
)
def test_the_credential_that_verifies_provider_webhooks_is_accepted_in_ultravox_mode(
    tmp_path: Path, kind: str, verifier: str
) -> None:
    # call-back webhooks of a number at the provider are verified even when Ultravox places the outbound calls
    trunk = load_trunks(trunks_file(tmp_path, f'kind = "{kind}"\n{verifier}\n'))['numbers']
    assert trunk.mode == 'ultravox'
    assert trunk.medium('+12125550123') == {kind: {'outgoing': {'to': '+12125550123', 'from': '+14155550100'}}}


def test_a_telnyx_public_key_that_is_not_an_ed25519_key_names_the_trunk_and_the_field(tmp_path: Path) -> None:
    for bad in ('not base64!', 'c2hvcnQ=', TELNYX_PUBLIC[:-4]):
        message = refusal(tmp_path, f'kind = "telnyx"\npublic_key = "{bad}"\n')
        assert "field public_key: must be the account's Ed25519 public key, base64" in message


def test_a_telnyx_direct_mode_ring_timeout_below_dials_minimum_names_the_field(tmp_path: Path) -> None:
    body = f'kind = "telnyx"\nmode = "direct"\n{DIRECT["telnyx"]}additional_params = {{ Timeout = 3 }}\n'
    assert 'field additional_params.Timeout: must be at least 5 in direct mode' in refusal(tmp_path, body)
    ok = body.replace('Timeout = 3', 'Timeout = 25')
    assert load_trunks(trunks_file(tmp_path, ok))['numbers'].additional_params == {'Timeout': 25}
