"""Call-backs: a contact rings back the number we showed, and the campaign's agent answers (pure parts).

The dial path keeps an index from each dialled number to the campaign and contact that last called it
(``k.callback(number)``, written by ``send.lua`` right before the create). The fallback handler
(``workers/sip_fallback.py``) and the provider inbound webhooks (``workers/provider_inbound.py``)
normalise the caller id, read that entry and answer with what this module builds.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import phonenumbers

from dialer.prompts import fill_placeholders


if TYPE_CHECKING:
    from collections.abc import Mapping

    from dialer.models import CampaignConfig, ContactRecord


_E164 = re.compile(r'\+[1-9][0-9]{6,14}')
#: The user part of a ``sip:``/``sips:``/``tel:`` URI (``sip:+15551234567@host;params``).
_URI_USER = re.compile(r'^(?:sips?|tel):([^@;>]+)', re.IGNORECASE)
#: Visual separators people and carriers put in numbers.
_SEPARATORS = re.compile(r'[\s().\-/]')
#: A call-back id: also the tracking member's middle part and a metadata value, so a safe alphabet.
CALLBACK_ID = re.compile(r'cb-[0-9a-f]{16}')
INBOUND = 'inbound'


class BadRequest(ValueError):  # noqa: N818 - the verdict it is
    """The fallback handler's request is not what Ultravox documents; ``reason`` is a bounded label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """The documented body of a fallback-handler request (``callerId``, ``fromUri``, ...)."""

    caller_id: str | None
    from_display_name: str | None
    from_uri: str | None
    to_uri: str | None
    sip_headers: dict[str, str]


def parse_incoming(body: bytes) -> IncomingCall:
    """The request Ultravox POSTs for an unmatched INVITE; ``BadRequest`` when it is not that."""
    try:
        payload: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest('malformed') from None
    if not isinstance(payload, dict):
        raise BadRequest('malformed')
    fields: dict[str, str | None] = {}
    for name in ('callerId', 'fromDisplayName', 'fromUri', 'toUri'):
        value = payload.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > 512):
            raise BadRequest('malformed')
        fields[name] = value
    headers = payload.get('sipHeaders') or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise BadRequest('malformed')
    return IncomingCall(fields['callerId'], fields['fromDisplayName'], fields['fromUri'], fields['toUri'], headers)


@lru_cache(maxsize=65536)
def normalise_number(raw: str | None, region: str) -> str | None:
    """E.164 of a caller id as carriers present it (``+15551234567``, ``15551234567``, ``sip:+1555…@host``,
    ``tel:+1-555-…``), the way the loader wrote the contact's number; None if it is not a valid number."""
    if not raw:
        return None
    text = raw.strip()
    if '<' in text:  # a name-addr: ``"Bob" <sip:+1555…@host>``
        text = text.split('<', 1)[1].rstrip('>')
    match = _URI_USER.match(text)
    if match:
        text = match.group(1)
    text = _SEPARATORS.sub('', text)
    if text.startswith('00'):
        text = '+' + text[2:]
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        # a bare run of digits that is a whole number with its country code (how SIP users often look)
        if not text.isdigit():
            return None
        try:
            parsed = phonenumbers.parse('+' + text, None)
        except phonenumbers.NumberParseException:
            return None
    if not phonenumbers.is_valid_number(parsed):
        if text.isdigit():
            retry = normalise_number('+' + text, region)
            if retry is not None:
                return retry
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def caller_number(call: IncomingCall, region: str) -> str | None:
    """The caller's E.164 number: from ``callerId``, else from the user part of ``fromUri``."""
    return normalise_number(call.caller_id, region) or normalise_number(call.from_uri, region)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """Who last dialled a number: campaign, contact id, attempt id, caller id shown, Redis ms of the dial."""

    campaign: str
    contact_id: str
    attempt_id: str
    caller_id: str
    dialled_ms: int

    @classmethod
    def parse(cls, raw: str | bytes | None) -> IndexEntry | None:
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(str(data['c']), str(data['i']), str(data['a']), str(data['f']), int(data['t']))
        except (ValueError, KeyError, TypeError):
            return None


def new_callback_id() -> str:
    return f'cb-{secrets.token_hex(8)}'


def callback_metadata(campaign: str, contact_id: str, callback_id: str) -> dict[str, str]:
    """Metadata of an inbound call (strings only): it comes back on the call, in webhooks and in lookups."""
    return {'direction': INBOUND, 'campaign': campaign, 'contact_id': contact_id, 'callback_id': callback_id}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec='seconds')


def callback_context(
    config: CampaignConfig, contact: ContactRecord, last_outcome: str | None, dialled_ms: int
) -> dict[str, Any]:
    """Template context of a call-back: the contact's own, plus who we are and what happened last time."""
    context: dict[str, Any] = dict(contact.context)
    if contact.name is not None:
        context['name'] = contact.name
    context.update(
        callback=True,
        campaign=config.name,
        last_outcome=last_outcome or 'unknown',
        last_called_at=_iso(dialled_ms),
    )
    return context


def reject(code: int, message: str) -> dict[str, Any]:
    return {'reject': {'sipRejectCode': code, 'message': message}}


def start_agent_call(agent_id: str, context: Mapping[str, Any], metadata: Mapping[str, str]) -> dict[str, Any]:
    answer: dict[str, Any] = {'agentId': agent_id, 'metadata': dict(metadata)}
    if context:
        answer['templateContext'] = dict(context)
    # the caller is on the line already: the agent greets them (the outbound default lets the callee speak)
    answer['firstSpeakerSettings'] = {'agent': {}}
    return {'startAgentCall': answer}


def callback_answer(config: CampaignConfig, context: Mapping[str, Any], metadata: Mapping[str, str]) -> dict[str, Any]:
    """``startAgentCall`` with the campaign's call-back agent, or ``startCall`` with its filled prompt."""
    agent = config.callbacks.agent_id or config.agent_id
    if agent is not None:
        return start_agent_call(agent, context, metadata)
    # StartCallRequest has no templateContext: the values are filled into the prompt, as for outbound calls
    values = {key: str(value) for key, value in context.items()}
    prompt = fill_placeholders(config.system_prompt or '', values)
    return {'startCall': {'systemPrompt': prompt, 'metadata': dict(metadata), 'firstSpeakerSettings': {'agent': {}}}}


def is_e164(value: str) -> bool:
    return bool(_E164.fullmatch(value))
