"""The agent's side of a simulated call: what it says (served as the call's messages), whether it met
a voicemail greeting (and invoked ``leaveVoicemail``), and the campaign's HTTP tool, invoked over real
HTTP exactly as Ultravox would: dynamic parameters from the model, static parameters and headers as
given, ``KNOWN_PARAM_CALL_ID`` filled with the call id.

An HTTP tool call freezes the conversation: the call is not seen to end until the tool has answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import httpx
import structlog
from starlette.responses import JSONResponse

from simulator.config import SimOutcome


if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.requests import Request

    from simulator.calls import CallPlan
    from simulator.config import SimulatorConfig


log = structlog.get_logger(__name__)

LEAVE_VOICEMAIL = 'leaveVoicemail'
DEFAULT_VOICEMAIL_MESSAGE = 'Hello, this is a courtesy call. Please call us back.'


def _message(role: str, text: str, index: int, **extra: Any) -> dict[str, Any]:
    return {'role': role, 'text': text, 'medium': 'MESSAGE_MEDIUM_VOICE', 'callStageMessageIndex': index, **extra}


_GREETING = (
    _message('MESSAGE_ROLE_USER', 'Hello?', 0),
    _message('MESSAGE_ROLE_AGENT', 'Hi, thanks for answering.', 1),
)


def _selected_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get('selectedTools') or ((body.get('toolOverrides') or {}).get('add')) or []
    return [tool for tool in tools if isinstance(tool, dict)]


def _http_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    for tool in _selected_tools(body):
        definition = tool.get('temporaryTool')
        if isinstance(definition, dict) and isinstance(definition.get('http'), dict):
            return definition
    return None


def _voicemail_message(body: dict[str, Any]) -> str:
    for tool in _selected_tools(body):
        if tool.get('toolName') == LEAVE_VOICEMAIL:
            return str((tool.get('parameterOverrides') or {}).get('message') or DEFAULT_VOICEMAIL_MESSAGE)
    return DEFAULT_VOICEMAIL_MESSAGE


def tool_request(definition: dict[str, Any], arguments: dict[str, Any], call_id: str) -> httpx.Request:
    """The HTTP request Ultravox sends for one invocation of an HTTP tool."""
    body: dict[str, Any] = dict(arguments)
    headers: dict[str, str] = {}
    for param in definition.get('staticParameters') or []:
        if param.get('location') == 'PARAMETER_LOCATION_HEADER':
            headers[str(param['name'])] = str(param.get('value'))
        else:
            body[str(param['name'])] = param.get('value')
    for param in definition.get('automaticParameters') or []:
        if param.get('knownValue') == 'KNOWN_PARAM_CALL_ID':
            body[str(param['name'])] = call_id
    http = definition['http']
    return httpx.Request(str(http.get('httpMethod') or 'POST'), str(http['baseUrlPattern']), json=body, headers=headers)


class Agent:
    """Conversations of every answered call, and the tool calls they make."""

    def __init__(self, get_config: Callable[[], SimulatorConfig]) -> None:
        self.get_config = get_config
        self.rng = random.Random(get_config().seed + 1)  # noqa: S311  simulation, not crypto
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.forced_used: Counter[str] = Counter()
        self.tasks: set[asyncio.Task[None]] = set()
        self.client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self.client = httpx.AsyncClient(timeout=10.0)

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.aclose()

    def _disposition(self, config: SimulatorConfig, user: str | None, choices: list[str]) -> str | None:
        if user is not None and user in config.forced_dispositions:
            forced, index = config.forced_dispositions[user], self.forced_used[user]
            self.forced_used[user] += 1
            if index < len(forced):
                return forced[index]
        if self.rng.random() >= config.tool_call_rate:
            return None
        mix = {name: weight for name, weight in config.disposition_mix.items() if name in choices and weight > 0}
        if not mix:
            return self.rng.choice(choices) if choices else None
        return self.rng.choices(list(mix), weights=list(mix.values()))[0]

    def plan(self, plan: CallPlan, body: dict[str, Any]) -> None:
        """Decide the conversation of a new call; schedule its tool call if it has the dialer's tool."""
        if plan.outcome is SimOutcome.VOICEMAIL:
            message = _voicemail_message(body)
            self.messages[plan.call_id] = [
                _message('MESSAGE_ROLE_USER', 'You have reached the voicemail of this number. Leave a message.', 0),
                _message(
                    'MESSAGE_ROLE_TOOL_CALL',
                    json.dumps({'message': message}),
                    1,
                    toolName=LEAVE_VOICEMAIL,
                    invocationId=f'{plan.call_id}-vm',
                ),
                _message(
                    'MESSAGE_ROLE_TOOL_RESULT',
                    'Voicemail left.',
                    2,
                    toolName=LEAVE_VOICEMAIL,
                    invocationId=f'{plan.call_id}-vm',
                ),
            ]
            return
        if plan.outcome is not SimOutcome.ANSWERED:
            return
        definition = _http_tool(body)
        if definition is None:
            return
        config = self.get_config()
        choices = [
            str(c)
            for p in definition.get('dynamicParameters') or []
            if p.get('name') == 'disposition'
            for c in (p.get('schema') or {}).get('enum') or []
        ]
        disposition = self._disposition(config, plan.user, choices)
        if disposition is None:
            return
        arguments: dict[str, Any] = {'disposition': disposition, 'notes': f'Simulated: {disposition}.'}
        if disposition == 'callback_requested' and config.callback_at:
            arguments['callbackAt'] = config.callback_at
        # kept only for calls that use a tool: a plain answered call's greeting costs no memory
        self.messages[plan.call_id] = list(_GREETING)
        plan.tool_pending = True
        task = asyncio.create_task(self._invoke(plan, definition, arguments, config))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _invoke(
        self, plan: CallPlan, definition: dict[str, Any], arguments: dict[str, Any], config: SimulatorConfig
    ) -> None:
        try:
            answered_at = (plan.joined_real or plan.created) + config.tool_delay * plan.time_scale
            await asyncio.sleep(max(0.0, answered_at - time.time()))
            request = tool_request(definition, arguments, plan.call_id)
            invocation = f'{plan.call_id}-tool'
            name = str(definition.get('modelToolName'))
            messages = self.messages.setdefault(plan.call_id, [])
            messages.append(
                _message(
                    'MESSAGE_ROLE_TOOL_CALL',
                    json.dumps(arguments),
                    len(messages),
                    toolName=name,
                    invocationId=invocation,
                )
            )
            status, text = 0, ''
            if self.client is not None:
                with contextlib.suppress(httpx.HTTPError):
                    response = await self.client.send(request)
                    status, text = response.status_code, response.text[:500]
            extra = {} if 200 <= status < 300 else {'errorDetails': f'HTTP {status}'}
            messages.append(
                _message(
                    'MESSAGE_ROLE_TOOL_RESULT', text, len(messages), toolName=name, invocationId=invocation, **extra
                )
            )
            plan.tool_calls.append({'arguments': arguments, 'status': status, 'returned': time.time()})
        finally:
            plan.tool_pending = False

    def page(self, request: Request, plan: CallPlan, default_size: int, max_size: int) -> JSONResponse:
        """``GET /api/calls/{id}/messages``: the messages so far, paged by an offset cursor."""
        messages: list[dict[str, Any]] = []
        if (plan.joined_real or 1e18) <= time.time():
            default = list(_GREETING) if plan.outcome is SimOutcome.ANSWERED else []
            messages = self.messages.get(plan.call_id, default)
        try:
            size = min(int(request.query_params.get('pageSize', default_size)), max_size)
            start = int(request.query_params.get('cursor') or 0)
        except ValueError:
            return JSONResponse({'detail': 'Invalid request: pageSize and cursor are integers'}, status_code=400)
        if size < 1 or start < 0:
            return JSONResponse({'detail': 'Invalid request: pageSize and cursor must be positive'}, status_code=400)
        end = start + size
        following = str(request.url.include_query_params(cursor=str(end))) if end < len(messages) else None
        previous = str(request.url.include_query_params(cursor=str(max(0, start - size)))) if start else None
        return JSONResponse(
            {'next': following, 'previous': previous, 'results': messages[start:end], 'total': len(messages)}
        )
