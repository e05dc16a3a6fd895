"""Plivo, direct mode: the Call API (client below) and V3-signed callbacks.

Signatures (Plivo "Validating requests" / the Python SDK's ``plivo/utils/signature_v3.py``,
``validate_v3_signature``): every request Plivo makes to an answer, hangup or ring URL carries
``X-Plivo-Signature-V3`` (base64 HMAC-SHA256 keyed with the auth token; several comma-separated
signatures while a token rotates) and ``X-Plivo-Signature-V3-Nonce``. For a POST the signed text is
``{base}.{nonce}`` where ``base`` is the URL's scheme, host and path, then ``?`` and the URL's query
parameters as ``k=v`` sorted and joined by ``&`` (decoded), then ``.`` when both query and POST
parameters exist, then every POST parameter as ``kv`` sorted by name (a repeated name's values
sorted). No timestamp is signed: a replayed callback only makes the trackers poll a leg once more.

The Call API (Plivo "Make a call", "Retrieve a call", "Retrieve a live call", "Retrieve a queued
call", "List all calls", "Hang up a call", "Cancel a call request"; the Python SDK's
``plivo/resources/calls.py``), all under ``/v1/Account/{auth_id}/`` with HTTP Basic auth
``auth_id:auth_token``:
- ``POST Call/`` (JSON: ``from``, ``to``, ``answer_url``, ``answer_method``, ``hangup_url``,
  ``hangup_method``, ``ring_url``, ``ring_method`` plus the trunk's documented ``additional_params``
  such as ``ring_timeout``, ``time_limit``, ``machine_detection``) answers 201 with
  ``{"message": "call fired" | "call queued", "request_uuid": …}``. Plivo takes no inline XML: when
  the callee answers it fetches ``answer_url`` (served by ``workers/plivo_answer.py``), whose
  ``<Stream bidirectional="true" keepCallAlive="true">{joinUrl}</Stream>`` streams the call to Ultravox.
- The leg is known by its ``request_uuid``. We rely on Plivo giving a single-destination API call a
  ``call_uuid`` equal to its ``request_uuid`` (the SDK's live-call fixture shows both equal; the
  hangup callback carries both as ``RequestUUID`` / ``CallUUID``): ``GET Call/{id}/?status=live``
  (``call_status`` ringing / in-progress) while it runs, ``GET Call/{id}/?status=queued`` while Plivo
  holds it in its dial queue, and the CDR ``GET Call/{id}/`` once it is over (``answer_time``,
  ``bill_duration``, ``total_amount``, ``hangup_cause_name``, ``hangup_cause_code``,
  ``hangup_source``). A call in none of them yet (between hang-up and CDR) is polled again.
- Outcome of an ended call: answered when the CDR has an ``answer_time`` (an answering machine hung
  up by ``machine_detection = "hangup"``, cause "Machine Detected", is an answered call whose AMD
  verdict is ``machine``); otherwise by hang-up cause (Plivo "Hangup causes": 1000 Canceled, 2000
  Invalid Destination Address, 2010 Destination Out Of Service, 3000-range call-recipient causes such
  as Busy Line, Rejected, No Answer, 4000 Normal Hangup), see ``classify``. The CDR carries no SIP
  response code, so ``sip_code`` stays empty; the raw cause name is the leg's ``status``.
- After a crash between the two creates (no idempotency key on Make a call): ``find`` lists live
  calls (``GET Call/?status=live&from_number=&to_number=``), queued requests (``GET
  Call/?status=queued``, each read for its ``to``/``from``) and CDRs (``GET
  Call/?from_number=&to_number=&end_time__gte=``; ``initiation_time`` at or after the ledger's
  "placing" record). Limits: live and queued calls carry no creation time we trust (the console's
  time zone), so any live call from the trunk's number to the contact that is not an earlier
  attempt's leg is taken as this attempt's; a second campaign dialling the same number from the same
  caller id at the same moment could be mistaken for it.
- ``DELETE Call/{id}/`` hangs a call up (or cancels it while it rings); a request still queued is
  cancelled with ``DELETE Request/{id}/``.
- 429 means over the account's API limits ("too many requests"); errors answer ``{"api_id", "error"}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit
from xml.sax.saxutils import escape

import httpx

from dialer.http import async_client
from dialer.models import Outcome
from dialer.providers import LegStatus, ProviderRejected, ProviderUnavailable, provider_request


if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from dialer.provider_trunks import ProviderTrunk
    from dialer.settings import Settings

SIGNATURE_HEADER = 'x-plivo-signature-v3'
NONCE_HEADER = 'x-plivo-signature-v3-nonce'


def _grouped(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped


def signed_text(url: str, params: Iterable[tuple[str, str]]) -> str:
    """What a V3 signature of a POST to ``url`` with form ``params`` covers (before ``.{nonce}``)."""
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, '', ''))
    query = _grouped(parse_qsl(parts.query, keep_blank_values=True))
    query_text = '&'.join(f'{key}={value}' for key in sorted(query) for value in sorted(query[key]))
    post = _grouped(params)
    if query_text or post:
        base += '?' + query_text
    if query_text and post:
        base += '.'
    return base + ''.join(f'{key}{value}' for key in sorted(post) for value in sorted(post[key]))


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]], nonce: str) -> str:
    """``X-Plivo-Signature-V3`` of a form POST to ``url`` (for the simulator and tests)."""
    text = f'{signed_text(url, params)}.{nonce}'
    return base64.b64encode(hmac.new(auth_token.encode(), text.encode(), hashlib.sha256).digest()).decode()


def verify_signature(auth_token: str, url: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether a form POST of ``body`` to ``url`` was signed with ``auth_token``."""
    given, nonce = headers.get(SIGNATURE_HEADER), headers.get(NONCE_HEADER)
    if not given or not nonce:
        return False
    params = parse_qsl(body.decode('utf-8', 'replace'), keep_blank_values=True)
    expected = signature(auth_token, url, params, nonce).encode()
    # compare every offered signature in constant time (no early exit on the first match)
    return sum(hmac.compare_digest(expected, item.strip().encode()) for item in given.split(',')) > 0


def verify(trunk: ProviderTrunk, url: str, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    """Whether a callback to ``url`` was signed by ``trunk``'s Plivo account (``now`` unused: V3 signs no time)."""
    del now
    token = trunk.secret('auth_token')
    return token is not None and verify_signature(token.get_secret_value(), url, headers, body)


# --- the Call API ---------------------------------------------------------------------------------

#: Path of the answer URL under the trunk's ``callback_url`` (``workers/plivo_answer.py``).
ANSWER_PATH = '/webhooks/plivo/answer'
#: Hang-up causes (normalised names, Plivo "Hangup causes") of calls that never reached anyone.
_CAUSES: dict[str, Outcome] = {
    'busy_line': Outcome.BUSY,
    'busy': Outcome.BUSY,
    'rejected': Outcome.REJECTED,
    'call_rejected': Outcome.REJECTED,
    'no_answer': Outcome.NO_ANSWER,
    'ring_timeout_reached': Outcome.NO_ANSWER,
    'canceled': Outcome.NO_ANSWER,
    'cancelled': Outcome.NO_ANSWER,
    'call_recipient_unavailable': Outcome.NO_ANSWER,
    'invalid_destination_address': Outcome.INVALID_NUMBER,
    'destination_out_of_service': Outcome.INVALID_NUMBER,
}
#: The same by code, for a CDR or callback that gives only the code.
_CODES: dict[int, Outcome] = {
    1000: Outcome.NO_ANSWER,
    2000: Outcome.INVALID_NUMBER,
    2010: Outcome.INVALID_NUMBER,
    3000: Outcome.BUSY,
    3010: Outcome.REJECTED,
    3020: Outcome.NO_ANSWER,
}
MACHINE_CAUSE = 'machine_detected'


def cause_key(name: str | None) -> str:
    """``"Busy Line"`` / ``"busy_line"`` -> ``busy_line``."""
    return '_'.join((name or '').lower().replace('_', ' ').split())


def classify(cause_name: str | None, cause_code: Any = None, *, answered: bool) -> Outcome:
    """Our outcome for an ended Plivo call: answered if it was, else by its hang-up cause (else FAILED)."""
    if answered or cause_key(cause_name) == MACHINE_CAUSE:
        return Outcome.ANSWERED
    by_name = _CAUSES.get(cause_key(cause_name))
    if by_name is not None:
        return by_name
    try:
        return _CODES.get(int(cause_code), Outcome.FAILED)
    except (TypeError, ValueError):
        return Outcome.FAILED


def stream_xml(join_url: str) -> str:
    """The answer URL's XML: stream the call both ways to the Ultravox call (8 kHz mu-law, Plivo's phone audio)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Stream bidirectional="true" keepCallAlive="true" '
        f'contentType="audio/x-mulaw;rate=8000">{escape(join_url)}</Stream></Response>'
    )


def hangup_xml() -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Hangup/></Response>'


def answer_url(status_callback_url: str) -> str:
    """``<callback_url>/webhooks/plivo/answer?a=&c=`` from the leg's ``<callback_url>/webhooks/plivo?a=&c=``."""
    parts = urlsplit(status_callback_url)
    path = parts.path.removesuffix('/webhooks/plivo') + ANSWER_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ''))


def _digits(number: Any) -> str:
    return ''.join(ch for ch in str(number or '') if ch.isdigit())


def _time_ms(value: Any) -> int | None:
    """A CDR time (``2017-05-22 17:49:30+05:30``); a time without offset is read as UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000)


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, '') else None
    except (TypeError, ValueError):
        return None


def cdr_status(leg_id: str, cdr: Mapping[str, Any]) -> LegStatus:
    """An ended call, from its CDR."""
    name = str(cdr.get('hangup_cause_name') or '')
    answered = bool(cdr.get('answer_time'))
    machine = cause_key(name) == MACHINE_CAUSE
    amount = cdr.get('total_amount')
    return LegStatus(
        leg_id=leg_id,
        status=name or ('completed' if answered else 'ended'),
        final=True,
        outcome=classify(name, cdr.get('hangup_cause_code'), answered=answered),
        amd='machine' if machine else None,
        duration=_float(cdr.get('bill_duration')),
        price=str(amount) if amount not in (None, '') else None,
        price_unit='USD' if amount not in (None, '') else None,
        created_ms=_time_ms(cdr.get('initiation_time')),
    )


class PlivoClient:
    kind = 'plivo'

    def __init__(self, trunk: ProviderTrunk, settings: Settings) -> None:
        self.trunk = trunk
        auth_id = str(getattr(trunk, 'auth_id', ''))
        token = trunk.required_secret('auth_token').get_secret_value()
        self._secrets = [token]
        self._path = f'/v1/Account/{auth_id}'
        self._client = async_client(
            base_url=settings.plivo_base_url,
            connect_timeout=settings.ultravox_connect_timeout,
            read_timeout=settings.ultravox_read_timeout,
            auth=httpx.BasicAuth(auth_id, token),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, *, missing_ok: bool = False, **kwargs: Any) -> Any:
        """The JSON answer (``{}`` for 204; None for 404 with ``missing_ok``); errors per the package table."""
        return await provider_request(
            self._client, method, self._path + path, self._secrets, missing_ok=missing_ok, **kwargs
        )

    async def place(self, *, to: str, caller_id: str, join_url: str, callback_url: str | None) -> LegStatus:
        del join_url  # Plivo fetches the XML that carries it from the answer URL (workers/plivo_answer.py)
        if not callback_url:
            raise ProviderRejected(0, "a Plivo call needs an answer URL: set the trunk's callback_url")
        body: dict[str, Any] = {
            'from': _digits(caller_id),
            'to': _digits(to),
            'answer_url': answer_url(callback_url),
            'answer_method': 'POST',
            'hangup_url': callback_url,
            'hangup_method': 'POST',
            'ring_url': callback_url,
            'ring_method': 'POST',
            **self.trunk.additional_params,
        }
        answer = await self._request('POST', '/Call/', json=body)
        request_uuid = answer.get('request_uuid') if isinstance(answer, dict) else None
        if not isinstance(request_uuid, str) or not request_uuid:
            raise ProviderUnavailable('an answer without request_uuid', maybe_placed=True)
        return LegStatus(leg_id=request_uuid, status='queued', final=False)

    async def fetch(self, leg_id: str) -> LegStatus:
        live = await self._request('GET', f'/Call/{leg_id}/', params={'status': 'live'}, missing_ok=True)
        if isinstance(live, dict):
            return LegStatus(leg_id=leg_id, status=str(live.get('call_status') or 'live'), final=False)
        cdr = await self._request('GET', f'/Call/{leg_id}/', missing_ok=True)
        if isinstance(cdr, dict):
            return cdr_status(leg_id, cdr)
        queued = await self._request('GET', f'/Call/{leg_id}/', params={'status': 'queued'}, missing_ok=True)
        # none of the three yet: hung up a moment ago, its CDR not written yet
        return LegStatus(leg_id=leg_id, status='queued' if isinstance(queued, dict) else 'pending', final=False)

    async def find(self, *, to: str, caller_id: str, since_ms: int) -> list[LegStatus]:
        numbers = {'from_number': _digits(caller_id), 'to_number': _digits(to)}
        found: list[LegStatus] = []
        live = await self._request('GET', '/Call/', params={'status': 'live', **numbers})
        found += [
            LegStatus(leg_id=str(uuid), status='live', final=False) for uuid in _ids(live) if isinstance(uuid, str)
        ]
        queued = await self._request('GET', '/Call/', params={'status': 'queued'})
        for uuid in _ids(queued)[:20]:
            call = await self._request('GET', f'/Call/{uuid}/', params={'status': 'queued'}, missing_ok=True)
            if isinstance(call, dict) and (_digits(call.get('to')), _digits(call.get('from'))) == (
                numbers['to_number'],
                numbers['from_number'],
            ):
                found.append(LegStatus(leg_id=str(uuid), status='queued', final=False))
        # the CDR filter takes the console's local time: a day's margin, then the exact check below
        day = (datetime.fromtimestamp(since_ms / 1000, UTC) - timedelta(days=1)).strftime('%Y-%m-%d %H:%M')
        page = await self._request('GET', '/Call/', params={**numbers, 'end_time__gte': day, 'limit': 20})
        for cdr in page.get('objects') or [] if isinstance(page, dict) else []:
            if isinstance(cdr, dict) and cdr.get('call_uuid'):
                leg = cdr_status(str(cdr['call_uuid']), cdr)
                if leg.created_ms is not None and leg.created_ms >= since_ms - 1000:
                    found.append(leg)
        return list({leg.leg_id: leg for leg in found}.values())

    async def hang_up(self, leg_id: str) -> None:
        if await self._request('DELETE', f'/Call/{leg_id}/', missing_ok=True) is None:
            await self._request('DELETE', f'/Request/{leg_id}/', missing_ok=True)


def _ids(page: Any) -> list[Any]:
    calls = page.get('calls') if isinstance(page, dict) else None
    return list(calls) if isinstance(calls, list) else []
