"""Plivo's Call API as the simulator imitates it (direct mode; see ``dialer/providers/plivo.py`` for what
it relies on).

- ``POST /v1/Account/{auth_id}/Call/`` (JSON): Basic auth checked against
  ``provider_accounts['plivo']`` (``auth_id``, ``auth_token``); fields outside Make a call's documented
  set refused with Plivo's error shape (400, ``{"api_id", "error"}``); 429 over
  ``provider_calls_per_second``. Answers 201 ``{"message": "call fired", "request_uuid"}``; the call's
  ``call_uuid`` is the same id.
- When the played outcome answers, the simulator POSTs (V3-signed) to ``answer_url`` at the answer
  moment, reads the ``<Stream>`` of the XML it gets and joins the Ultravox call with that joinUrl
  (as the Twilio simulation does with TwiML). An answer that is not a Stream to a waiting call hangs
  the leg up (counted as ``plivo_answer_failed``). A voicemail is a call a machine answered: with
  ``machine_detection = "hangup"`` Plivo hangs it up ("Machine Detected") before fetching the XML.
- The played outcome becomes the CDR's ``hangup_cause_name`` / ``hangup_cause_code``; ``ring_url``
  and ``hangup_url`` get signed form posts (both lost together with ``provider_callback_loss_rate``;
  the answer URL never is: without it the call cannot go on).
- ``GET Call/{id}/?status=live`` / ``?status=queued`` / ``GET Call/{id}/`` (CDR), the matching lists
  (``GET Call/?status=live&from_number&to_number``, ``?status=queued``, CDRs by ``from_number``,
  ``to_number``, ``end_time__gte``), ``DELETE Call/{id}/`` and ``DELETE Request/{id}/``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import unescape

import httpx
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dialer.providers.plivo import NONCE_HEADER, SIGNATURE_HEADER, signature
from simulator import providers
from simulator.calls import SlidingWindow
from simulator.config import SimOutcome


if TYPE_CHECKING:
    from starlette.requests import Request

    from simulator.app import Simulator
    from simulator.calls import CallPlan

#: Make a call's documented parameters (Plivo "Make a call").
PLIVO_FIELDS = frozenset(
    {
        'from', 'to', 'answer_url', 'answer_method', 'ring_url', 'ring_method', 'hangup_url', 'hangup_method',
        'fallback_url', 'fallback_method', 'caller_name', 'send_digits', 'send_on_preanswer', 'time_limit',
        'hangup_on_ring', 'machine_detection', 'machine_detection_time', 'machine_detection_url',
        'machine_detection_method', 'sip_headers', 'ring_timeout', 'parent_call_uuid', 'error_if_parent_not_found',
    }
)  # fmt: skip
#: played outcome -> (hang-up cause name, code) in the CDR (Plivo "Hangup causes"; the error ones are
#: the simulator's pick among Plivo's failure causes)
PLIVO_CAUSE: dict[SimOutcome, tuple[str, int | None]] = {
    SimOutcome.ANSWERED: ('Normal Hangup', 4000),
    SimOutcome.NO_ANSWER: ('No Answer', 3020),
    SimOutcome.BUSY: ('Busy Line', 3000),
    SimOutcome.INVALID_NUMBER: ('Invalid Destination Address', 2000),
    SimOutcome.REJECTED: ('Rejected', 3010),
    SimOutcome.UNAVAILABLE: ('Ring Timeout Reached', None),
    SimOutcome.CONNECTION_ERROR: ('Network Error', None),
    SimOutcome.SYSTEM_ERROR: ('Internal Error', None),
}
MACHINE = ('Machine Detected', None)
_STREAM = re.compile(r'<Stream\b[^>]*>\s*([^<\s]+)\s*</Stream>')
_E164_DIGITS = re.compile(r'^[1-9][0-9]{6,14}$')


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({'api_id': str(uuid.uuid4()), 'error': message}, status_code=status)


def _refusal(body: Any) -> JSONResponse | None:
    """Plivo's 400 for a Make a call body it would not take, else None."""
    if not isinstance(body, dict):
        return _error(400, 'invalid JSON body')
    unknown = sorted(set(body) - PLIVO_FIELDS)
    if unknown:
        return _error(400, f'unknown parameter: {unknown[0]}')
    to, from_ = str(body.get('to') or ''), str(body.get('from') or '')
    if (
        not _E164_DIGITS.match(to.lstrip('+'))
        or not _E164_DIGITS.match(from_.lstrip('+'))
        or not body.get('answer_url')
    ):
        return _error(400, 'from, to and answer_url are required')
    return None


def _stamp(when: float | None) -> str | None:
    return None if when is None else datetime.fromtimestamp(when, UTC).isoformat(sep=' ', timespec='seconds')


class PlivoSim:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.calls: dict[str, dict[str, Any]] = {}
        self.window = SlidingWindow(1.0)
        self.tasks: set[asyncio.Task[None]] = set()

    def _account(self) -> dict[str, str]:
        return self.sim.config.provider_accounts.get('plivo') or {}

    def _authorized(self, request: Request) -> bool:
        account = self._account()
        try:
            scheme, encoded = request.headers.get('authorization', '').split(' ', 1)
            user, secret = base64.b64decode(encoded).decode().split(':', 1)
        except ValueError:
            return False
        return (
            scheme == 'Basic'
            and request.path_params['auth_id'] == account.get('auth_id') == user
            and secret == account.get('auth_token')
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def create(self, request: Request) -> Response:
        self.sim.requests['plivo_create'] += 1
        if not self._authorized(request):
            return _error(401, 'authentication failed')
        try:
            body = await request.json()
        except ValueError:
            body = None
        refused = _refusal(body)
        if refused is not None:
            return refused
        to, from_ = str(body['to']), str(body['from'])
        now = time.time()
        if self.window.retry_after(now, self.sim.config.provider_calls_per_second) is not None:
            self.sim.rejected['plivo_429'] += 1
            return _error(429, 'too many requests')
        self.window.add(now)
        call = self._plan(body, '+' + to.lstrip('+'), '+' + from_.lstrip('+'), now)
        self.calls[call['uuid']] = call
        if call['callback_lost']:
            self.sim.faults['plivo_callback_lost'] += 1
        self._spawn(self._run(call))
        if self.sim.config.provider_create_delay:
            # the call is placed already; a client that dies while waiting must find it, not place another
            self.sim.faults['provider_slow'] += 1
            await asyncio.sleep(self.sim.config.provider_create_delay)
        return JSONResponse(
            {'api_id': str(uuid.uuid4()), 'message': 'call fired', 'request_uuid': call['uuid']}, status_code=201
        )

    def _plan(self, body: dict[str, Any], to: str, from_: str, now: float) -> dict[str, Any]:
        """The leg's fate, drawn as the SIP and Twilio simulations draw it (same planner, same seed)."""
        planner = self.sim.store.planner
        sim_config = self.sim.config
        # the Ultravox call is found by the contact's number among calls still waiting for a stream
        rng_plan = self._waiting_plan(to)
        metadata = rng_plan.metadata if rng_plan else {}
        rng = planner.rng_for(sim_config.seed, to, metadata, rng_plan.seq if rng_plan else 0)
        chosen = planner.outcome(sim_config, rng, to)
        machine = chosen is SimOutcome.VOICEMAIL
        chosen = SimOutcome.ANSWERED if machine else chosen
        base = rng_plan.base if rng_plan else {}
        outcome, joined, ended, talk, _ = planner.timings(sim_config, rng, chosen, base)
        scale = sim_config.time_scale
        hang_machine = machine and body.get('machine_detection') == 'hangup'
        answered = now + (joined or 0.0) * scale if outcome is SimOutcome.ANSWERED else None
        end = now + ended * scale
        if hang_machine and answered is not None:
            end = answered + 3 * scale  # detection time, then Plivo hangs up
        name, code = MACHINE if hang_machine else PLIVO_CAUSE[outcome]
        lost = self.sim.rng.random() < sim_config.provider_callback_loss_rate
        return {
            'uuid': str(uuid.uuid4()),
            'to': to,
            'from': from_,
            'created': now,
            'answered': answered,
            'ended': end,
            'talk': talk,
            'final': name,
            'code': code,
            'outcome': 'voicemail' if hang_machine else str(outcome),
            'machine': machine,
            'hang_machine': hang_machine,
            'body': body,
            'attempt_id': metadata.get('attempt_id'),
            'call_id': rng_plan.call_id if rng_plan else None,
            'callback_lost': lost and bool(body.get('hangup_url')),
            'hung_up': False,
        }

    def _waiting_plan(self, to: str) -> CallPlan | None:
        """The Ultravox call (provider medium, waiting for a stream) of the contact this leg dials."""
        waiting = [
            plan
            for plan in self.sim.store.by_id.values()
            if plan.medium == 'plivo' and plan.base.get('joinUrl') and plan.joined_sim is None and not plan.deleted
            and str((plan.metadata or {}).get('attempt_id', '')).split(':')[1:2] == [to]
        ]  # fmt: skip
        return max(waiting, key=lambda plan: plan.created) if waiting else None

    async def _run(self, call: dict[str, Any]) -> None:
        """Ring, answer (fetch the XML and join the Ultravox call), hang up, with the callbacks on the way."""
        body = call['body']
        if not call['callback_lost']:
            await self._post(call, body.get('ring_url'), 'ringing')
        if call['answered'] is not None and not call['hang_machine']:
            await asyncio.sleep(max(0.0, call['answered'] - time.time()))
            if not call['hung_up'] and not await self._answer(call):
                self.sim.faults['plivo_answer_failed'] += 1
                # Plivo hangs up a call whose answer URL gave no XML it could run (the simulator's cause name)
                call['ended'], call['final'], call['code'] = time.time(), 'Answer URL Failed', None
        await asyncio.sleep(max(0.0, call['ended'] - time.time()))
        if not call['callback_lost']:
            await self._post(call, body.get('hangup_url'), 'completed')

    async def _answer(self, call: dict[str, Any]) -> bool:
        """POST the answer URL; join the Ultravox call with the joinUrl of the XML's <Stream>."""
        params = self._params(call, 'in-progress')
        if call['machine'] and call['body'].get('machine_detection'):
            params.append(('Machine', 'true'))
        text = await self._send(call['body']['answer_url'], params)
        match = _STREAM.search(text or '')
        join_url = unescape(match.group(1)) if match else ''
        plan = next((p for p in self.sim.store.by_id.values() if join_url and p.base.get('joinUrl') == join_url), None)
        if plan is None or plan.deleted or call['hung_up']:
            return False
        providers.join(plan, SimOutcome.ANSWERED, 0.0, call['talk'], time.time())
        plan.user, plan.to = call['to'], call['to']
        return True

    def _params(self, call: dict[str, Any], status: str) -> list[tuple[str, str]]:
        return [
            ('CallUUID', call['uuid']),
            ('RequestUUID', call['uuid']),
            ('ALegUUID', call['uuid']),
            ('ALegRequestUUID', call['uuid']),
            ('From', call['from'].lstrip('+')),
            ('To', call['to'].lstrip('+')),
            ('Direction', 'outbound'),
            ('CallStatus', status),
        ]

    async def _post(self, call: dict[str, Any], url: Any, status: str) -> None:
        if not url:
            return
        params = self._params(call, status)
        if status == 'completed':
            params += [('HangupCauseName', call['final']), ('HangupCause', call['final'])]
            if call['code'] is not None:
                params.append(('HangupCauseCode', str(call['code'])))
        await self._send(str(url), params)

    async def _send(self, url: str, params: list[tuple[str, str]]) -> str | None:
        """A V3-signed form POST, as Plivo sends to answer, ring and hangup URLs; the answer's text."""
        nonce = uuid.uuid4().hex
        token = self._account().get('auth_token', '')
        headers = {SIGNATURE_HEADER: signature(token, url, params, nonce), NONCE_HEADER: nonce}
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.post(url, data=dict(params), headers=headers)
        except httpx.HTTPError:
            self.sim.webhooks.stats['plivo_callback_errors'] += 1
            return None
        self.sim.webhooks.stats[f'plivo_callbacks_{response.status_code}'] += 1
        return response.text if response.is_success else None

    # --- reads ---------------------------------------------------------------------------------------

    def _state(self, call: dict[str, Any], now: float) -> str:
        if call['hung_up'] or now >= call['ended']:
            return 'ended'
        return 'in-progress' if call['answered'] is not None and now >= call['answered'] else 'ringing'

    def _live(self, call: dict[str, Any]) -> dict[str, Any]:
        return {
            'api_id': str(uuid.uuid4()),
            'call_status': self._state(call, time.time()),
            'call_uuid': call['uuid'],
            'request_uuid': call['uuid'],
            'direction': 'outbound',
            'from': call['from'].lstrip('+'),
            'to': call['to'].lstrip('+'),
            'caller_name': '',
            'session_start': _stamp(call['created']),
        }

    def _cdr(self, call: dict[str, Any]) -> dict[str, Any]:
        answered = call['answered'] if call['answered'] is not None and call['answered'] < call['ended'] else None
        seconds = round((call['ended'] - answered) / self.sim.config.time_scale) if answered is not None else 0
        return {
            'api_id': str(uuid.uuid4()),
            'call_uuid': call['uuid'],
            'from_number': call['from'],
            'to_number': call['to'].lstrip('+'),
            'call_direction': 'outbound',
            'initiation_time': _stamp(call['created']),
            'answer_time': _stamp(answered),
            'end_time': _stamp(call['ended']),
            'call_duration': seconds,
            'bill_duration': seconds,
            'billed_duration': 60 * -(-seconds // 60),
            'total_rate': '0.01000',
            'total_amount': f'{0.01 * -(-seconds // 60):.5f}',
            'hangup_cause_name': call['final'],
            'hangup_cause_code': call['code'],
            'hangup_source': 'Call recipient' if answered else 'Carrier',
            'parent_call_uuid': None,
            'resource_uri': f'/v1/Account/{self._account().get("auth_id")}/Call/{call["uuid"]}/',
        }

    async def get(self, request: Request) -> Response:
        self.sim.requests['plivo_get'] += 1
        if not self._authorized(request):
            return _error(401, 'authentication failed')
        call = self.calls.get(request.path_params['call_uuid'])
        status = request.query_params.get('status')
        if call is None or status == 'queued':  # nothing waits in a dial queue here (429 over the limit)
            return _error(404, 'not found')
        over = self._state(call, time.time()) == 'ended'
        if status == 'live':
            return _error(404, 'not found') if over else JSONResponse(self._live(call))
        return JSONResponse(self._cdr(call)) if over else _error(404, 'not found')

    async def list(self, request: Request) -> Response:
        self.sim.requests['plivo_list'] += 1
        if not self._authorized(request):
            return _error(401, 'authentication failed')
        query = request.query_params
        now = time.time()
        to, from_ = query.get('to_number', '').lstrip('+'), query.get('from_number', '').lstrip('+')
        calls = [
            call
            for call in self.calls.values()
            if to in ('', call['to'].lstrip('+')) and from_ in ('', call['from'].lstrip('+'))
        ]
        if query.get('status') == 'queued':
            return JSONResponse({'api_id': str(uuid.uuid4()), 'calls': []})
        if query.get('status') == 'live':
            live = [call['uuid'] for call in calls if self._state(call, now) != 'ended']
            return JSONResponse({'api_id': str(uuid.uuid4()), 'calls': live})
        since = query.get('end_time__gte')
        ended = [self._cdr(call) for call in calls if self._state(call, now) == 'ended']
        objects = [cdr for cdr in ended if since is None or str(cdr['end_time']) >= since]
        limit = int(query.get('limit', '20'))
        meta = {'limit': limit, 'offset': 0, 'total_count': len(objects), 'next': None, 'previous': None}
        return JSONResponse({'api_id': str(uuid.uuid4()), 'meta': meta, 'objects': objects[:limit]})

    async def hang_up(self, request: Request) -> Response:
        self.sim.requests['plivo_delete'] += 1
        if not self._authorized(request):
            return _error(401, 'authentication failed')
        call = self.calls.get(request.path_params['call_uuid'])
        if call is None or self._state(call, time.time()) == 'ended':
            return _error(404, 'not found')
        call['hung_up'] = True
        call['ended'] = time.time()
        if call['answered'] is None or call['answered'] > call['ended']:
            call['final'], call['code'] = 'Canceled', 1000
        return Response(status_code=204)

    async def cancel_request(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(401, 'authentication failed')
        return _error(404, 'not found')  # nothing waits in a dial queue here

    async def records(self, _request: Request) -> Response:
        """Every leg: ``sid`` (its request/call uuid), ``final`` (the CDR's cause name), ``answered_by``
        (the AMD verdict the CDR tells: ``machine`` when Plivo hung a machine up), the played ``outcome``."""
        fields = ('to', 'from', 'final', 'code', 'outcome', 'attempt_id', 'call_id', 'machine')
        return JSONResponse(
            [
                {'sid': call['uuid'], 'answered_by': 'machine' if call['hang_machine'] else None}
                | {key: call[key] for key in fields}
                for call in self.calls.values()
            ]
        )


def routes(sim: Simulator) -> list[Route]:
    plivo = PlivoSim(sim)
    base = '/v1/Account/{auth_id}'
    return [
        Route(f'{base}/Call/', plivo.create, methods=['POST']),
        Route(f'{base}/Call/', plivo.list, methods=['GET']),
        Route(base + '/Call/{call_uuid}/', plivo.get, methods=['GET']),
        Route(base + '/Call/{call_uuid}/', plivo.hang_up, methods=['DELETE']),
        Route(base + '/Request/{request_uuid}/', plivo.cancel_request, methods=['DELETE']),
        Route('/_sim/provider_calls/plivo', plivo.records, methods=['GET']),
    ]
