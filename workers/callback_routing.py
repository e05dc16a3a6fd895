"""Who answers a call-back: the index lookup and the policy, shared by the SIP fallback handler and the
provider inbound webhooks. Two Redis round trips: the index entry with the DNC check (and the replay
mark), then ``callback_route.lua``, which records the inbound call as it decides. No Ultravox request.

| caller                                                   | answer                                          |
|----------------------------------------------------------|-------------------------------------------------|
| on the DNC list                                          | ``DIALER_CALLBACK_DNC_AGENT``, else reject      |
| dialled by a campaign (index entry), campaign takes it   | the campaign's call-back agent, with context    |
| unknown, no valid caller id, campaign gone or ended long | ``DIALER_CALLBACK_DEFAULT_AGENT``, else reject  |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from campaigns.lifecycle import UnknownCampaignError
from dialer import constants as k
from dialer.callbacks import (
    INBOUND,
    IndexEntry,
    callback_answer,
    callback_context,
    callback_metadata,
    new_callback_id,
    reject,
    start_agent_call,
)
from dialer.models import ContactRecord


if TYPE_CHECKING:
    from dialer.callback_scripts import CallbackScripts
    from dialer.models import CampaignConfig
    from workers.runtime import Runtime


log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer in the fallback handler's terms (``startAgentCall`` / ``startCall`` / ``reject``)."""

    verdict: str  # a bounded metric label
    answer: dict[str, Any]
    config: CampaignConfig | None = None
    callback_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def agent_id(self) -> str | None:
        start = self.answer.get('startAgentCall')
        return str(start['agentId']) if start else None


class Replayed(Exception):  # noqa: N818 - the verdict it is
    """The same signed request was seen before (within its freshness window)."""


def _fallback(rt: Runtime, why: str) -> Decision:
    """A caller no campaign takes: the default agent, or a reject."""
    settings = rt.settings
    metadata = {'direction': INBOUND}
    if settings.callback_default_agent:
        answer = start_agent_call(settings.callback_default_agent, {'callback': False}, metadata)
        return Decision(f'{why}_default', answer, metadata=metadata)
    return Decision(f'{why}_rejected', reject(settings.callback_reject_code, 'no campaign called this number'))


def _opted_out(rt: Runtime) -> Decision:
    settings = rt.settings
    metadata = {'direction': INBOUND, 'opted_out': 'true'}
    if settings.callback_dnc_agent:
        answer = start_agent_call(settings.callback_dnc_agent, {'callback': True, 'opted_out': True}, metadata)
        return Decision('dnc_agent', answer, metadata=metadata)
    return Decision('dnc_rejected', reject(settings.callback_reject_code, 'the caller is on the do-not-call list'))


async def decide(
    rt: Runtime, scripts: CallbackScripts, number: str | None, *, seen: str | None = None, seen_ms: int | None = None
) -> Decision:
    """Route a call-back from ``number`` (E.164, or None when the caller id is no valid number).

    ``seen``: the replay key of the request (marked ``1`` for ``seen_ms``, default twice the webhook
    max age); a request seen before raises ``Replayed``.
    """
    settings = rt.settings
    async with rt.redis.pipeline(transaction=False) as pipe:
        if seen is not None:
            pipe.set(seen, '1', nx=True, px=seen_ms or int(settings.webhook_max_age * 2000))
        if number is not None:
            pipe.get(k.callback(number))
            pipe.sismember(k.DNC, number)
        results = await pipe.execute()
    if seen is not None and not results.pop(0):
        raise Replayed
    if number is None:
        return _fallback(rt, 'no_caller_id')
    raw, dnc = results
    if dnc:
        return _opted_out(rt)
    entry = IndexEntry.parse(raw)
    if entry is None:
        return _fallback(rt, 'unknown')
    try:
        config = await rt.configs.get(entry.campaign)
    except (UnknownCampaignError, ValueError):
        return _fallback(rt, 'gone')
    callback_id = new_callback_id()
    routed = await scripts.route(
        config.name,
        number,
        callback_id,
        dialled_ms=entry.dialled_ms,
        window_ms=int(config.callbacks.route_after_end * 1000),
        first_poll_ms=int(settings.poll_initial * 1000),
        attempt_id=entry.attempt_id,
    )
    if routed.verdict != 'route':
        return _fallback(rt, routed.verdict)
    contact = ContactRecord.model_validate_json(routed.contact or '{"i": "?", "l": 0}')
    progress = routed.progress or {}
    last_outcome = progress.get('lo') or progress.get('o')
    context = callback_context(config, contact, last_outcome, entry.dialled_ms)
    metadata = callback_metadata(config.name, contact.contact_id, callback_id)
    log.info('callback_routed', campaign=config.name, contact_id=contact.contact_id, callback_id=callback_id)
    return Decision('routed', callback_answer(config, context, metadata), config, callback_id, metadata)
