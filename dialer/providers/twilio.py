"""Twilio, direct mode: the Calls resource of the 2010-04-01 REST API.

What this relies on (Twilio's public docs, "Call resource" and "Webhooks security"):
- ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` (form body: ``To``, ``From``, ``Twiml``,
  ``StatusCallback``, ``StatusCallbackEvent`` repeated, ``StatusCallbackMethod``, plus the trunk's
  documented ``additional_params`` such as ``Timeout`` or ``MachineDetection``); HTTP Basic auth with
  the Account SID and Auth Token (or an API key SID and secret). Answers 201 with the Call.
- ``Twiml=<Response><Connect><Stream url="{joinUrl}"/></Connect></Response>`` streams the call to
  Ultravox (seed "phone integration", Ultravox's ``CallMedium.twilio``).
- ``GET .../Calls/{CallSid}.json``: ``status`` is queued, ringing, in-progress, completed, busy,
  failed, no-answer or canceled; ``duration`` (s), ``price`` (negative, string) and ``price_unit``,
  ``answered_by`` (AMD: human, machine_start, fax, unknown ...).
- ``GET .../Calls.json?To=&From=&StartTime>=YYYY-MM-DD``: list, for the lookup after a crash between
  the two creates (Twilio takes no idempotency key on Calls, so a leg is recognised by To, From and a
  creation time at or after the ledger's "placing" record).
- ``POST .../Calls/{CallSid}.json`` with ``Status=completed`` hangs a call up.
- Status callbacks are form posts signed with ``X-Twilio-Signature``: base64 HMAC-SHA1, keyed with
  the Auth Token, over the full callback URL followed by every POST parameter name and value, sorted
  by name. They carry ``CallSid``, ``CallStatus``, ``SipResponseCode``, ``AnsweredBy``.
- 429 (and error code 20429, "too many requests") means over the account's limits.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import quoteattr

import httpx

from dialer.http import async_client
from dialer.models import Outcome
from dialer.providers import LegStatus, provider_request


if TYPE_CHECKING:
    from collections.abc import Mapping

    from dialer.provider_trunks import ProviderTrunk
    from dialer.settings import Settings

FINAL = frozenset({'completed', 'busy', 'failed', 'no-answer', 'canceled'})


def classify(status: str, sip_code: str | None = None) -> Outcome | None:
    """Our outcome for a final Twilio status (None while the call is live). A declined call (603) that
    Twilio reports as busy is REJECTED; a failed call whose SIP code says the number does not exist
    (404, 484, 604) is INVALID_NUMBER."""
    if status not in FINAL:
        return None
    if status == 'completed':
        return Outcome.ANSWERED
    if status == 'busy':
        return Outcome.REJECTED if sip_code == '603' else Outcome.BUSY
    if status in {'no-answer', 'canceled'}:
        return Outcome.NO_ANSWER
    return Outcome.INVALID_NUMBER if sip_code in {'404', '484', '604'} else Outcome.FAILED


def twiml(join_url: str) -> str:
    return f'<Response><Connect><Stream url={quoteattr(join_url)}/></Connect></Response>'


def signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """``X-Twilio-Signature`` of a form post to ``url``."""
    data = url + ''.join(f'{key}{value}' for key, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify(trunk: ProviderTrunk, url: str, headers: Mapping[str, str], body: bytes) -> bool:
    given = headers.get('x-twilio-signature')
    token = trunk.secret('auth_token')
    if not given or token is None:
        return False
    params = parse_qsl(body.decode('utf-8', 'replace'), keep_blank_values=True)
    expected = signature(token.get_secret_value(), url, params)
    return hmac.compare_digest(expected, given)


def _created_ms(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp() * 1000)
    except (TypeError, ValueError):
        return None


def leg_status(call: Mapping[str, Any], sip_code: str | None = None) -> LegStatus:
    status = str(call.get('status') or '')
    duration = call.get('duration')
    return LegStatus(
        leg_id=str(call.get('sid') or ''),
        status=status,
        final=status in FINAL,
        outcome=classify(status, sip_code),
        sip_code=sip_code,
        amd=call.get('answered_by') or None,
        duration=float(duration) if duration not in (None, '') else None,
        price=str(call['price']) if call.get('price') not in (None, '') else None,
        price_unit=call.get('price_unit') or None,
        created_ms=_created_ms(call.get('date_created')),
    )


class TwilioClient:
    kind = 'twilio'

    def __init__(self, trunk: ProviderTrunk, settings: Settings) -> None:
        self.trunk = trunk
        sid = str(getattr(trunk, 'account_sid', ''))
        key_sid = getattr(trunk, 'api_key_sid', None)
        secret = trunk.secret('api_key_secret') if key_sid else trunk.required_secret('auth_token')
        user = key_sid or sid
        self._secrets = [secret.get_secret_value() if secret else '']
        self._path = f'/2010-04-01/Accounts/{sid}'
        self._client = async_client(
            base_url=settings.twilio_base_url,
            connect_timeout=settings.ultravox_connect_timeout,
            read_timeout=settings.ultravox_read_timeout,
            auth=httpx.BasicAuth(user, secret.get_secret_value() if secret else ''),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        return await provider_request(self._client, method, self._path + path, self._secrets, **kwargs)

    async def place(self, *, to: str, caller_id: str, join_url: str, callback_url: str | None) -> LegStatus:
        form: list[tuple[str, str]] = [('To', to), ('From', caller_id), ('Twiml', twiml(join_url))]
        if callback_url:
            form += [('StatusCallback', callback_url), ('StatusCallbackMethod', 'POST')]
            form += [('StatusCallbackEvent', event) for event in ('initiated', 'ringing', 'answered', 'completed')]
        form += [(key, _form_value(value)) for key, value in self.trunk.additional_params.items()]
        body: dict[str, Any] = {}
        for key, value in form:  # a repeated field (StatusCallbackEvent) is sent once per value
            body[key] = (
                [*body[key], value]
                if isinstance(body.get(key), list)
                else ([body[key], value] if key in body else value)
            )
        return leg_status(await self._request('POST', '/Calls.json', data=body))

    async def fetch(self, leg_id: str) -> LegStatus:
        return leg_status(await self._request('GET', f'/Calls/{leg_id}.json'))

    async def find(self, *, to: str, caller_id: str, since_ms: int) -> list[LegStatus]:
        day = datetime.fromtimestamp(since_ms / 1000, UTC).date().isoformat()
        page = await self._request('GET', '/Calls.json', params={'To': to, 'From': caller_id, 'StartTime>': day})
        calls = page.get('calls') if isinstance(page, dict) else None
        found = [leg_status(call) for call in calls or [] if isinstance(call, dict)]
        return [leg for leg in found if leg.created_ms is not None and leg.created_ms >= since_ms - 1000]

    async def hang_up(self, leg_id: str) -> None:
        await self._request('POST', f'/Calls/{leg_id}.json', data={'Status': 'completed'})


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return ' '.join(value) if isinstance(value, list) else str(value)
