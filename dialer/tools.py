"""The tools every call gets: the dialer's own outcome tool (an HTTP tool we host) and, for ad-hoc
campaigns, Ultravox's built-in ``leaveVoicemail`` and ``hangUp``.

What this relies on (Ultravox's tool docs, docs.ultravox.ai/tools, and ``openapi.yaml``):
- A call's tools are ``SelectedTool`` objects: ``{"toolName": "hangUp"}`` names a durable or built-in
  tool; ``{"temporaryTool": BaseToolDefinition}`` defines one for this call only. ``StartCallRequest``
  (ad-hoc prompt) takes them as ``selectedTools``; ``StartAgentCallRequest`` has no ``selectedTools``
  and adds tools to the agent's own with ``toolOverrides: {"add": [...]}``.
- Built-in tools (docs "Built-in Tools"): ``leaveVoicemail`` leaves a voicemail and ends the call
  (meant for outbound phone calls); ``hangUp`` ends the call. ``parameterOverrides`` sets a
  parameter's value and hides it from the model; we use it for leaveVoicemail's ``message``.
- ``BaseToolDefinition``: ``modelToolName`` (``^[a-zA-Z0-9_-]{1,64}$``), ``description``,
  ``dynamicParameters`` (set by the model: ``name``, ``location``, JSON ``schema``, ``required``),
  ``staticParameters`` (``name``, ``location``, ``value``: added on every invocation, never shown to
  the model), ``automaticParameters`` (``knownValue`` such as ``KNOWN_PARAM_CALL_ID``: the current
  call's id), ``timeout`` (a duration string; the conversation is frozen while a tool runs), and
  ``http: {baseUrlPattern, httpMethod}``. Parameter locations are ``PARAMETER_LOCATION_BODY`` /
  ``_HEADER`` / ``_QUERY`` / ``_PATH``; body parameters form one JSON object.

The outcome tool is authenticated per call: a static header carries an HMAC of the attempt id under
``DIALER_TOOL_SECRET`` (never the API key), so a token opens exactly one attempt and a leaked token
is worth one conversation. The attempt id travels as a static body parameter, the call id as the
automatic ``KNOWN_PARAM_CALL_ID``; the model only sets the disposition, notes and call-back time.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from pydantic import SecretStr

    from dialer.models import CampaignConfig
    from dialer.settings import Settings


#: The model-facing name of the dialer's tool, and where ``dialer webhooks`` serves it.
OUTCOME_TOOL = 'recordOutcome'
TOOL_PATH = '/tools/outcome'
TOKEN_HEADER = 'X-Dialer-Tool-Token'  # noqa: S105 - a header name, not a secret
#: Body parameters of the outcome tool (the first three set by the model).
PARAM_DISPOSITION = 'disposition'
PARAM_NOTES = 'notes'
PARAM_CALLBACK_AT = 'callbackAt'
PARAM_ATTEMPT = 'attemptId'
PARAM_CALL = 'callId'
NOTES_LIMIT = 500
#: Ultravox's built-in tools an ad-hoc campaign gets (see the module docstring).
LEAVE_VOICEMAIL = 'leaveVoicemail'
HANG_UP = 'hangUp'
#: The conversation waits for the tool: the endpoint answers in milliseconds, this is a bound.
TOOL_TIMEOUT = '5s'
_BODY = 'PARAMETER_LOCATION_BODY'


@dataclass(frozen=True)
class ToolEndpoint:
    """Where the outcome tool is served and the key of its per-call tokens."""

    base_url: str
    secret: SecretStr

    @classmethod
    def from_settings(cls, settings: Settings) -> ToolEndpoint | None:
        if not settings.tool_base_url or settings.tool_secret is None:
            return None
        return cls(settings.tool_base_url.rstrip('/'), settings.tool_secret)

    @property
    def url(self) -> str:
        return self.base_url + TOOL_PATH


def tool_token(secret: SecretStr, attempt_id: str) -> str:
    """The token that authorises outcome-tool calls for one attempt (hex HMAC-SHA256)."""
    message = b'dialer-outcome-tool\0' + attempt_id.encode()
    return hmac.new(secret.get_secret_value().encode(), message, hashlib.sha256).hexdigest()


def token_matches(secret: SecretStr, attempt_id: str, token: str | None) -> bool:
    """Constant-time check of a presented token against the attempt it claims."""
    if not token:
        return False
    return hmac.compare_digest(tool_token(secret, attempt_id).encode(), token.encode())


def outcome_tool(config: CampaignConfig, attempt_id: str, endpoint: ToolEndpoint) -> dict[str, Any]:
    """The ``BaseToolDefinition`` of the dialer's outcome tool for one attempt."""
    choices = ', '.join(config.dispositions)
    return {
        'modelToolName': OUTCOME_TOOL,
        'description': (
            'Record what this conversation achieved, once the person has made it clear, before ending the '
            f'call. disposition is one of: {choices}. If the person asks never to be called again, record '
            'do_not_call at once. For callback_requested, give callbackAt when they named a time.'
        ),
        'dynamicParameters': [
            {
                'name': PARAM_DISPOSITION,
                'location': _BODY,
                'schema': {'type': 'string', 'enum': list(config.dispositions), 'description': 'The outcome.'},
                'required': True,
            },
            {
                'name': PARAM_NOTES,
                'location': _BODY,
                'schema': {'type': 'string', 'maxLength': NOTES_LIMIT, 'description': 'Short notes, no secrets.'},
                'required': False,
            },
            {
                'name': PARAM_CALLBACK_AT,
                'location': _BODY,
                'schema': {
                    'type': 'string',
                    'format': 'date-time',
                    'description': 'When to call back: ISO 8601 with a UTC offset, e.g. 2026-03-03T15:00:00-05:00.',
                },
                'required': False,
            },
        ],
        'staticParameters': [
            {
                'name': TOKEN_HEADER,
                'location': 'PARAMETER_LOCATION_HEADER',
                'value': tool_token(endpoint.secret, attempt_id),
            },
            {'name': PARAM_ATTEMPT, 'location': _BODY, 'value': attempt_id},
        ],
        'automaticParameters': [{'name': PARAM_CALL, 'location': _BODY, 'knownValue': 'KNOWN_PARAM_CALL_ID'}],
        'timeout': TOOL_TIMEOUT,
        'http': {'baseUrlPattern': endpoint.url, 'httpMethod': 'POST'},
    }


def selected_tools(config: CampaignConfig, attempt_id: str, endpoint: ToolEndpoint | None) -> list[dict[str, Any]]:
    """The ``SelectedTool`` list of one attempt's call (empty: nothing to add)."""
    tools: list[dict[str, Any]] = []
    if endpoint is not None:
        tools.append({'temporaryTool': outcome_tool(config, attempt_id, endpoint)})
    if config.system_prompt is not None:
        voicemail: dict[str, Any] = {'toolName': LEAVE_VOICEMAIL}
        if config.voicemail_message is not None:
            voicemail['parameterOverrides'] = {'message': config.voicemail_message}
        tools += [voicemail, {'toolName': HANG_UP}]
    return tools


def tool_fields(config: CampaignConfig, attempt_id: str, endpoint: ToolEndpoint | None) -> dict[str, Any]:
    """The create request's tool fields: ``selectedTools`` (ad-hoc) or ``toolOverrides.add`` (agent)."""
    tools = selected_tools(config, attempt_id, endpoint)
    if not tools:
        return {}
    return {'toolOverrides': {'add': tools}} if config.agent_id is not None else {'selectedTools': tools}
