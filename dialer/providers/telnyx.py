"""Telnyx, direct mode: Call Control v2 (``https://api.telnyx.com/v2``) and Ed25519-signed webhooks.

What this relies on (Telnyx's API reference, "Dial", "Retrieve a call status", "List call events",
"Hangup call", "Receiving webhooks", "Dials per second limit", "Rate limiting"; the ``telnyx`` Python
SDK's generated ``call_dial_params.py`` / ``call_hangup.py`` / ``call_event_list_response.py``):
- ``POST /v2/calls`` with ``Authorization: Bearer <API key>``, JSON ``connection_id`` (the Call Control
  application), ``to``, ``from``, ``stream_url`` + ``stream_track: both_tracks`` (the call streams to
  the Ultravox ``joinUrl``: seed "phone integration", Ultravox's ``CallMedium.telnyx``),
  ``webhook_url`` + ``webhook_url_method`` (this call's webhooks go to our receiver), ``client_state``
  (base64, echoed in every webhook of the call), ``answering_machine_detection`` (``detect`` /
  ``greeting_end``), ``timeout_secs`` (5-600), ``time_limit_secs``, ``record``. Answers with ``data``:
  ``call_control_id`` (the id every later request takes; our leg id), ``call_leg_id``, ``is_alive``.
- ``GET /v2/calls/{call_control_id}``: ``is_alive``, ``call_duration`` (s), ``start_time``,
  ``call_leg_id``; available until 10 minutes after the call ended. It carries no hangup cause.
- ``GET /v2/call_events?filter[leg_id]=…``: the call's events (``name`` such as ``call.answered``,
  ``call.hangup``, ``call.machine.detection.ended``; ``metadata`` "includes the raw event", read here
  wherever its ``payload`` sits). The final cause comes from there once ``is_alive`` is false:
  ``call.hangup``'s ``hangup_cause`` (``call_rejected``, ``normal_clearing``, ``originator_cancel``,
  ``timeout``, ``time_limit``, ``user_busy``, ``not_found``, ``no_answer``, ``unspecified``) and
  ``sip_hangup_cause`` (the SIP code), ``call.machine.detection.ended``'s ``result`` (``human``,
  ``machine``, ``not_sure``; premium: ``human_residence``, ``human_business``, ``silence``,
  ``fax_detected``).
- Lookup after a crash between the two creates: ``GET /v2/call_events`` filtered by ``to``, ``from``,
  ``name=call.initiated``, ``type=webhook`` and ``occurred_at[gte]`` (without a leg filter Telnyx keeps
  24 h, far more than ``DIALER_AMBIGUOUS_QUARANTINE``), each event's payload naming its
  ``call_control_id``. Dial's ``command_id`` is not used: Telnyx only ignores a repeated Dial with the
  same id (within 60 s) without telling which call the first one made, and our only second Dial of a
  leg follows a 429 that placed nothing, which the same id could wrongly swallow. So, like Twilio, a
  leg is recognised by To, From and a start at or after the ledger's "placing" record (``phone_leg``
  excludes the contact's earlier legs); two legs of one contact placed within the same second by two
  attempts cannot happen (an attempt waits for the previous one to end).
- ``POST /v2/calls/{call_control_id}/actions/hangup`` ends a call.
- Errors are ``{"errors": [{"code", "title", "detail"}]}``; 429 (``10011`` "Too many requests", ``90103``
  the dials-per-second limit, 30/s over a rolling 5 s by default) placed nothing. A call over the
  account's channel limit is placed and ends with SIP 403 (``D1``): ``failed``.

Webhook signatures (Telnyx "Receiving webhooks" / SDK ``webhooks.unwrap``; the Python SDK's
``lib/webhook_verification.py``): each delivery carries ``telnyx-signature-ed25519`` (base64 of a
64-byte Ed25519 signature) and ``telnyx-timestamp`` (Unix seconds) over ``f"{timestamp}|{raw body}"``,
verified with the account's public key (base64 of the raw 32-byte key; Mission Control, "Keys &
Credentials", "Public Key"); a timestamp more than 5 minutes off is refused (replays).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dialer.http import async_client
from dialer.models import Outcome
from dialer.providers import LegStatus, ProviderUnavailable, provider_request
from dialer.ultravox import parse_retry_after


if TYPE_CHECKING:
    from collections.abc import Mapping

    import httpx

    from dialer.provider_trunks import ProviderTrunk
    from dialer.settings import Settings

#: Seconds a webhook's ``telnyx-timestamp`` may be off from our clock (either way).
TIMESTAMP_TOLERANCE = 300
SIGNATURE_HEADER = 'telnyx-signature-ed25519'
TIMESTAMP_HEADER = 'telnyx-timestamp'
#: Query parameters of our callback URL that name the attempt and its Ultravox call.
_ID_PARAMS = ('a', 'c')


def public_key_of(private_key: str) -> str:
    """The base64 public key (as Telnyx shows it) of a base64 32-byte Ed25519 private key (seed)."""
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(private_key))
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def new_private_key() -> str:
    """A fresh base64 Ed25519 private key (the simulator's account key; tests)."""
    raw = Ed25519PrivateKey.generate().private_bytes_raw()
    return base64.b64encode(raw).decode()


def sign(private_key: str, timestamp: str, body: bytes) -> str:
    """``telnyx-signature-ed25519`` of a webhook ``body`` sent at ``timestamp`` (for the simulator and tests)."""
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(private_key))
    return base64.b64encode(key.sign(timestamp.encode() + b'|' + body)).decode()


def verify_signature(public_key: str, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    """Whether ``body`` was signed by the holder of ``public_key`` within ``TIMESTAMP_TOLERANCE`` of ``now``."""
    given, timestamp = headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER)
    if not given or not timestamp or not timestamp.isascii() or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > TIMESTAMP_TOLERANCE:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
        key.verify(base64.b64decode(given, validate=True), timestamp.encode() + b'|' + body)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def client_state(callback_url: str) -> str:
    """``client_state`` of a leg: base64 of its callback URL's query (our ``a=&c=`` ids). Telnyx echoes it
    in every webhook of the call, inside the signed body, which binds the unsigned URL to it."""
    return base64.b64encode(urlsplit(callback_url).query.encode()).decode()


def _ids(query: str) -> dict[str, list[str]]:
    return {key: values for key, values in parse_qs(query, keep_blank_values=True).items() if key in _ID_PARAMS}


def verify(trunk: ProviderTrunk, url: str, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    """Whether a webhook to ``url`` was signed by ``trunk``'s Telnyx account.

    Telnyx signs the body, not the URL: when the URL names our ids (``?a=&c=``), the signed body's
    ``data.payload.client_state`` must name the same ones, so a signed webhook replayed to another
    attempt's URL is refused. A URL without them (an inbound call's webhook) needs the signature alone.
    """
    public_key = getattr(trunk, 'public_key', None)
    if not isinstance(public_key, str) or not public_key:
        return False
    if not verify_signature(public_key, headers, body, now):
        return False
    wanted = _ids(urlsplit(url).query)
    if not wanted:
        return True
    try:
        event = json.loads(body)
        state = event['data']['payload']['client_state']
        given = _ids(base64.b64decode(state, validate=True).decode())
    except (ValueError, KeyError, TypeError, binascii.Error):
        return False
    return given == wanted


# --- Call Control: outcomes -------------------------------------------------------------------------

#: Telnyx error codes that mean "over the account's limits" (nothing placed), whatever the HTTP status.
RATE_LIMIT_CODES = frozenset({'10011', '90103'})
#: The trunk's documented ``MachineDetection`` values -> Dial's ``answering_machine_detection``.
AMD_MODES = {'Enable': 'detect', 'DetectMessageEnd': 'greeting_end', 'Disable': 'disabled'}
AMD_EVENTS = frozenset({'call.machine.detection.ended', 'call.machine.premium.detection.ended'})
_NO_ANSWER_CAUSES = frozenset({'timeout', 'no_answer', 'originator_cancel'})
_SIP_OUTCOMES = {
    '404': Outcome.INVALID_NUMBER,
    '484': Outcome.INVALID_NUMBER,
    '604': Outcome.INVALID_NUMBER,
    '486': Outcome.BUSY,
    '600': Outcome.BUSY,
    '603': Outcome.REJECTED,
    '408': Outcome.NO_ANSWER,
    '480': Outcome.NO_ANSWER,
    '487': Outcome.NO_ANSWER,
}
#: Seconds a call that is no longer alive may go without its ``call.hangup`` event in the call events
#: (they are written a moment after the call ends) before it is taken as ended with no cause.
EVENTS_GRACE = 30.0


def classify(cause: str | None, sip_code: str | None, *, answered: bool) -> Outcome:
    """Our outcome for an ended Telnyx call. Answered (``call.answered`` was sent, or the time limit cut
    an answered call) is ANSWERED whatever the cause; otherwise the ``hangup_cause``, and for
    ``unspecified`` / ``normal_clearing`` the SIP code, decide."""
    if answered or cause == 'time_limit':
        return Outcome.ANSWERED
    if cause == 'user_busy':
        return Outcome.REJECTED if sip_code == '603' else Outcome.BUSY
    if cause == 'call_rejected':
        return Outcome.REJECTED
    if cause == 'not_found':
        return Outcome.INVALID_NUMBER
    if cause in _NO_ANSWER_CAUSES:
        return Outcome.NO_ANSWER
    return _SIP_OUTCOMES.get(sip_code or '', Outcome.FAILED)


def event_payload(event: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook payload inside a call event's ``metadata`` ("includes the raw event": the event's
    ``payload`` at the top, under ``data`` or under ``event``; else the metadata itself)."""
    meta = event.get('metadata')
    for path in (('payload',), ('data', 'payload'), ('event', 'payload'), ('event', 'data', 'payload')):
        node: Any = meta
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            return node
    return meta if isinstance(meta, dict) else {}


def _ms(value: Any) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp() * 1000)
    except ValueError:
        return None


def leg_status(call: Mapping[str, Any], events: list[Mapping[str, Any]], now: float) -> LegStatus:
    """A leg from its call status and (once it is no longer alive) its call events."""
    leg_id = str(call.get('call_control_id') or '')
    duration = call.get('call_duration')
    common: dict[str, Any] = {
        'leg_id': leg_id,
        'duration': float(duration) if isinstance(duration, int | float) and not call.get('is_alive') else None,
        'created_ms': _ms(call.get('start_time')),
    }
    by_name: dict[str, dict[str, Any]] = {}
    for event in events:
        by_name.setdefault(str(event.get('name') or ''), event_payload(event))
    amd = next((by_name[name].get('result') for name in AMD_EVENTS if name in by_name), None)
    common['amd'] = str(amd) if amd else None
    if call.get('is_alive', True):
        return LegStatus(status='answered' if 'call.answered' in by_name else 'alive', final=False, **common)
    hangup = by_name.get('call.hangup')
    if hangup is None:
        ended_ms = _ms(call.get('end_time'))
        if ended_ms is None or now * 1000 - ended_ms < EVENTS_GRACE * 1000:
            return LegStatus(status='ending', final=False, **common)
        hangup = {}
    cause = str(hangup.get('hangup_cause') or '') or None
    sip = hangup.get('sip_hangup_cause')
    sip_code = str(sip) if sip not in (None, '') else None
    outcome = classify(cause, sip_code, answered='call.answered' in by_name)
    return LegStatus(status=cause or 'hangup', final=True, outcome=outcome, sip_code=sip_code, **common)


# --- Call Control: the client ------------------------------------------------------------------------


def dial_body(
    trunk: ProviderTrunk, *, to: str, caller_id: str, join_url: str, callback_url: str | None
) -> dict[str, Any]:
    """The JSON of ``POST /v2/calls`` for one leg (the trunk's documented params in Telnyx's names)."""
    body: dict[str, Any] = {
        'connection_id': str(getattr(trunk, 'connection_id', '')),
        'to': to,
        'from': caller_id,
        'stream_url': join_url,
        'stream_track': 'both_tracks',
    }
    if callback_url:
        body.update(webhook_url=callback_url, webhook_url_method='POST', client_state=client_state(callback_url))
    params = trunk.additional_params
    if 'MachineDetection' in params:
        body['answering_machine_detection'] = AMD_MODES[str(params['MachineDetection'])]
    if 'Timeout' in params:
        body['timeout_secs'] = int(params['Timeout'])
    if 'TimeLimit' in params:
        body['time_limit_secs'] = int(params['TimeLimit'])
    if params.get('Record'):
        body['record'] = 'record-from-answer'
    return body


def _error_codes(response: httpx.Response) -> set[str]:
    try:
        errors = response.json().get('errors')
    except (ValueError, AttributeError):
        return set()
    return {str(error.get('code')) for error in errors or [] if isinstance(error, dict)}


def _retry_after(response: httpx.Response) -> float:
    # Telnyx's API limits say when the window resets in x-ratelimit-reset (seconds)
    return parse_retry_after(response.headers.get('Retry-After') or response.headers.get('x-ratelimit-reset'))


class TelnyxClient:
    kind = 'telnyx'

    def __init__(self, trunk: ProviderTrunk, settings: Settings) -> None:
        self.trunk = trunk
        key = trunk.required_secret('api_key').get_secret_value()
        self._secrets = [key]
        self._client = async_client(
            base_url=settings.telnyx_base_url,
            connect_timeout=settings.ultravox_connect_timeout,
            read_timeout=settings.ultravox_read_timeout,
            headers={'Authorization': f'Bearer {key}', 'Accept': 'application/json'},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        return await provider_request(
            self._client,
            method,
            path,
            self._secrets,
            rate_limited=lambda response: bool(_error_codes(response) & RATE_LIMIT_CODES),
            retry_after=_retry_after,
            **kwargs,
        )

    async def place(self, *, to: str, caller_id: str, join_url: str, callback_url: str | None) -> LegStatus:
        body = dial_body(self.trunk, to=to, caller_id=caller_id, join_url=join_url, callback_url=callback_url)
        answer = await self._request('POST', '/v2/calls', json=body)
        data = answer.get('data') if isinstance(answer, dict) else None
        if not isinstance(data, dict) or not data.get('call_control_id'):
            # placed, but we cannot tell which call it is: the lookup finds it
            raise ProviderUnavailable('a Dial answer without call_control_id', maybe_placed=True)
        return LegStatus(
            leg_id=str(data['call_control_id']), status='initiated', final=False, created_ms=_ms(data.get('start_time'))
        )

    async def fetch(self, leg_id: str) -> LegStatus:
        answer = await self._request('GET', f'/v2/calls/{quote(leg_id, safe=":")}')
        call = answer.get('data') if isinstance(answer, dict) else None
        if not isinstance(call, dict):
            raise ProviderUnavailable('a call status without data', maybe_placed=True)
        events: list[Mapping[str, Any]] = []
        if not call.get('is_alive', True) and call.get('call_leg_id'):
            events = await self._events({'filter[leg_id]': str(call['call_leg_id'])})
        return leg_status(call, events, time.time())

    async def _events(self, filters: dict[str, str]) -> list[Mapping[str, Any]]:
        page = await self._request('GET', '/v2/call_events', params={**filters, 'page[size]': '250'})
        data = page.get('data') if isinstance(page, dict) else None
        return [event for event in data or [] if isinstance(event, dict)]

    async def find(self, *, to: str, caller_id: str, since_ms: int) -> list[LegStatus]:
        since = datetime.fromtimestamp((since_ms - 1000) / 1000, UTC).isoformat(timespec='milliseconds')
        filters = {
            'filter[to]': to,
            'filter[from]': caller_id,
            'filter[name]': 'call.initiated',
            'filter[type]': 'webhook',
            'filter[occurred_at][gte]': since.replace('+00:00', 'Z'),
        }
        found: dict[str, LegStatus] = {}
        for event in await self._events(filters):
            payload = event_payload(event)
            leg_id, created_ms = payload.get('call_control_id'), _ms(event.get('event_timestamp'))
            if isinstance(leg_id, str) and leg_id and created_ms is not None and created_ms >= since_ms - 1000:
                found.setdefault(
                    leg_id, LegStatus(leg_id=leg_id, status='initiated', final=False, created_ms=created_ms)
                )
        return list(found.values())

    async def hang_up(self, leg_id: str) -> None:
        await self._request('POST', f'/v2/calls/{quote(leg_id, safe=":")}/actions/hangup', json={})
