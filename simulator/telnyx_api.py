"""Telnyx's Call Control v2 as the simulator imitates it (direct mode; see ``dialer/providers/telnyx.py``
for what it relies on).

- ``POST /v2/calls`` (Dial): ``Authorization: Bearer`` checked against ``provider_accounts['telnyx']``
  (``api_key``, ``connection_id``, ``private_key``: the account's base64 Ed25519 key, whose public key
  tests put in the trunk); JSON fields outside Dial's documented set refused with Telnyx's error shape
  (422, ``{"errors": [{"code", "title", "detail", "source"}]}``); the ``stream_url`` joined to the
  Ultravox call with that ``joinUrl`` (as the Twilio simulation does); 429 (code 90103) over
  ``provider_calls_per_second``.
- The played outcome becomes a ``call.hangup`` ``hangup_cause`` + ``sip_hangup_cause``, with
  ``call.answered`` for an answered call and ``call.machine.detection.ended`` (``human`` / ``machine``)
  when ``answering_machine_detection`` was asked for.
- Signed webhooks (``telnyx-signature-ed25519``, ``telnyx-timestamp``) of every event sent to
  ``webhook_url`` when it happens, each lost with ``provider_callback_loss_rate``.
- ``GET /v2/calls/{call_control_id}`` (``is_alive``, ``call_duration``), ``GET /v2/call_events`` (filters
  ``leg_id``, ``to``, ``from``, ``name``, ``type``, ``occurred_at[gte]``; others refused) and
  ``POST /v2/calls/{call_control_id}/actions/hangup``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dialer.providers.telnyx import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from simulator import providers
from simulator.calls import SlidingWindow
from simulator.config import SimOutcome


if TYPE_CHECKING:
    from starlette.requests import Request

    from simulator.app import Simulator

#: Dial's documented request fields (Telnyx "Dial" / the SDK's ``call_dial_params.py``).
DIAL_FIELDS = frozenset(
    {
        'connection_id', 'to', 'from', 'from_display_name', 'answering_machine_detection',
        'answering_machine_detection_config', 'audio_url', 'billing_group_id', 'bridge_intent', 'bridge_on_answer',
        'client_state', 'command_id', 'conference_config', 'custom_headers', 'dialogflow_config',
        'enable_dialogflow', 'link_to', 'media_encryption', 'media_name', 'preferred_codecs', 'record',
        'record_channels', 'record_custom_file_name', 'record_format', 'record_max_length', 'record_timeout_secs',
        'record_track', 'record_trim', 'send_silence_when_idle', 'sip_auth_password', 'sip_auth_username',
        'sip_headers', 'sip_transport_protocol', 'sound_modifications', 'stream_bidirectional_codec',
        'stream_bidirectional_mode', 'stream_bidirectional_sampling_rate', 'stream_bidirectional_target_legs',
        'stream_codec', 'stream_establish_before_call_originate', 'stream_track', 'stream_url',
        'supervise_call_control_id', 'supervisor_role', 'time_limit_secs', 'timeout_secs', 'transcription',
        'transcription_config', 'webhook_url', 'webhook_url_method',
    }
)  # fmt: skip
AMD_VALUES = frozenset({'premium', 'detect', 'detect_beep', 'detect_words', 'greeting_end', 'disabled'})
STREAM_TRACKS = frozenset({'inbound_track', 'outbound_track', 'both_tracks'})
EVENT_FILTERS = frozenset(
    {'filter[leg_id]', 'filter[to]', 'filter[from]', 'filter[name]', 'filter[type]', 'filter[occurred_at][gte]'}
)
PAGE_PARAMS = frozenset({'page[size]', 'page[number]'})
#: played outcome -> (hangup_cause, sip_hangup_cause)
TELNYX_HANGUP = {
    SimOutcome.ANSWERED: ('normal_clearing', '200'),
    SimOutcome.NO_ANSWER: ('timeout', '487'),
    SimOutcome.BUSY: ('user_busy', '486'),
    SimOutcome.INVALID_NUMBER: ('not_found', '404'),
    SimOutcome.REJECTED: ('call_rejected', '603'),
    SimOutcome.UNAVAILABLE: ('unspecified', '480'),
    SimOutcome.CONNECTION_ERROR: ('unspecified', '500'),
    SimOutcome.SYSTEM_ERROR: ('unspecified', '503'),
}
_AMD_DELAY = 2.0  # simulated seconds from answer to the AMD verdict


def _error(status: int, code: str, title: str, detail: str, pointer: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {'code': code, 'title': title, 'detail': detail}
    if pointer is not None:
        error['source'] = {'pointer': pointer}
    return JSONResponse({'errors': [error]}, status_code=status)


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec='milliseconds').replace('+00:00', 'Z')


def _dial_error(body: dict[str, Any], account: dict[str, str]) -> tuple[str, str] | None:
    """(field, what is wrong) for the first field of a Dial that Telnyx would refuse."""
    unknown = sorted(set(body) - DIAL_FIELDS)
    if unknown:
        return unknown[0], 'is not a valid parameter'
    missing = next(
        (f for f in ('connection_id', 'to', 'from') if not isinstance(body.get(f), str) or not body[f]), None
    )
    if missing is not None:
        return missing, 'is required'
    timeout = body.get('timeout_secs', 30)
    state = body.get('client_state')
    checks = [
        ('connection_id', body['connection_id'] == account.get('connection_id'), 'is not a Call Control App'),
        ('answering_machine_detection', body.get('answering_machine_detection', 'disabled') in AMD_VALUES, 'invalid'),
        ('stream_track', body.get('stream_track', 'inbound_track') in STREAM_TRACKS, 'invalid'),
        ('timeout_secs', isinstance(timeout, int) and 5 <= timeout <= 600, 'must be from 5 to 600'),
        ('client_state', state is None or _is_base64(state), 'must be Base-64'),
    ]
    return next(((field, problem) for field, ok, problem in checks if not ok), None)


def _is_base64(value: Any) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        return False
    return True


class TelnyxSim:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.calls: dict[str, dict[str, Any]] = {}
        self.window = SlidingWindow(1.0)
        self.tasks: set[asyncio.Task[None]] = set()

    def _account(self) -> dict[str, str]:
        return self.sim.config.provider_accounts.get('telnyx') or {}

    def _authorized(self, request: Request) -> bool:
        key = self._account().get('api_key')
        return bool(key) and request.headers.get('authorization') == f'Bearer {key}'

    @staticmethod
    def _unauthorized() -> JSONResponse:
        return _error(401, '10009', 'Authentication failed', 'The API key is missing or invalid.')

    def events(self, call: dict[str, Any], now: float) -> list[dict[str, Any]]:
        """The call's webhook events that have happened by ``now`` (raw ``data`` objects)."""
        base = {
            'call_control_id': call['call_control_id'],
            'call_leg_id': call['call_leg_id'],
            'call_session_id': call['call_session_id'],
            'client_state': call['client_state'],
            'connection_id': call['connection_id'],
            'from': call['from'],
            'to': call['to'],
        }
        timeline: list[tuple[float, str, dict[str, Any]]] = [
            (call['created'], 'call.initiated', {'direction': 'outgoing', 'state': 'bridging'})
        ]
        if call['answered'] is not None:
            timeline.append((call['answered'], 'call.answered', {}))
            if call['amd'] is not None:
                amd_at = min(call['ended'], call['answered'] + _AMD_DELAY * self.sim.config.time_scale)
                timeline.append((amd_at, 'call.machine.detection.ended', {'result': call['amd']}))
        timeline.append(
            (
                call['ended'],
                'call.hangup',
                {
                    'hangup_cause': call['cause'],
                    'sip_hangup_cause': call['sip'],
                    'hangup_source': 'callee' if call['cause'] != 'originator_cancel' else 'caller',
                },
            )
        )
        return [
            {
                'record_type': 'event',
                'event_type': name,
                'id': f'{call["call_leg_id"]}-{index}',
                'occurred_at': _iso(when),
                'payload': {**base, **extra},
            }
            for index, (when, name, extra) in enumerate(timeline)
            if when <= now
        ]

    def view(self, call: dict[str, Any], now: float) -> dict[str, Any]:
        alive = now < call['ended']
        scale = self.sim.config.time_scale
        talk = max(0.0, call['ended'] - call['answered']) / scale if call['answered'] is not None else 0.0
        return {
            'record_type': 'call',
            'call_control_id': call['call_control_id'],
            'call_leg_id': call['call_leg_id'],
            'call_session_id': call['call_session_id'],
            'client_state': call['client_state'],
            'is_alive': alive,
            'call_duration': None if alive else round(talk),
            'start_time': _iso(call['created']),
            'end_time': None if alive else _iso(call['ended']),
        }

    async def dial(self, request: Request) -> Response:  # noqa: PLR0911  one answer per refusal
        self.sim.requests['telnyx_dial'] += 1
        if not self._authorized(request):
            return self._unauthorized()
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, '10002', 'Invalid request', 'The body is not JSON')
        if not isinstance(body, dict):
            return _error(400, '10002', 'Invalid request', 'The body is not a JSON object')
        if (refused := _dial_error(body, self._account())) is not None:
            self.sim.rejected['telnyx_422'] += 1
            field, problem = refused
            return _error(422, '10015', 'Invalid parameter', f'{field} {problem}', f'/{field}')
        join_url = str(body.get('stream_url') or '')
        plan = next((p for p in self.sim.store.by_id.values() if p.base.get('joinUrl') == join_url), None)
        if plan is None:
            return _error(422, '10015', 'Invalid parameter', 'stream_url is not a joinable stream', '/stream_url')
        now = time.time()
        config = self.sim.config
        if self.window.retry_after(now, config.provider_calls_per_second) is not None:
            self.sim.rejected['telnyx_429'] += 1
            return _error(429, '90103', 'Dials per second limit exceeded', 'Too many dial attempts; slow down.')
        self.window.add(now)
        to = str(body['to'])
        rng = self.sim.store.planner.rng_for(config.seed, to, plan.metadata, plan.seq)
        chosen = self.sim.store.planner.outcome(config, rng, to)
        # a voicemail is an answered call; with answering_machine_detection asked for, AMD says "machine"
        machine = chosen is SimOutcome.VOICEMAIL
        chosen = SimOutcome.ANSWERED if machine else chosen
        outcome, joined, ended, talk, _ = self.sim.store.planner.timings(config, rng, chosen, plan.base)
        providers.join(plan, outcome, joined or 0.0, talk, now)
        plan.user, plan.to = to, to
        detect = body.get('answering_machine_detection', 'disabled') != 'disabled'
        answered = outcome is SimOutcome.ANSWERED and joined is not None
        cause, sip = TELNYX_HANGUP[outcome]
        scale = config.time_scale
        leg = str(uuid.uuid4())
        call = {
            'call_control_id': 'v3:' + base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip('='),
            'call_leg_id': leg,
            'call_session_id': str(uuid.uuid4()),
            'connection_id': body['connection_id'],
            'client_state': body.get('client_state'),
            'to': to,
            'from': str(body['from']),
            'created': now,
            'answered': now + (joined or 0.0) * scale if answered else None,
            'ended': now + ended * scale,
            'cause': cause,
            'sip': sip,
            'amd': ('machine' if machine else 'human') if detect and answered else None,
            'outcome': 'voicemail' if machine and detect else str(outcome),
            'attempt_id': plan.metadata.get('attempt_id'),
            'call_id': plan.call_id,
            'webhook_url': body.get('webhook_url'),
        }
        ccid = call['call_control_id']
        self.calls[ccid] = call
        if call['webhook_url']:
            task = asyncio.create_task(self._webhooks(ccid))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        if config.provider_create_delay:
            # the call is placed already; a client that dies while waiting must find it, not place another
            self.sim.faults['provider_slow'] += 1
            await asyncio.sleep(config.provider_create_delay)
        data = {**self.view(call, now), 'is_alive': True, 'call_duration': None, 'end_time': None}
        return JSONResponse({'data': data})

    async def _webhooks(self, ccid: str) -> None:
        """Each event of the call, signed, when it happens (the times can move: a hangup action ends it early)."""
        sent = 0
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                call = self.calls[ccid]
                events = self.events(call, time.time())
                for event in events[sent:]:
                    await self._send(client, call['webhook_url'], event)
                sent = len(events)
                if events and events[-1]['event_type'] == 'call.hangup':
                    return
                await asyncio.sleep(max(0.01, min(0.2, call['ended'] - time.time())))

    async def _send(self, client: httpx.AsyncClient, url: str, event: dict[str, Any]) -> None:
        if self.sim.rng.random() < self.sim.config.provider_callback_loss_rate:
            self.sim.faults['telnyx_callback_lost'] += 1
            return
        body = json.dumps({'data': event, 'meta': {'attempt': 1, 'delivered_to': url}}).encode()
        stamp = str(int(time.time()))
        headers = {
            SIGNATURE_HEADER: sign(self._account().get('private_key', ''), stamp, body),
            TIMESTAMP_HEADER: stamp,
            'Content-Type': 'application/json',
        }
        try:
            response = await client.post(url, content=body, headers=headers)
            self.sim.webhooks.stats['telnyx_callbacks_' + str(response.status_code)] += 1
        except httpx.HTTPError:
            self.sim.webhooks.stats['telnyx_callback_errors'] += 1

    async def get(self, request: Request) -> Response:
        self.sim.requests['telnyx_get'] += 1
        if not self._authorized(request):
            return self._unauthorized()
        call = self.calls.get(request.path_params['ccid'])
        if call is None:
            return _error(404, '10005', 'Resource not found', 'The requested call was not found.')
        return JSONResponse({'data': self.view(call, time.time())})

    async def call_events(self, request: Request) -> Response:
        self.sim.requests['telnyx_events'] += 1
        if not self._authorized(request):
            return self._unauthorized()
        query = request.query_params
        unknown = sorted(set(query) - EVENT_FILTERS - PAGE_PARAMS)
        if unknown:
            return _error(422, '10015', 'Invalid parameter', f'{unknown[0]} is not a valid filter', unknown[0])
        since = query.get('filter[occurred_at][gte]')
        now = time.time()
        found = []
        for call in self.calls.values():
            if any(
                value is not None and value != call[field]
                for field, value in (
                    ('call_leg_id', query.get('filter[leg_id]')),
                    ('to', query.get('filter[to]')),
                    ('from', query.get('filter[from]')),
                )
            ):
                continue
            for event in self.events(call, now):
                if query.get('filter[name]', event['event_type']) != event['event_type']:
                    continue
                if query.get('filter[type]', 'webhook') != 'webhook':
                    continue
                if since is not None and event['occurred_at'] < since:
                    continue
                found.append(
                    {
                        'record_type': 'call_event',
                        'call_leg_id': call['call_leg_id'],
                        'call_session_id': call['call_session_id'],
                        'event_timestamp': event['occurred_at'],
                        'name': event['event_type'],
                        'type': 'webhook',
                        'metadata': event,
                    }
                )
        found.sort(key=lambda item: item['event_timestamp'])
        size = int(query.get('page[size]', '20'))
        meta = {'page_number': 1, 'page_size': size, 'total_pages': 1, 'total_results': len(found)}
        return JSONResponse({'data': found[:size], 'meta': meta})

    async def hangup(self, request: Request) -> Response:
        self.sim.requests['telnyx_hangup'] += 1
        if not self._authorized(request):
            return self._unauthorized()
        call = self.calls.get(request.path_params['ccid'])
        if call is None:
            return _error(404, '10005', 'Resource not found', 'The requested call was not found.')
        now = time.time()
        if now >= call['ended']:
            return _error(422, '90018', 'Call has already ended', 'This call is no longer active.')
        call['ended'] = now
        if call['answered'] is None or call['answered'] > now:
            call['answered'], call['amd'], call['cause'], call['sip'] = None, None, 'originator_cancel', '487'
        else:
            call['cause'], call['sip'] = 'normal_clearing', '200'
        return JSONResponse({'data': {'result': 'ok'}})

    async def records(self, _request: Request) -> Response:
        """Every leg placed, with what the tests compare: ``sid``, ``final`` (the hangup cause) and
        ``answered_by`` (the AMD verdict), named as in the Twilio simulation's records."""
        return JSONResponse(
            [
                {**call, 'sid': call['call_control_id'], 'final': call['cause'], 'answered_by': call['amd']}
                for call in self.calls.values()
            ]
        )


def routes(sim: Simulator) -> list[Route]:
    telnyx = TelnyxSim(sim)
    return [
        Route('/v2/calls', telnyx.dial, methods=['POST']),
        Route('/v2/calls/{ccid}', telnyx.get, methods=['GET']),
        Route('/v2/calls/{ccid}/actions/hangup', telnyx.hangup, methods=['POST']),
        Route('/v2/call_events', telnyx.call_events, methods=['GET']),
        Route('/_sim/provider_calls/telnyx', telnyx.records, methods=['GET']),
    ]
