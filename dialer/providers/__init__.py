"""Provider REST clients for direct-mode trunks, behind one small interface.

A client places the phone leg of an attempt (streaming to the Ultravox call's ``joinUrl``), reads
that leg's status, looks legs up after a crash between the two creates, verifies the provider's
signed status callbacks, and maps the provider's status onto our ``Outcome``.

| failure                                   | exception               | leg placed? |
|-------------------------------------------|-------------------------|-------------|
| 429 / "too many calls"                    | ProviderRateLimited     | no          |
| other 4xx (bad number, bad credentials)   | ProviderRejected        | no          |
| 5xx, timeout, dropped connection          | ProviderUnavailable     | maybe       |
| connect error                             | ProviderUnavailable     | no          |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from dialer.ultravox import parse_retry_after, redact


if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from dialer.models import Outcome
    from dialer.provider_trunks import ProviderTrunk
    from dialer.settings import Settings


class ProviderError(Exception):
    """Any failure talking to a provider (messages never carry credentials or phone numbers)."""


class ProviderRateLimited(ProviderError):  # noqa: N818 - named after the condition
    def __init__(self, retry_after: float, reason: str) -> None:
        super().__init__(f'provider rate limit: {reason}')
        self.retry_after = retry_after


class ProviderRejected(ProviderError):  # noqa: N818 - the verdict reads better than "...Error"
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f'provider refused the call ({status}): {reason}')
        self.status = status
        self.reason = reason


class ProviderUnavailable(ProviderError):  # noqa: N818 - named after the condition
    def __init__(self, reason: str, *, maybe_placed: bool) -> None:
        super().__init__(f'provider request failed: {reason}')
        self.maybe_placed = maybe_placed


#: Raised before any byte of the request left: nothing can have been placed.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


async def provider_request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    secrets: Sequence[str],
    *,
    missing_ok: bool = False,
    rate_limited: Callable[[httpx.Response], bool] | None = None,
    retry_after: Callable[[httpx.Response], float] | None = None,
    **kwargs: Any,
) -> Any:
    """One request to a provider's REST API, its failure classified by the table above: the JSON answer
    (``{}`` for an empty one; None for a 404 when ``missing_ok``). ``rate_limited`` recognises a
    provider's "too many calls" answer that is not a 429; ``retry_after`` reads its wait (default: the
    ``Retry-After`` header). Refusals are redacted of ``secrets``."""
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.RequestError as exc:
        raise ProviderUnavailable(type(exc).__name__, maybe_placed=not isinstance(exc, _NOT_SENT)) from None
    status = response.status_code
    if status == httpx.codes.NOT_FOUND and missing_ok:
        return None
    if status == httpx.codes.TOO_MANY_REQUESTS or (400 <= status < 500 and rate_limited and rate_limited(response)):
        wait = retry_after(response) if retry_after else parse_retry_after(response.headers.get('Retry-After'))
        raise ProviderRateLimited(wait, f'HTTP {status}')
    if 400 <= status < 500:
        raise ProviderRejected(status, redact(response.text, secrets))
    if not response.is_success:
        raise ProviderUnavailable(f'HTTP {status}', maybe_placed=True)
    if status == httpx.codes.NO_CONTENT or not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        raise ProviderUnavailable('a body that is not JSON', maybe_placed=True) from None


@dataclass(frozen=True, slots=True)
class LegStatus:
    """One provider call as last read: raw status, whether it is over, and what it means for us."""

    leg_id: str
    status: str
    final: bool
    outcome: Outcome | None = None
    sip_code: str | None = None
    amd: str | None = None
    duration: float | None = None
    price: str | None = None
    price_unit: str | None = None
    created_ms: int | None = None


class PhoneProvider(Protocol):
    kind: str

    async def place(self, *, to: str, caller_id: str, join_url: str, callback_url: str | None) -> LegStatus: ...

    async def fetch(self, leg_id: str) -> LegStatus: ...

    async def find(self, *, to: str, caller_id: str, since_ms: int) -> list[LegStatus]: ...

    async def hang_up(self, leg_id: str) -> None: ...

    async def aclose(self) -> None: ...


def is_machine(amd: str | None) -> bool:
    """Whether an answering-machine verdict says a machine answered: Twilio's ``AnsweredBy``
    ``machine_start`` / ``machine_end_beep`` / ``machine_end_silence`` / ``machine_end_other``,
    Telnyx's ``machine``, Plivo's ``machine`` (a "Machine Detected" hang-up) (``human``, ``fax``,
    ``unknown``, ``not_sure`` are not)."""
    return amd is not None and amd.startswith('machine')


def verify_callback(trunk: ProviderTrunk, url: str, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    """Whether a status callback to ``url`` was signed by ``trunk``'s provider account."""
    from dialer.providers import plivo, telnyx, twilio  # noqa: PLC0415  one provider module per kind

    if trunk.provider == 'twilio':
        return twilio.verify(trunk, url, headers, body)
    if trunk.provider == 'telnyx':
        return telnyx.verify(trunk, url, headers, body, now)
    if trunk.provider == 'plivo':
        return plivo.verify(trunk, url, headers, body, now)
    del now
    return False


def provider_client(trunk: ProviderTrunk, settings: Settings) -> PhoneProvider:
    """The REST client of a direct-mode trunk (one per trunk and process; close with ``aclose``)."""
    from dialer.providers import plivo, telnyx, twilio  # noqa: PLC0415  one provider module per kind

    if trunk.provider == 'twilio':
        return twilio.TwilioClient(trunk, settings)
    if trunk.provider == 'telnyx':
        return telnyx.TelnyxClient(trunk, settings)
    if trunk.provider == 'plivo':
        return plivo.PlivoClient(trunk, settings)
    raise ProviderError(f'direct mode is not available for {trunk.provider} yet')
