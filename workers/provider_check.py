"""``dialer trunks check`` for provider trunks: is the provider configured in the Ultravox account, and
where does the provider send call-backs to the trunk's number?

In ``ultravox`` mode Ultravox places the call with the credentials stored in the account's telephony
config (``GET /api/telephony_configs/<provider>``, 404 when absent), so a trunk of that kind cannot
dial until it exists. Direct mode needs no telephony config (the dialer places the phone leg).

Call-backs (``workers/provider_inbound.py``): the exact inbound webhook URL to paste into the
provider's console for the trunk's number (its ``callback_url`` + ``/inbound/<provider>``), and the
trunk field that verifies the provider's signatures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dialer.provider_trunks import ProviderTrunk
from dialer.ultravox import UltravoxClient, UltravoxError
from workers.provider_inbound import inbound_path, inbound_url


if TYPE_CHECKING:
    from collections.abc import Mapping

    from dialer.settings import Settings
    from dialer.trunks import Trunk

_CONSOLES = {
    'twilio': 'https://console.twilio.com (Account SID and Auth Token)',
    'telnyx': 'https://portal.telnyx.com (API key, public key and a TeXML application)',
    'plivo': 'https://console.plivo.com/dashboard/ (Auth ID and Auth Token)',
}


def fix_hint(provider: str) -> str:
    return (
        f'store your {provider} credentials in the Ultravox account: POST /api/telephony_configs/{provider} '
        f'(values from {_CONSOLES[provider]}), or use mode = "direct" on the trunk'
    )


async def check_provider_configs(settings: Settings, trunks: Mapping[str, Trunk]) -> list[str]:
    """One line per ultravox-mode provider trunk whose provider the account lacks (empty: all good)."""
    wanted = sorted({t.provider for t in trunks.values() if isinstance(t, ProviderTrunk) and t.mode == 'ultravox'})
    if not wanted:
        return []
    if not settings.ultravox_api_key.get_secret_value():
        return [f'cannot check the telephony configs of {", ".join(wanted)}: DIALER_ULTRAVOX_API_KEY is not set']
    problems = []
    async with UltravoxClient.from_settings(settings) as client:
        for provider in wanted:
            try:
                found = await client.telephony_config(provider)
            except UltravoxError as exc:
                problems.append(f'{provider}: cannot read /api/telephony_configs/{provider}: {exc}')
                continue
            users = ', '.join(n for n, t in trunks.items() if getattr(t, 'provider', None) == provider)
            if found is None:
                problems.append(
                    f'{provider} is not configured in the Ultravox account (trunks {users}): {fix_hint(provider)}'
                )
    return problems


#: provider -> (where the URL goes in its console, the trunk field that verifies its signatures)
_INBOUND_SETUP = {
    'twilio': ('the number\'s Voice Configuration, "A call comes in": Webhook, HTTP POST', 'auth_token'),
    'telnyx': ('the Voice URL (POST) of the TeXML application the number is assigned to', 'public_key'),
    'plivo': ('the Answer URL (POST) of the Plivo application the number is assigned to', 'auth_token'),
}


def _has(trunk: ProviderTrunk, field: str) -> bool:
    return any(getattr(trunk, name, None) for name in (field, f'{field}_env', f'{field}_file'))


def inbound_setup_lines(trunks: Mapping[str, Trunk]) -> list[str]:
    """For each provider trunk: the inbound webhook URL to paste into the provider's console (call-backs)."""
    lines = []
    for name, trunk in trunks.items():
        if not isinstance(trunk, ProviderTrunk):
            continue
        where, field = _INBOUND_SETUP[trunk.provider]
        url = inbound_url(trunk)
        if url is None:
            lines.append(
                f'  call-backs to {trunk.caller_id}: set callback_url = "https://<public host of dialer webhooks>" '
                f'on trunk {name} to get the URL to paste into {where} (path {inbound_path(trunk.provider)})'
            )
            continue
        lines.append(f'  call-backs to {trunk.caller_id}: paste {url} into {where}')
        if not _has(trunk, field):
            lines.append(
                f'  call-backs to {trunk.caller_id}: set {field} on trunk {name}: it verifies the {trunk.provider} '
                'signatures; without it every inbound call is refused (401)'
            )
    return lines
