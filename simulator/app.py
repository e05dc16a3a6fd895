"""The Starlette application: Ultravox's call endpoints plus ``/_sim/*`` control and record endpoints."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from simulator import incoming, plivo_api, provider_api, provider_incoming, providers, telnyx_api
from simulator.agent import Agent
from simulator.calls import CallStore, SlidingWindow, max_concurrent, max_in_window
from simulator.config import SimulatorConfig
from simulator.schema import schema_errors, semantic_errors, sip_to_parts
from simulator.webhooks import WebhookDispatcher


if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request


AGENT_REQUEST = 'ultravox.v1.StartAgentCallRequest'
CALL_REQUEST = 'ultravox.v1.StartCallRequest'
_5XX = ((503, 'Service temporarily unavailable'), (500, 'Internal server error'), (502, 'Bad gateway'))


#: 0.1 s of 8 kHz 16-bit mono silence: what a recording download returns.
_SILENT_WAV = (
    b'RIFF' + (36 + 1600).to_bytes(4, 'little') + b'WAVEfmt ' + (16).to_bytes(4, 'little')
    + (1).to_bytes(2, 'little') + (1).to_bytes(2, 'little') + (8000).to_bytes(4, 'little')
    + (16000).to_bytes(4, 'little') + (2).to_bytes(2, 'little') + (16).to_bytes(2, 'little')
    + b'data' + (1600).to_bytes(4, 'little') + bytes(1600)
)  # fmt: skip


def _error(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({'detail': detail, **extra}, status_code=status, headers=headers)


class Simulator:
    """All mutable state of one simulator instance (one per app; the event loop is single-threaded)."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.store = CallStore()
        self.rng = random.Random(config.seed)  # noqa: S311  fault injection, not crypto
        self.per_second = SlidingWindow(1.0)
        self.message_reads = SlidingWindow(1.0)
        self.per_minute = SlidingWindow(60.0)
        self.throttle_windows: dict[str, tuple[SlidingWindow, SlidingWindow]] = {}
        self.requests: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.webhooks = WebhookDispatcher(lambda: self.config)
        self.agent = Agent(lambda: self.config)

    # --- helpers ---------------------------------------------------------------------------------------

    def auth_error(self, request: Request) -> JSONResponse | None:
        key = request.headers.get('x-api-key')
        if not key or (self.config.api_key is not None and key != self.config.api_key):
            self.rejected['auth_401'] += 1
            return _error(401, 'Authentication credentials were not provided or are invalid.')
        if self.config.account_state == 'payment_required':
            self.rejected['payment_402'] += 1
            return _error(402, 'Your account has no remaining credit.')
        if self.config.account_state == 'disabled':
            self.rejected['disabled_403'] += 1
            return _error(403, 'This account is disabled.')
        return None

    def public_config(self) -> dict[str, Any]:
        """The configuration as the control endpoint shows it: never the API key or webhook secrets."""
        shown = self.config.model_dump(mode='json')
        shown['api_key'] = None if self.config.api_key is None else '**set**'
        shown['webhook_secret'] = ['**set**' for _ in self.config.webhook_secret]
        return shown

    def limit_retry_after(self, now: float, throttle: str | None) -> int | None:
        config = self.config
        waits: list[int] = []
        if config.max_concurrent_calls is not None and self.store.live_count(now) >= config.max_concurrent_calls:
            next_end = self.store.next_end() or now
            waits.append(max(1, math.ceil(next_end - now)))
        for window, limit in (
            (self.per_second, config.creates_per_second),
            (self.per_minute, config.creates_per_minute),
        ):
            wait = window.retry_after(now, limit)
            if wait is not None:
                waits.append(wait)
        if throttle is not None and throttle in config.throttles:
            rule = config.throttles[throttle]
            second, minute = self.throttle_windows.setdefault(throttle, (SlidingWindow(1.0), SlidingWindow(60.0)))
            for window, limit in ((second, rule.per_second), (minute, rule.per_minute)):
                wait = window.retry_after(now, limit)
                if wait is not None:
                    waits.append(wait)
        return max(waits) if waits else None

    def count_create(self, now: float, throttle: str | None) -> None:
        self.per_second.add(now)
        self.per_minute.add(now)
        if throttle is not None and throttle in self.throttle_windows:
            for window in self.throttle_windows[throttle]:
                window.add(now)

    def bad_request(self, errors: list[str]) -> JSONResponse:
        self.rejected['schema_400'] += 1
        return _error(400, 'Invalid request: ' + '; '.join(errors), errors=errors)

    # --- Ultravox endpoints ----------------------------------------------------------------------------

    async def create_call(self, request: Request) -> Response:  # noqa: C901, PLR0911, PLR0912  one flat pipeline
        arrived = time.time()
        agent_id: str | None = request.path_params.get('agent_id')
        self.requests['create_agent_call' if agent_id is not None else 'create_call'] += 1
        if (denied := self.auth_error(request)) is not None:
            return denied
        config = self.config
        if agent_id is not None:
            try:
                agent_id = str(uuid.UUID(agent_id))
            except ValueError:
                return self.bad_request([f'agent_id: {agent_id!r} is not a UUID'])
            if config.known_agents is not None and agent_id not in config.known_agents:
                self.rejected['not_found_404'] += 1
                return _error(404, 'Agent not found.')
        throttle = request.query_params.get('throttle')
        if throttle is not None and (not throttle or (config.throttles and throttle not in config.throttles)):
            return self.bad_request([f'throttle: unknown throttle {throttle!r}'])
        try:
            body = json.loads(await request.body())
        except ValueError:
            return self.bad_request(['(body): not valid JSON'])
        if not isinstance(body, dict):
            return self.bad_request(['(body): expected a JSON object'])
        errors = schema_errors(
            body, AGENT_REQUEST if agent_id is not None else CALL_REQUEST, strict=config.reject_unknown_fields
        )
        errors = errors or semantic_errors(body) or providers.medium_errors(config, body)
        if errors:
            return self.bad_request(errors)

        roll = self.rng.random()
        if roll < config.drop_rate:
            self.faults['dropped'] += 1
            return await _drop_connection(request)
        roll -= config.drop_rate
        if roll < config.error_5xx_rate:
            status, detail = self.rng.choice(_5XX)
            self.faults[f'error_{status}'] += 1
            return _error(status, detail, headers={'Retry-After': '1'} if status == 503 else None)
        if self.rng.random() < config.slow_rate:
            self.faults['slow'] += 1
            await asyncio.sleep(config.slow_seconds)

        now = time.time()
        wait = self.limit_retry_after(now, throttle)
        if wait is not None:
            self.rejected['limit_429'] += 1
            return _error(
                429,
                f'Request was throttled. Expected available in {wait} seconds.',
                headers={'Retry-After': str(wait)},
            )
        outgoing = ((body.get('medium') or {}).get('sip') or {}).get('outgoing')
        parts = sip_to_parts(outgoing['to']) if outgoing else providers.to_parts(body)
        plan = self.store.create(config, body, now, agent_id, parts, arrived)
        providers.adapt_plan(plan, body, str(request.base_url))
        self.count_create(now, throttle)
        self.webhooks.schedule(plan)
        self.agent.plan(plan, body)
        if self.rng.random() < config.lost_response_rate:
            self.faults['lost_response'] += 1
            return await _drop_connection(request)
        return JSONResponse(plan.view(now), status_code=201)

    async def get_call(self, request: Request) -> Response:
        self.requests['get_call'] += 1
        if (denied := self.auth_error(request)) is not None:
            return denied
        if self.config.get_error_rate and self.rng.random() < self.config.get_error_rate:
            status, detail = self.rng.choice(_5XX)
            self.faults[f'get_error_{status}'] += 1
            return _error(status, detail, headers={'Retry-After': '1'} if status == 503 else None)
        plan = self.store.by_id.get(request.path_params['call_id'])
        if plan is None:
            self.rejected['not_found_404'] += 1
            return _error(404, 'Not found.')
        return JSONResponse(plan.view(time.time()))

    async def list_messages(self, request: Request) -> Response:
        self.requests['list_messages'] += 1
        if (denied := self.auth_error(request)) is not None:
            return denied
        now = time.time()
        wait = self.message_reads.retry_after(now, self.config.message_reads_per_second)
        if wait is not None:
            self.rejected['messages_429'] += 1
            return _error(429, 'Request was throttled.', headers={'Retry-After': str(wait)})
        self.message_reads.add(now)
        plan = self.store.by_id.get(request.path_params['call_id'])
        if plan is None:
            self.rejected['not_found_404'] += 1
            return _error(404, 'Not found.')
        return self.agent.page(request, plan, self.config.default_page_size, self.config.max_page_size)

    async def get_recording(self, request: Request) -> Response:
        """``GET /api/calls/{id}/recording``: a (silent) WAV for an ended, answered call created with
        ``recordingEnabled``; 404 otherwise, as Ultravox has nothing to return."""
        self.requests['get_recording'] += 1
        if (denied := self.auth_error(request)) is not None:
            return denied
        plan = self.store.by_id.get(request.path_params['call_id'])
        view = plan.view(time.time()) if plan is not None else {}
        if not view.get('recordingEnabled') or not view.get('joined') or not view.get('ended'):
            self.rejected['not_found_404'] += 1
            return _error(404, 'Not found.')
        return Response(_SILENT_WAV, media_type='audio/wav')

    async def get_agent(self, request: Request) -> Response:
        self.requests['get_agent'] += 1
        if (denied := self.auth_error(request)) is not None:
            return denied
        try:
            agent_id = str(uuid.UUID(request.path_params['agent_id']))
        except ValueError:
            return _error(404, 'Not found.')
        known = self.config.known_agents
        if known is not None and agent_id not in known:
            self.rejected['not_found_404'] += 1
            return _error(404, 'Not found.')
        return JSONResponse({'agentId': agent_id, 'name': f'sim-agent-{agent_id[:8]}', 'callTemplate': {}})

    async def sip_logs(self, request: Request) -> Response:
        self.requests['sip_logs'] += 1
        if (denied := self.auth_error(request)) is not None:
            return denied
        plan = self.store.by_id.get(request.path_params['call_id'])
        if plan is None:
            return _error(404, 'Not found.')
        if time.time() < plan.ended_real:
            return _error(425, 'The call has not ended yet.')
        return RedirectResponse(str(request.url_for('sim_sip_log', call_id=plan.call_id)), status_code=302)

    async def list_calls(self, request: Request) -> Response:
        self.requests['list_calls'] += 1
        if (denied := self.auth_error(request)) is not None:
            return denied
        params = request.query_params
        filters = {key.removeprefix('metadata.'): value for key, value in params.items() if key.startswith('metadata.')}
        try:
            page_size = min(int(params.get('pageSize', self.config.default_page_size)), self.config.max_page_size)
            from_time = _parse_date(params.get('fromDate'), end_of_day=False)
            to_time = _parse_date(params.get('toDate'), end_of_day=True)
            cursor = _decode_cursor(params.get('cursor'))
        except ValueError as error:
            return self.bad_request([str(error)])
        if page_size < 1:
            return self.bad_request(['pageSize: must be at least 1'])
        seqs = self.store.matching(filters, from_time, to_time)
        # Newest first; cursors name a creation sequence number so pages stay stable as calls are added.
        if cursor is None:
            page = seqs[-page_size:]
        elif cursor[0] == 'b':
            end = _bisect_left(seqs, cursor[1])
            page = seqs[max(0, end - page_size) : end]
        else:
            start = _bisect_right(seqs, cursor[1])
            page = seqs[start : start + page_size]
        now = time.time()
        next_url = previous_url = None
        if page and page[0] > seqs[0]:
            next_url = str(request.url.include_query_params(cursor=_encode_cursor('b', page[0])))
        if page and page[-1] < seqs[-1]:
            previous_url = str(request.url.include_query_params(cursor=_encode_cursor('a', page[-1])))
        results = [self.store.calls[seq].view(now) for seq in reversed(page)]
        return JSONResponse({'next': next_url, 'previous': previous_url, 'results': results, 'total': len(seqs)})

    # --- simulator control -----------------------------------------------------------------------------

    async def health(self, _request: Request) -> Response:
        return JSONResponse({'status': 'ok', 'calls': len(self.store.calls)})

    async def get_config(self, _request: Request) -> Response:
        return JSONResponse(self.public_config())

    async def set_config(self, request: Request) -> Response:
        try:
            changes = json.loads(await request.body())
        except ValueError as error:
            return _error(400, f'Invalid config: {error}')
        if not isinstance(changes, dict):
            return _error(400, 'Invalid config: expected a JSON object of SimulatorConfig fields')
        try:
            self.config = self.config.updated(changes)
        except ValidationError as error:
            return _error(400, f'Invalid config: {error}')
        return JSONResponse(self.public_config())

    async def records(self, _request: Request) -> Response:
        return JSONResponse([plan.record() for plan in self.store.calls])

    async def stats(self, _request: Request) -> Response:
        return JSONResponse(self.compute_stats())

    async def sip_log(self, request: Request) -> Response:
        plan = self.store.by_id.get(request.path_params['call_id'])
        if plan is None:
            return _error(404, 'Not found.')
        return PlainTextResponse(f'INVITE {plan.to}\n{plan.termination}\n')

    def compute_stats(self) -> dict[str, Any]:
        by_host: dict[str, list[tuple[float, float]]] = {}
        for plan in self.store.calls:
            by_host.setdefault(plan.host or '', []).append((plan.arrived or plan.created, plan.ended_real))
        everything = [interval for intervals in by_host.values() for interval in intervals]
        attempts = Counter(plan.metadata['attempt_id'] for plan in self.store.calls if 'attempt_id' in plan.metadata)
        return {
            'calls': len(everything),
            'max_concurrent': max_concurrent(everything),
            'max_creates_in_1s': max_in_window([start for start, _ in everything]),
            'hosts': {
                host: {
                    'calls': len(intervals),
                    'max_concurrent': max_concurrent(intervals),
                    'max_creates_in_1s': max_in_window([start for start, _ in intervals]),
                }
                for host, intervals in by_host.items()
            },
            'outcomes': dict(Counter(str(plan.outcome) for plan in self.store.calls)),
            'duplicate_attempts': sum(1 for count in attempts.values() if count > 1),
            'rejected': dict(self.rejected),
            'faults': dict(self.faults),
            'requests': dict(self.requests),
            'webhooks': dict(self.webhooks.stats),
        }


# --- helpers -------------------------------------------------------------------------------------------


async def _drop_connection(request: Request) -> Response:
    """Close the TCP connection without any response (the client sees a protocol/read error).

    uvicorn's ``receive`` is a bound method of its per-request cycle, which holds the transport; aborting it
    and yielding lets uvicorn notice the disconnect, after which it silently discards whatever we return.
    """
    transport = getattr(getattr(request.receive, '__self__', None), 'transport', None)
    if transport is None:
        raise ConnectionAbortedError('simulated connection drop (no transport to abort)')
    transport.abort()
    for _ in range(3):
        await asyncio.sleep(0)
    return Response(status_code=204)


def _encode_cursor(direction: str, seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([direction, seq]).encode()).decode().rstrip('=')


def _decode_cursor(cursor: str | None) -> tuple[str, int] | None:
    if not cursor:
        return None
    try:
        direction, seq = json.loads(base64.urlsafe_b64decode(cursor + '=' * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, TypeError) as error:
        raise ValueError('cursor: invalid') from error
    if direction not in {'a', 'b'} or not isinstance(seq, int):
        raise ValueError('cursor: invalid')
    return direction, seq


def _parse_date(value: str | None, *, end_of_day: bool) -> float | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as error:
        raise ValueError(f'date: {value!r} is not ISO-8601') from error
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if end_of_day and len(value) <= len('2026-07-01'):
        return parsed.timestamp() + 86400 - 1e-6
    return parsed.timestamp()


def _bisect_left(seqs: list[int], seq: int) -> int:
    import bisect  # noqa: PLC0415

    return bisect.bisect_left(seqs, seq)


def _bisect_right(seqs: list[int], seq: int) -> int:
    import bisect  # noqa: PLC0415

    return bisect.bisect_right(seqs, seq)


def build_app(config: SimulatorConfig | None = None) -> Starlette:
    """The simulator as an ASGI app; ``app.state.simulator`` is its :class:`Simulator`."""
    sim = Simulator(config or SimulatorConfig())
    from simulator.schema import fast_check  # noqa: PLC0415

    fast_check(AGENT_REQUEST, 'request')  # compile before the first request, not during it
    fast_check(CALL_REQUEST, 'request')

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        sim.webhooks.wake = asyncio.Event()
        await sim.webhooks.start()
        await sim.agent.start()
        try:
            yield
        finally:
            await sim.agent.stop()
            await sim.webhooks.stop()

    routes = [
        Route('/api/agents/{agent_id}/calls', sim.create_call, methods=['POST']),
        Route('/api/calls', sim.create_call, methods=['POST']),
        Route('/api/calls', sim.list_calls, methods=['GET']),
        Route('/api/calls/{call_id}', sim.get_call, methods=['GET']),
        Route('/api/agents/{agent_id}', sim.get_agent, methods=['GET']),
        Route('/api/calls/{call_id}/sip_logs', sim.sip_logs, methods=['GET']),
        Route('/api/calls/{call_id}/messages', sim.list_messages, methods=['GET']),
        Route('/api/calls/{call_id}/recording', sim.get_recording, methods=['GET']),
        *providers.UltravoxProviderRoutes(sim).routes(),
        *provider_api.routes(sim),
        *telnyx_api.routes(sim),
        *plivo_api.routes(sim),
        *incoming.IncomingCalls(sim).routes(),
        *provider_incoming.ProviderIncoming(sim).routes(),
        Route('/_sim/health', sim.health, methods=['GET']),
        Route('/_sim/config', sim.get_config, methods=['GET']),
        Route('/_sim/config', sim.set_config, methods=['POST']),
        Route('/_sim/records', sim.records, methods=['GET']),
        Route('/_sim/stats', sim.stats, methods=['GET']),
        Route('/_sim/sip_logs/{call_id}', sim.sip_log, methods=['GET'], name='sim_sip_log'),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.simulator = sim
    return app
