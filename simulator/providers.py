"""Telephony providers in the simulator: the Ultravox side of the provider media.

- ``medium.<provider>.outgoing {to, from, additionalParams}`` (Ultravox places the call with the
  account's stored credentials): refused unless the provider is in ``telephony_providers`` (the
  simulated ``/api/telephony_configs/<provider>``); the call is then played like a SIP call to ``to``,
  except that the Call carries no ``sipDetails`` (the phone leg is the provider's, and so are its
  status details): an unanswered call ends ``unjoined``.
- ``medium.<provider>: {}``: the Call gets a ``joinUrl`` and waits for a provider call to stream to
  it (``simulator/provider_api.py``); nobody joining, it ends ``unjoined`` after ``joinTimeout``.
- ``DELETE /api/calls/{id}`` ends a call at once and forgets it (later reads answer 404).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator.calls import DEFAULT_JOIN_TIMEOUT, parse_duration
from simulator.config import SimOutcome


if TYPE_CHECKING:
    from starlette.requests import Request

    from simulator.app import Simulator
    from simulator.calls import CallPlan
    from simulator.config import SimulatorConfig


PROVIDERS = ('twilio', 'telnyx', 'plivo')
_E164 = re.compile(r'^\+[1-9][0-9]{6,14}$')
_ERRORS = frozenset({SimOutcome.CONNECTION_ERROR, SimOutcome.SYSTEM_ERROR})


def provider_medium(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(provider, its medium object) when the request uses a provider medium."""
    medium = body.get('medium')
    if not isinstance(medium, dict):
        return None
    for provider in PROVIDERS:
        if isinstance(medium.get(provider), dict):
            return provider, medium[provider]
    return None


def medium_errors(config: SimulatorConfig, body: dict[str, Any]) -> list[str]:
    """What Ultravox would refuse about a provider medium (after the schema check)."""
    found = provider_medium(body)
    if found is None:
        return []
    provider, medium = found
    outgoing = medium.get('outgoing')
    if outgoing is None:
        return []
    where = f'medium.{provider}.outgoing'
    if provider not in config.telephony_providers:
        return [f'{where}: {provider} is not configured for this account (see /api/telephony_configs/{provider})']
    errors = [
        f'{where}.{field}: {value!r} is not an E.164 number'
        for field in ('to', 'from')
        if not isinstance(value := outgoing.get(field), str) or not _E164.match(value)
    ]
    params = outgoing.get('additionalParams')
    if params is not None and not isinstance(params, dict):
        errors.append(f'{where}.additionalParams: expected an object')
    return errors


def to_parts(body: dict[str, Any]) -> tuple[str, str] | None:
    """(callee number, provider) of a provider ``outgoing`` request: the planner's user and host."""
    found = provider_medium(body)
    if found is None or not isinstance(found[1].get('outgoing'), dict):
        return None
    return str(found[1]['outgoing']['to']), found[0]


def adapt_plan(plan: CallPlan, body: dict[str, Any], base_url: str) -> None:
    """Make a freshly planned call look like a provider-medium call."""
    found = provider_medium(body)
    if found is None:
        return
    provider, medium = found
    plan.medium = provider
    plan.host = provider
    plan.base['sipDetails'] = None
    if isinstance(medium.get('outgoing'), dict):
        plan.to = plan.user
        if plan.outcome is not SimOutcome.ANSWERED and plan.outcome not in _ERRORS:
            plan.end_reason = 'unjoined'
        return
    # waiting for a provider call to stream to the joinUrl (simulator/provider_api.py joins it)
    plan.base['joinUrl'] = f'{base_url.replace("http", "ws", 1).rstrip("/")}/_sim/join/{plan.call_id}'
    plan.outcome = SimOutcome.NO_ANSWER
    plan.joined_sim, plan.talk_sim = None, 0.0
    plan.ended_sim = parse_duration(body.get('joinTimeout'), DEFAULT_JOIN_TIMEOUT)
    plan.end_reason = 'unjoined'


def join(plan: CallPlan, outcome: SimOutcome, answered_after: float, talk: float, now: float) -> None:
    """A provider call streaming to ``plan``'s joinUrl was answered (or not) ``answered_after`` sim s from now."""
    if outcome is not SimOutcome.ANSWERED:
        return  # nobody joins: the call ends unjoined at its joinTimeout (or when deleted)
    offset = (now - plan.created) / plan.time_scale
    plan.outcome = SimOutcome.ANSWERED
    plan.joined_sim = offset + answered_after
    plan.talk_sim = talk
    plan.ended_sim = offset + answered_after + talk
    plan.end_reason = 'hangup'


class UltravoxProviderRoutes:
    """``/api/telephony_configs/<provider>`` and ``DELETE /api/calls/{id}``."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def telephony_config(self, request: Request) -> Response:
        self.sim.requests['telephony_config'] += 1
        if (denied := self.sim.auth_error(request)) is not None:
            return denied
        provider = request.path_params['provider']
        if provider not in PROVIDERS:
            return JSONResponse({'detail': 'Not found.'}, status_code=404)
        if provider not in self.sim.config.telephony_providers:
            return JSONResponse({'detail': f'No {provider} configuration.'}, status_code=404)
        return JSONResponse(
            {'callCreationAllowedAgentIds': [], 'callCreationAllowAllAgents': False, 'requestContextMapping': {}}
        )

    async def delete_call(self, request: Request) -> Response:
        self.sim.requests['delete_call'] += 1
        if (denied := self.sim.auth_error(request)) is not None:
            return denied
        plan = self.sim.store.by_id.pop(request.path_params['call_id'], None)
        if plan is None:
            return JSONResponse({'detail': 'Not found.'}, status_code=404)
        now = time.time()
        if now < plan.ended_real:
            # ended now: whoever was (or was about to be) on it is cut off
            offset = (now - plan.created) / plan.time_scale
            if plan.joined_sim is not None and plan.joined_sim < offset:
                plan.talk_sim = offset - plan.joined_sim
            else:
                plan.joined_sim, plan.talk_sim, plan.end_reason = None, 0.0, 'unjoined'
                plan.outcome = SimOutcome.NO_ANSWER
            plan.ended_sim = offset
        plan.deleted = True
        return Response(status_code=204)

    def routes(self) -> list[Route]:
        return [
            Route('/api/telephony_configs/{provider}', self.telephony_config, methods=['GET']),
            Route('/api/calls/{call_id}', self.delete_call, methods=['DELETE']),
        ]
