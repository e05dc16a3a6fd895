"""Incoming calls: Ultravox's SIP configuration and its fallback handler, played by the simulator.

``GET``/``PATCH /api/sip`` keep the account's SIP configuration (validated against ``SipConfig`` /
``PatchedSipConfig``; a fallback handler given without secrets gets a generated one, as Ultravox
does). ``POST /_sim/incoming {"from": "+1555…", "to": "…", "displayName": "…", "headers": {…}}``
plays an INVITE that matches no agent allowance: the simulator POSTs the fallback-handler request
exactly as Ultravox documents it (``{callerId, fromDisplayName, fromUri, toUri, sipHeaders}``, signed
like its webhooks) and follows the answer: ``reject`` ends the INVITE with its code (603 by default);
``startAgentCall``/``startCall`` create the call (medium forced to incoming SIP, our template context
merged with the SIP context) and play it like any call. A handler that takes over 5 s fails the INVITE
with 504; a non-2xx, malformed or invalid answer (or an agent not in the account) with 502.
``GET /_sim/incoming`` lists what each incoming call led to.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator.config import SimOutcome
from simulator.schema import schema_errors
from simulator.webhooks import sign


if TYPE_CHECKING:
    from starlette.requests import Request

    from simulator.app import Simulator


#: Ultravox waits this long for the fallback handler (its SIP guide: "respond within 5 seconds").
HANDLER_DEADLINE = 5.0
ANSWERS = ('startAgentCall', 'startCall', 'reject')


class IncomingCalls:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.sip_config: dict[str, Any] = {
            'allowedCidrRanges': [],
            'allowAllAgents': False,
            'allowedAgents': [],
            'fallbackHandler': None,
            'domain': 'sim-account.sip.ultravox.ai',
        }
        self.played: list[dict[str, Any]] = []

    async def get_sip(self, request: Request) -> Response:
        if (denied := self.sim.auth_error(request)) is not None:
            return denied
        return JSONResponse(self.sip_config)

    async def patch_sip(self, request: Request) -> Response:
        if (denied := self.sim.auth_error(request)) is not None:
            return denied
        try:
            body = json.loads(await request.body())
        except ValueError:
            return self.sim.bad_request(['(body): not valid JSON'])
        errors = schema_errors(body, 'PatchedSipConfig', strict=True) if isinstance(body, dict) else ['(body): object']
        if errors:
            return self.sim.bad_request(errors)
        body.pop('domain', None)  # read-only
        handler = body.get('fallbackHandler')
        if isinstance(handler, dict) and not handler.get('secrets'):
            handler['secrets'] = [secrets.token_hex(32)]
        self.sip_config.update(body)
        return JSONResponse(self.sip_config)

    async def records(self, _request: Request) -> Response:
        return JSONResponse(self.played)

    async def incoming(self, request: Request) -> Response:
        """Play one incoming INVITE (control endpoint: no API key)."""
        try:
            invite = json.loads(await request.body())
            caller = str(invite['from'])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({'detail': 'expected {"from": "+1555…"}'}, status_code=400)
        played = await self._play(caller, invite)
        self.played.append(played)
        return JSONResponse(played)

    async def _play(self, caller: str, invite: dict[str, Any]) -> dict[str, Any]:
        handler = self.sip_config.get('fallbackHandler')
        if not handler:
            return {'from': caller, 'result': 'rejected', 'sipCode': 404, 'reason': 'no allowance matches'}
        request_body = {
            'callerId': caller,
            'fromDisplayName': invite.get('displayName', caller),
            'fromUri': f'sip:{caller}@caller.sim.example',
            'toUri': invite.get('to') or f'sip:callbacks@{self.sip_config["domain"]}',
            'sipHeaders': dict(invite.get('headers') or {}),
        }
        raw = json.dumps(request_body).encode()
        timestamp = datetime.now(UTC).isoformat()
        headers = {
            'Content-Type': 'application/json',
            'X-Ultravox-Webhook-Timestamp': timestamp,
            'X-Ultravox-Webhook-Signature': sign(raw, timestamp, list(handler['secrets'])),
        }
        failed = {'from': caller, 'result': 'failed'}
        try:
            async with httpx.AsyncClient(timeout=HANDLER_DEADLINE) as client:
                response = await client.post(handler['url'], content=raw, headers=headers)
        except httpx.TimeoutException:
            return {**failed, 'sipCode': 504, 'reason': 'the fallback handler timed out'}
        except httpx.HTTPError as exc:
            return {**failed, 'sipCode': 502, 'reason': f'the fallback handler is unreachable: {type(exc).__name__}'}
        if not response.is_success:
            return {**failed, 'sipCode': 502, 'reason': f'the fallback handler answered {response.status_code}'}
        try:
            answer = response.json()
        except ValueError:
            return {**failed, 'sipCode': 502, 'reason': 'the answer is not JSON'}
        return self._follow(caller, request_body, answer) or {
            **failed,
            'sipCode': 502,
            'reason': 'the answer is not exactly one valid startAgentCall, startCall or reject',
        }

    def _follow(  # noqa: PLR0911  one return per refusal reads best
        self, caller: str, request_body: dict[str, Any], answer: Any
    ) -> dict[str, Any] | None:
        """The call the answer leads to; None when the answer is malformed (the INVITE gets 502)."""
        if not isinstance(answer, dict):
            return None
        chosen = [key for key in ANSWERS if answer.get(key) is not None]
        if len(chosen) != 1 or not isinstance(answer[chosen[0]], dict):
            return None
        if chosen[0] == 'reject':
            rejection = answer['reject']
            code = rejection.get('sipRejectCode', 603)
            valid = isinstance(code, int) and 400 <= code <= 699
            if not valid or schema_errors(rejection, 'ultravox.v1.SipRejection'):
                return None
            return {'from': caller, 'result': 'rejected', 'sipCode': code, 'message': rejection.get('message')}
        body = dict(answer[chosen[0]])
        agent_id = body.pop('agentId', None) if chosen[0] == 'startAgentCall' else None
        if chosen[0] == 'startAgentCall':
            try:
                agent_id = str(uuid.UUID(str(agent_id)))
            except ValueError:
                return None
            known = self.sim.config.known_agents
            if known is not None and agent_id not in known:
                return None
        component = 'ultravox.v1.StartAgentCallRequest' if agent_id else 'ultravox.v1.StartCallRequest'
        if schema_errors(body, component):
            return None
        sip_context = {
            'caller_id': request_body['callerId'],
            'from_display_name': request_body['fromDisplayName'],
            'from_uri': request_body['fromUri'],
        }
        context = {**(body.get('templateContext') or {}), 'ultravox': {'sip': sip_context}}
        body['templateContext'] = context
        body['medium'] = {'sip': {'incoming': {}}}
        plan = self._create(caller, body, agent_id)
        return {
            'from': caller,
            'result': 'created',
            'callId': plan.call_id,
            'agentId': agent_id,
            'templateContext': context,
            'metadata': body.get('metadata') or {},
        }

    def _create(self, caller: str, body: dict[str, Any], agent_id: str | None) -> Any:
        sim, config, now = self.sim, self.sim.config, time.time()
        create_body = {key: value for key, value in body.items() if key != 'templateContext'}
        plan = sim.store.create(config, create_body, now, agent_id, (caller, 'incoming'))
        if caller not in config.forced_outcomes:
            # the caller is on the line already: the agent joins at once (forced_outcomes can say otherwise)
            talk = sim.rng.uniform(config.talk_min, config.talk_max)
            plan.outcome, plan.joined_sim, plan.talk_sim = SimOutcome.ANSWERED, 0.5, talk
            plan.ended_sim, plan.end_reason, plan.termination = 0.5 + talk, 'hangup', 'SIP_TERMINATION_NORMAL'
        sim.webhooks.schedule(plan)
        return plan

    def routes(self) -> list[Route]:
        return [
            Route('/api/sip', self.get_sip, methods=['GET']),
            Route('/api/sip', self.patch_sip, methods=['PATCH']),
            Route('/_sim/incoming', self.incoming, methods=['POST']),
            Route('/_sim/incoming', self.records, methods=['GET']),
        ]
