"""The Ultravox HTTP client: one connection pool per process, and failures classified for the caller.

Creating a call is *not* retried here: a create whose response was lost may still have placed the
call, and only the caller (which can reconcile by metadata) may decide to send another. Reads
(``get_call``, ``find_calls``) are idempotent and retried a bounded number of times.

| failure                                        | exception                      | call created?  |
|------------------------------------------------|--------------------------------|----------------|
| 429, 503                                       | RateLimited(retry_after)       | no             |
| 401, 402, 403 (bad key, payment, disabled)     | AccountFault(status, code)     | no             |
| 404 on an agent's create                       | AgentNotFound                  | no             |
| 404 on a read                                  | CallNotFound                   | -              |
| any other 4xx                                  | RequestRejected(status, reason)| no             |
| 5xx, other unexpected status                   | TransientError                 | maybe          |
| ReadTimeout, RemoteProtocolError, ReadError... | TransientError                 | maybe          |
| ConnectError, ConnectTimeout, PoolTimeout      | TransientError                 | no             |

Nothing raised or logged here carries the API key, a trunk password or a phone number: Ultravox
error bodies are opaque text that might echo what we sent, so they are redacted before use.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib.util
import math
import random
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import structlog

from dialer.billing import format_duration
from dialer.http import async_client
from dialer.metrics import ULTRAVOX_RESPONSES
from dialer.prompts import fill_placeholders
from dialer.tools import tool_fields


if TYPE_CHECKING:
    from types import TracebackType

    from pydantic import SecretStr

    from dialer.models import CampaignConfig, ContactRecord
    from dialer.settings import Settings
    from dialer.tools import ToolEndpoint
    from dialer.trunks import Trunk


log = structlog.get_logger(__name__)

# httpcore runs ``import sniffio`` several times per request; anyio 4.x no longer installs sniffio,
# and each failed import walks sys.path again (8% of a worker's CPU). A None entry fails it at once,
# with the same outcome: httpcore assumes asyncio, which is what we run.
if importlib.util.find_spec('sniffio') is None:
    sys.modules.setdefault('sniffio', None)  # type: ignore[arg-type]

Endpoint = Literal['create', 'get', 'list', 'agent', 'delete', 'telephony_config', 'messages', 'sip']

REASON_LIMIT = 500
DEFAULT_RETRY_AFTER = 1.0
MAX_PAGES = 1000
_REDACTED = '[redacted]'
# Anything shaped like a phone number (a run of 7-15 digits, as E.164 is) is kept out of reasons and logs;
# dates and short codes stay readable.
_PHONE = re.compile(r'\+?\d{7,15}')
_PASSWORD_FIELD = re.compile(r'("?password"?\s*[:=]\s*)("[^"]*"|\S+)', re.IGNORECASE)


class UltravoxError(Exception):
    """Any failure talking to Ultravox."""


class RateLimited(UltravoxError):  # noqa: N818 - named after the condition, like the HTTP status
    """429 or 503: the request was refused before any call was created; try again after ``retry_after``."""

    def __init__(self, retry_after: float, status: int) -> None:
        super().__init__(f'Ultravox refused the request with HTTP {status}; retry after {retry_after:g}s')
        self.retry_after = retry_after
        self.status = status


class RequestRejected(UltravoxError):  # noqa: N818 - the verdict reads better than "...Error"
    """A 4xx other than 429: the request itself is wrong and no call was created."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f'Ultravox rejected the request with HTTP {status}: {reason}')
        self.status = status
        self.reason = reason


class CallNotFound(RequestRejected):
    """404 on a read: Ultravox does not know the call (or it was deleted)."""


#: Responses that say the whole account is unusable, by status: they hold the fleet, never a contact.
ACCOUNT_FAULT_CODES: dict[int, str] = {401: 'unauthorized', 402: 'payment_required', 403: 'forbidden'}


class AccountFault(UltravoxError):  # noqa: N818 - named after the condition, like RateLimited
    """401/402/403: the API key or the account is unusable. Nothing about one contact's request is wrong."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f'Ultravox refused the account with HTTP {status}: {reason}')
        self.status = status
        self.code = ACCOUNT_FAULT_CODES.get(status, 'account_unusable')
        self.reason = reason


class AgentNotFound(UltravoxError):  # noqa: N818 - the verdict reads better than "...Error"
    """404 on ``POST /api/agents/{id}/calls``: the campaign's agent does not exist (for this key)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f'Ultravox does not know the agent: {reason}')
        self.reason = reason


class TransientError(UltravoxError):
    """A failure that may pass. ``maybe_created`` says whether a create may have taken effect anyway."""

    def __init__(self, reason: str, maybe_created: bool) -> None:
        super().__init__(f'Ultravox request failed: {reason}')
        self.reason = reason
        self.maybe_created = maybe_created


@dataclass(frozen=True)
class CreateCallRequest:
    """Everything of one Create Call request. The body holds the trunk password: never in repr."""

    path: str
    params: dict[str, str]
    body: dict[str, Any] = field(repr=False)


def build_create_request(
    config: CampaignConfig,
    trunk: Trunk,
    password: SecretStr | None,
    number: str,
    contact: ContactRecord,
    *,
    attempt_id: str,
    attempt: int,
    tools: ToolEndpoint | None = None,
) -> CreateCallRequest:
    """The request that dials ``number`` through ``trunk`` for one attempt of a campaign's contact.

    ``tools``: where the dialer's outcome tool is served (None: the call gets no outcome tool).
    """
    body: dict[str, Any] = {
        'medium': trunk.medium(number, password),
        'firstSpeakerSettings': {'user': {}} if config.first_speaker == 'user' else {'agent': {}},
        # Metadata values must be strings; they come back on the call, in webhooks and in list filters.
        'metadata': {
            'campaign': config.name,
            'contact_id': contact.contact_id,
            'attempt': str(attempt),
            'attempt_id': attempt_id,
        },
    }
    if config.max_duration is not None:
        body['maxDuration'] = format_duration(config.max_duration)
    if config.join_timeout is not None:
        body['joinTimeout'] = format_duration(config.join_timeout)
    context: dict[str, str] = dict(contact.context)
    if contact.name is not None:
        context['name'] = contact.name
    if config.agent_id is not None:
        path = f'/api/agents/{quote(config.agent_id, safe="")}/calls'
        if context:
            body['templateContext'] = context
    else:
        # StartCallRequest has no templateContext: the contact's values are filled into the prompt here.
        path = '/api/calls'
        body['systemPrompt'] = fill_placeholders(config.system_prompt or '', context)
    body.update(tool_fields(config, attempt_id, tools))
    if config.recording:
        body['recordingEnabled'] = True
    params = {'throttle': config.throttle} if config.throttle else {}
    return CreateCallRequest(path=path, params=params, body=body)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP-date); 1 s when absent or invalid."""
    if value is None or not value.strip():
        return DEFAULT_RETRY_AFTER
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return DEFAULT_RETRY_AFTER
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return DEFAULT_RETRY_AFTER
    return max(0.0, seconds)


def _secrets_in(value: Any) -> Iterable[str]:
    """Every ``password`` value anywhere in a request body."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == 'password' and isinstance(item, str):
                yield item
            elif key == 'secrets' and isinstance(item, list):  # a SIP fallback handler's secrets
                yield from (secret for secret in item if isinstance(secret, str))
            else:
                yield from _secrets_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _secrets_in(item)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secrets, password fields or phone numbers, cut to 500 characters."""
    # Longest first, so that a secret containing another is removed whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
    text = _PASSWORD_FIELD.sub(lambda m: m.group(1) + _REDACTED, text)
    text = _PHONE.sub('[number]', text)
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 3] + '...'


def _status_class(status: int) -> str:
    if status == httpx.codes.TOO_MANY_REQUESTS:
        return '429'
    if 200 <= status < 300:
        return '2xx'
    if 400 <= status < 500:
        return '4xx'
    if 500 <= status < 600:
        return '5xx'
    return 'error'


# A request that never reached the server cannot have created anything; everything else might have.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
_RATE_LIMITED = frozenset({httpx.codes.TOO_MANY_REQUESTS, httpx.codes.SERVICE_UNAVAILABLE})


class UltravoxClient:
    """One ``httpx.AsyncClient`` (one pool) per process; use as ``async with`` or call ``aclose()``."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        max_connections: int = 200,
        transport: httpx.AsyncBaseTransport | None = None,
        max_tries: int = 4,
        backoff_base: float = 0.25,
        backoff_cap: float = 8.0,
        max_retry_after: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_tries < 1:
            raise ValueError('max_tries must be at least 1')
        self._api_key = api_key
        self._max_tries = max_tries
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        # A read told to wait longer than this gives up instead: the caller polls again later anyway.
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        self._client = async_client(
            base_url=base_url,
            headers={'X-API-Key': api_key.get_secret_value(), 'Accept': 'application/json'},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_connections=max_connections,
            transport=transport,
        )
        #: The base URL without its trailing slash: every path here starts with one.
        self._root = str(self._client.base_url).rstrip('/')

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            settings.ultravox_base_url,
            settings.ultravox_api_key,
            connect_timeout=settings.ultravox_connect_timeout,
            read_timeout=settings.ultravox_read_timeout,
            max_connections=settings.ultravox_max_connections,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- one request -------------------------------------------------------------------------------

    async def _send(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | list[tuple[str, str]] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        """One HTTP request; the decoded JSON on 2xx, a classified ``UltravoxError`` otherwise."""
        secrets = [self._api_key.get_secret_value(), *_secrets_in(body)]
        try:
            # A tuple of pairs keeps repeated keys and their order (httpx's types accept it covariantly).
            # None rather than empty, and an absolute URL: httpx parses the URL again for each of a
            # relative path, a base URL to merge and params to merge (about a third of its CPU per request).
            query = tuple(params.items() if isinstance(params, Mapping) else params or ()) or None
            response = await self._client.request(method, self._root + path, params=query, json=body)
        except httpx.RequestError as exc:
            ULTRAVOX_RESPONSES.labels(endpoint=endpoint, status_class='error').inc()
            created = not isinstance(exc, _NOT_SENT)
            reason = redact(f'{type(exc).__name__}: {exc}' if str(exc) else type(exc).__name__, secrets)
            log.warning('ultravox_transport_error', endpoint=endpoint, error=reason, maybe_created=created)
            # `from None`: the httpx exception holds the request (URL, body with the password).
            raise TransientError(reason, maybe_created=created) from None
        status = response.status_code
        ULTRAVOX_RESPONSES.labels(endpoint=endpoint, status_class=_status_class(status)).inc()
        if response.is_success:
            if status == httpx.codes.NO_CONTENT:
                return None
            try:
                return response.json()
            except ValueError:
                log.warning('ultravox_bad_json', endpoint=endpoint, status=status)
                raise TransientError(f'HTTP {status} with a body that is not JSON', maybe_created=True) from None
        raise self._classify(endpoint, response, secrets)

    def _classify(self, endpoint: Endpoint, response: httpx.Response, secrets: list[str]) -> UltravoxError:
        status = response.status_code
        if status in _RATE_LIMITED:
            retry_after = parse_retry_after(response.headers.get('Retry-After'))
            log.info('ultravox_rate_limited', endpoint=endpoint, status=status, retry_after=retry_after)
            return RateLimited(retry_after, status)
        reason = redact(response.text, secrets)
        log.warning('ultravox_error_response', endpoint=endpoint, status=status, reason=reason)
        if status in ACCOUNT_FAULT_CODES:
            return AccountFault(status, reason)
        if status == httpx.codes.NOT_FOUND:
            if endpoint == 'agent' or (endpoint == 'create' and response.request.url.path.startswith('/api/agents/')):
                return AgentNotFound(reason)
            if endpoint != 'create':
                return CallNotFound(status, reason)
        if 400 <= status < 500:
            return RequestRejected(status, reason)
        # A 5xx may come after the server acted on the request (or from a proxy in front of it).
        return TransientError(f'HTTP {status}: {reason}', maybe_created=True)

    # -- create ------------------------------------------------------------------------------------

    async def create_call(self, request: CreateCallRequest) -> dict[str, Any]:
        """Send exactly one Create Call request and return the new Call; never retried here."""
        call = await self._send('create', 'POST', request.path, params=request.params, body=request.body)
        if not isinstance(call, dict):
            raise TransientError('create answered with a body that is not a Call object', maybe_created=True)
        return call

    # -- reads, retried ----------------------------------------------------------------------------

    def _backoff(self, try_number: int) -> float:
        ceiling = min(self._backoff_cap, self._backoff_base * 2.0 ** (try_number - 1))
        # Equal jitter: always some wait, but workers that failed together do not retry together.
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not cryptography

    async def _read(
        self, endpoint: Endpoint, path: str, params: Mapping[str, str] | list[tuple[str, str]] | None = None
    ) -> Any:
        for try_number in range(1, self._max_tries + 1):
            try:
                return await self._send(endpoint, 'GET', path, params=params)
            except RateLimited as exc:
                if try_number == self._max_tries or exc.retry_after > self._max_retry_after:
                    raise
                delay = exc.retry_after
            except TransientError:
                if try_number == self._max_tries:
                    raise
                delay = self._backoff(try_number)
            log.info('ultravox_read_retry', endpoint=endpoint, try_number=try_number, delay=round(delay, 3))
            await self._sleep(delay)
        raise AssertionError('unreachable: the last try returns or raises')  # pragma: no cover

    async def get_call(self, call_id: str) -> dict[str, Any]:
        """The Call object; ``CallNotFound`` for 404, the classified error once retries are spent."""
        call = await self._read('get', f'/api/calls/{quote(call_id, safe="")}')
        if not isinstance(call, dict):
            raise TransientError('get answered with a body that is not a Call object', maybe_created=False)
        return call

    async def probe_account(self) -> None:
        """One cheap authenticated read: returns if the key and account are usable, raises otherwise."""
        await self._read('list', '/api/calls', [('pageSize', '1')])

    async def get_agent(self, agent_id: str) -> dict[str, Any]:
        """The agent (``AgentNotFound`` for 404); used to tell when a missing agent is back."""
        agent = await self._read('agent', f'/api/agents/{quote(agent_id, safe="")}')
        if not isinstance(agent, dict):
            raise TransientError('agent answered with a body that is not an Agent', maybe_created=False)
        return agent

    async def telephony_config(self, provider: str) -> dict[str, Any] | None:
        """The account's ``/api/telephony_configs/<provider>``; None when the provider is not configured."""
        try:
            config = await self._read('telephony_config', f'/api/telephony_configs/{quote(provider, safe="")}')
        except CallNotFound:
            return None
        return config if isinstance(config, dict) else {}

    async def delete_call(self, call_id: str) -> bool:
        """End (and delete) a call, e.g. one whose provider phone leg never came; False if already gone."""
        try:
            await self._send('delete', 'DELETE', f'/api/calls/{quote(call_id, safe="")}')
        except CallNotFound:
            return False
        return True

    async def sip_config(self) -> dict[str, Any]:
        """The account's incoming SIP configuration (``GET /api/sip``); it holds the fallback handler's secrets."""
        config = await self._read('sip', '/api/sip')
        if not isinstance(config, dict):
            raise TransientError('sip answered with a body that is not a SipConfig', maybe_created=False)
        return config

    async def patch_sip_config(self, changes: dict[str, Any]) -> dict[str, Any]:
        """``PATCH /api/sip`` (a ``PatchedSipConfig``); answers the new configuration. Idempotent."""
        config = await self._send('sip', 'PATCH', '/api/sip', body=changes)
        if not isinstance(config, dict):
            raise TransientError('sip answered with a body that is not a SipConfig', maybe_created=False)
        return config

    async def list_messages(self, call_id: str) -> list[dict[str, Any]]:
        """Every message of a call (``GET /api/calls/{id}/messages``, all pages). Transcripts are
        personal data: callers derive what they need and keep nothing else."""
        return await self._all_pages('messages', f'/api/calls/{quote(call_id, safe="")}/messages', [])

    async def find_calls(self, metadata: Mapping[str, str]) -> list[dict[str, Any]]:
        """Every call whose metadata has all the given key/value pairs, across all pages."""
        base: list[tuple[str, str]] = [(f'metadata.{key}', value) for key, value in metadata.items()]
        return await self._all_pages('list', '/api/calls', base)

    async def _all_pages(self, endpoint: Endpoint, path: str, base: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """The ``results`` of every page of a paginated list, following ``next`` on our own base URL."""
        params = base
        items: list[dict[str, Any]] = []
        seen: set[tuple[tuple[str, str], ...]] = set()
        for _ in range(MAX_PAGES):
            page = await self._read(endpoint, path, params)
            if not isinstance(page, dict) or not isinstance(page.get('results'), list):
                raise TransientError(f'{endpoint} answered with a body that is not a page', maybe_created=False)
            items.extend(item for item in page['results'] if isinstance(item, dict))
            following = _next_params(page.get('next'), base)
            if following is None:
                return items
            key = tuple(following)
            if key in seen:
                raise UltravoxError(f'{endpoint} pagination repeats a page')
            seen.add(key)
            params = following
        raise UltravoxError(f'{endpoint} pagination did not end within {MAX_PAGES} pages')


def _next_params(next_link: Any, base: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """Query parameters of the next page, or None on the last page.

    Only the query of ``next`` is used, always against our own base URL: the API key is never sent
    to whatever host a page names. A bare token is taken as the ``cursor``.
    """
    if not isinstance(next_link, str) or not next_link:
        return None
    if '?' not in next_link and '/' not in next_link and '=' not in next_link:
        return [*base, ('cursor', next_link)]
    query = parse_qsl(urlsplit(next_link).query, keep_blank_values=True)
    if not query:
        return None
    # Keep our filters even if a server's link leaves them out; the link's values win where both exist.
    given = {key for key, _ in query}
    return [pair for pair in base if pair[0] not in given] + query
