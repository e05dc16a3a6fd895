"""``dialer trunks check`` for provider trunks: is the provider configured in the Ultravox account?

In ``ultravox`` mode Ultravox places the call with the credentials stored in the account's telephony
config (``GET /api/telephony_configs/<provider>``, 404 when absent), so a trunk of that kind cannot
dial until it exists. Direct mode needs no telephony config (the dialer places the phone leg).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dialer.provider_trunks import ProviderTrunk
from dialer.ultravox import UltravoxClient, UltravoxError


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
