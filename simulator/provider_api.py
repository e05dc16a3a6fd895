"""The providers' own REST APIs as the simulator imitates them (direct mode). Today: Twilio's Calls
resource (see ``dialer/providers/twilio.py`` for what it relies on): Basic auth checked against
``provider_accounts['twilio']`` (``account_sid``, ``auth_token``), unknown form fields refused, the
``<Connect><Stream url>`` of the TwiML joined to the Ultravox call with that ``joinUrl``, and signed
status callbacks (``X-Twilio-Signature``) sent to ``StatusCallback`` (some lost, by
``provider_callback_loss_rate``)."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import re
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import httpx
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dialer.providers.twilio import signature
from simulator import providers
from simulator.calls import SlidingWindow
from simulator.config import SimOutcome


if TYPE_CHECKING:
    from starlette.requests import Request

    from simulator.app import Simulator

TWILIO_FIELDS = frozenset(
    {
        'To', 'From', 'Twiml', 'Url', 'StatusCallback', 'StatusCallbackMethod', 'StatusCallbackEvent', 'Timeout',
        'TimeLimit', 'MachineDetection', 'MachineDetectionTimeout', 'AsyncAmd', 'AsyncAmdStatusCallback', 'Record',
    }
)  # fmt: skip
#: played outcome -> (Twilio status, SIP response code)
TWILIO_STATUS = {
    SimOutcome.ANSWERED: ('completed', '200'),
    SimOutcome.NO_ANSWER: ('no-answer', '487'),
    SimOutcome.BUSY: ('busy', '486'),
    SimOutcome.INVALID_NUMBER: ('failed', '404'),
    SimOutcome.REJECTED: ('busy', '603'),
    SimOutcome.UNAVAILABLE: ('no-answer', '480'),
    SimOutcome.CONNECTION_ERROR: ('failed', '500'),
    SimOutcome.SYSTEM_ERROR: ('failed', '503'),
}
_STREAM = re.compile(r'<Stream\s+url="([^"]+)"')


def _twilio_error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({'code': code, 'message': message, 'status': status}, status_code=status)


class TwilioSim:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.calls: dict[str, dict[str, Any]] = {}
        self.window = SlidingWindow(1.0)
        self.tasks: set[asyncio.Task[None]] = set()

    def _auth(self, request: Request) -> tuple[str, str] | None:
        account = self.sim.config.provider_accounts.get('twilio') or {}
        try:
            scheme, encoded = request.headers.get('authorization', '').split(' ', 1)
            user, secret = base64.b64decode(encoded).decode().split(':', 1)
        except ValueError:
            return None
        if scheme != 'Basic' or request.path_params['sid'] != account.get('account_sid'):
            return None
        if user != account.get('account_sid') or secret != account.get('auth_token'):
            return None
        return user, secret

    def view(self, call: dict[str, Any], now: float) -> dict[str, Any]:
        scale = self.sim.config.time_scale
        status = 'queued'
        if now >= call['created'] + 0.5 * scale:
            status = 'ringing'
        if call['answered'] is not None and now >= call['answered']:
            status = 'in-progress'
        if now >= call['ended']:
            status = call['final']
        talk = max(0.0, call['ended'] - call['answered']) / scale if call['answered'] is not None else 0.0
        over = status == call['final']
        return {
            'sid': call['sid'],
            'account_sid': call['account_sid'],
            'to': call['to'],
            'from': call['from'],
            'status': status,
            'date_created': email.utils.formatdate(call['created'], usegmt=True),
            'duration': str(round(talk)) if over else None,
            'price': f'-{0.014 * max(1, round(talk / 60 + 0.5)):.5f}' if over and talk else None,
            'price_unit': 'USD',
            'answered_by': call['answered_by'] if status in {'in-progress', 'completed'} else None,
        }

    async def create(self, request: Request) -> Response:
        self.sim.requests['twilio_create'] += 1
        if self._auth(request) is None:
            return _twilio_error(401, 20003, 'Authentication Error - invalid username')
        # form-encoded, parsed here (no multipart dependency); a repeated field keeps its last value
        form = dict(parse_qsl((await request.body()).decode('utf-8', 'replace'), keep_blank_values=True))
        unknown = sorted(set(form) - TWILIO_FIELDS)
        if unknown:
            return _twilio_error(400, 21201, f'Unknown parameter {unknown[0]}')
        to, from_, twiml = form.get('To'), form.get('From'), str(form.get('Twiml') or '')
        if not to or not from_ or not twiml:
            return _twilio_error(400, 21201, 'To, From and Twiml are required')
        match = _STREAM.search(twiml)
        join_url = match.group(1).replace('&amp;', '&') if match else ''
        plan = next((p for p in self.sim.store.by_id.values() if p.base.get('joinUrl') == join_url), None)
        if plan is None:
            return _twilio_error(400, 21205, 'Twiml <Stream url> is not a joinable Ultravox call')
        now = time.time()
        limit = self.sim.config.provider_calls_per_second
        if self.window.retry_after(now, limit) is not None:
            self.sim.rejected['twilio_429'] += 1
            return _twilio_error(429, 20429, 'Too Many Requests')
        self.window.add(now)
        config = self.sim.config
        rng = self.sim.store.planner.rng_for(config.seed, str(to), plan.metadata, plan.seq)
        chosen = self.sim.store.planner.outcome(config, rng, str(to))
        # a voicemail is an answered call; with MachineDetection asked for, Twilio's AMD says "machine"
        machine = chosen is SimOutcome.VOICEMAIL
        chosen = SimOutcome.ANSWERED if machine else chosen
        outcome, joined, ended, talk, _ = self.sim.store.planner.timings(config, rng, chosen, plan.base)
        providers.join(plan, outcome, joined or 0.0, talk, now)
        plan.user, plan.to = str(to), str(to)
        sid = 'CA' + uuid.uuid4().hex
        status, sip = TWILIO_STATUS[outcome]
        scale = config.time_scale
        call = {
            'sid': sid,
            'account_sid': request.path_params['sid'],
            'to': str(to),
            'from': str(from_),
            'created': now,
            'answered': now + joined * scale if outcome is SimOutcome.ANSWERED and joined is not None else None,
            'ended': now + ended * scale,
            'final': status,
            'sip': sip,
            'outcome': 'voicemail' if machine and form.get('MachineDetection') else str(outcome),
            'answered_by': (
                ('machine_start' if machine else 'human')
                if form.get('MachineDetection') and outcome is SimOutcome.ANSWERED
                else None
            ),
            'attempt_id': plan.metadata.get('attempt_id'),
            'call_id': plan.call_id,
            'callback': form.get('StatusCallback'),
        }
        self.calls[sid] = call
        if call['callback'] and self.sim.rng.random() >= config.provider_callback_loss_rate:
            task = asyncio.create_task(self._callback(call))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif call['callback']:
            self.sim.faults['twilio_callback_lost'] += 1
        if config.provider_create_delay:
            # the call is placed already; a client that dies while waiting must find it, not place another
            self.sim.faults['provider_slow'] += 1
            await asyncio.sleep(config.provider_create_delay)
        return JSONResponse(self.view(call, now), status_code=201)

    async def _callback(self, call: dict[str, Any]) -> None:
        await asyncio.sleep(max(0.0, call['ended'] - time.time()))
        token = (self.sim.config.provider_accounts.get('twilio') or {}).get('auth_token', '')
        params = [
            ('CallSid', call['sid']),
            ('AccountSid', call['account_sid']),
            ('CallStatus', call['final']),
            ('SipResponseCode', call['sip']),
            ('To', call['to']),
            ('From', call['from']),
        ]
        if call['answered_by']:
            params.append(('AnsweredBy', call['answered_by']))
        headers = {'X-Twilio-Signature': signature(token, call['callback'], params)}
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.post(call['callback'], data=dict(params), headers=headers)
            self.sim.webhooks.stats['twilio_callbacks_' + str(response.status_code)] += 1
        except httpx.HTTPError:
            self.sim.webhooks.stats['twilio_callback_errors'] += 1

    async def get(self, request: Request) -> Response:
        self.sim.requests['twilio_get'] += 1
        if self._auth(request) is None:
            return _twilio_error(401, 20003, 'Authentication Error - invalid username')
        call = self.calls.get(request.path_params['call_sid'])
        if call is None:
            return _twilio_error(404, 20404, 'The requested resource was not found')
        return JSONResponse(self.view(call, time.time()))

    async def list(self, request: Request) -> Response:
        self.sim.requests['twilio_list'] += 1
        if self._auth(request) is None:
            return _twilio_error(401, 20003, 'Authentication Error - invalid username')
        query = request.query_params
        now = time.time()
        found = [
            self.view(call, now)
            for call in self.calls.values()
            if call['to'] == query.get('To', call['to']) and call['from'] == query.get('From', call['from'])
        ]
        return JSONResponse({'calls': found, 'next_page_uri': None, 'page': 0, 'page_size': len(found)})

    async def records(self, _request: Request) -> Response:
        return JSONResponse(list(self.calls.values()))


def routes(sim: Simulator) -> list[Route]:
    twilio = TwilioSim(sim)
    base = '/2010-04-01/Accounts/{sid}'
    return [
        Route(f'{base}/Calls.json', twilio.create, methods=['POST']),
        Route(f'{base}/Calls.json', twilio.list, methods=['GET']),
        Route(base + '/Calls/{call_sid}.json', twilio.get, methods=['GET']),
        Route('/_sim/provider_calls/twilio', twilio.records, methods=['GET']),
    ]
