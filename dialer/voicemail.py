"""Did an answered call reach a machine? Read once from the call's messages after it ended.

Ultravox has no signal-level voicemail detection: the agent decides, and says so by invoking the
built-in ``leaveVoicemail`` tool. ``GET /api/calls/{id}/messages`` lists the call's messages
(``ultravox.v1.Message``): a ``MESSAGE_ROLE_TOOL_CALL`` message names the tool in ``toolName`` and
carries its arguments as JSON in ``text``; the ``MESSAGE_ROLE_TOOL_RESULT`` with the same
``invocationId`` reports how it went (``errorDetails`` set when it failed).

Only the derived flags leave this module: transcripts are personal data and are never stored in
Redis or logged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dialer.tools import LEAVE_VOICEMAIL


if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


@dataclass(frozen=True, slots=True)
class Voicemail:
    reached: bool
    #: A message was left (the tool ran with a non-empty message and did not fail).
    left: bool


def _arguments(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def detect_voicemail(messages: Iterable[Mapping[str, Any]], *, message_configured: bool = False) -> Voicemail:
    """Whether the agent used ``leaveVoicemail`` on the call, and whether a message was left.

    ``message_configured``: the campaign set the message through ``parameterOverrides`` (hidden from
    the model, so the invocation's arguments may not show it).
    """
    calls: dict[str, Mapping[str, Any]] = {}
    failed: set[str] = set()
    for message in messages:
        role, invocation = message.get('role'), str(message.get('invocationId') or '')
        if role == 'MESSAGE_ROLE_TOOL_CALL' and message.get('toolName') == LEAVE_VOICEMAIL:
            calls[invocation] = message
        elif role == 'MESSAGE_ROLE_TOOL_RESULT' and message.get('errorDetails'):
            failed.add(invocation)
    if not calls:
        return Voicemail(reached=False, left=False)
    left = any(
        invocation not in failed
        and (message_configured or str(_arguments(call.get('text')).get('message') or '').strip())
        for invocation, call in calls.items()
    )
    return Voicemail(reached=True, left=left)
