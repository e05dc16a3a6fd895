"""Following a call to its end: the outcome, the retry decision, billing. Shared by the tracker
(polling) and the webhook receiver, and idempotent so both may report the same end."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from campaigns.policy import NeverCallable, NoTimezone, contact_zones, decide_callback, decide_retry
from dialer import constants as k
from dialer import metrics
from dialer.billing import Billing, answered_seconds, billing_of, medium_kind
from dialer.logs import masked_attempt
from dialer.models import Outcome, attempts_counted
from dialer.outcomes import classify_call, end_reason_summary
from dialer.scripts import CallbackAsked
from dialer.ultravox import RequestRejected
from dialer.voicemail import detect_voicemail


if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from campaigns.policy import RetryDecision
    from dialer.models import CampaignConfig
    from workers.runtime import Runtime


log = structlog.get_logger(__name__)


def tracking_member(attempt_id: str, call_id: str) -> str:
    return f'{attempt_id}|{call_id}'


def billing_fields(billing: Billing) -> dict[str, Any]:
    return {'sip': billing.sip_seconds, 'agent': billing.agent_seconds, 'bsrc': billing.source}


def _ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def _retry_at(
    rt: Runtime, config: CampaignConfig, attempt_id: str, outcome: Outcome, *, final: bool = False
) -> int | None:
    """When the contact is next due after this attempt's ``outcome`` (None: no further attempt).

    An answered call is never retried for its outcome; only its disposition may ask for a call back,
    which :func:`finish_attempt` learns from the finish script itself.
    """
    if final or outcome is Outcome.ANSWERED:
        return None
    if outcome not in config.retry.retry_on:
        return None  # decided by the policy alone: spare the Redis round trips below
    return await _decide(
        rt,
        config,
        attempt_id,
        lambda made, zones, times, now: decide_retry(
            config.retry, config.hours, zones, outcome, attempts_made=made, attempt_times=times, now=now
        ),
    )


async def finish_attempt(
    rt: Runtime,
    config: CampaignConfig,
    attempt_id: str,
    outcome: Outcome,
    fields: dict[str, Any],
    *,
    final: bool = False,
    **finish: Any,
) -> tuple[bool, int | None]:
    """Record the attempt's end with its retry decision: (recorded, retry at ms).

    The disposition step: for an answered call the finish script reads what the agent recorded on the
    attempt (the outcome tool). Only a disposition the policy calls back (``callback_requested``) costs
    a second step: the time the person asked for is scheduled and the end recorded with it.
    """
    retry = await _retry_at(rt, config, attempt_id, outcome, final=final)
    asked = config.retry.retry_dispositions if outcome is Outcome.ANSWERED and not final else ()
    finished = await rt.scripts.finish(
        attempt_id, config.trunk, outcome.value, fields, retry_at_ms=retry, callback_dispositions=asked, **finish
    )
    if isinstance(finished, CallbackAsked):
        retry = await _callback_at(rt, config, attempt_id, finished)
        finished = await rt.scripts.finish(attempt_id, config.trunk, outcome.value, fields, retry_at_ms=retry, **finish)
    return bool(finished), retry


async def _callback_at(rt: Runtime, config: CampaignConfig, attempt_id: str, asked: CallbackAsked) -> int | None:
    """When to call back a contact whose agent recorded ``asked`` (at the time the person asked for, if any)."""
    requested = _ms_to_datetime(asked.requested_ms) if asked.requested_ms is not None else None
    return await _decide(
        rt,
        config,
        attempt_id,
        lambda made, zones, times, now: decide_callback(
            config.retry, config.hours, zones, asked.disposition, requested, made, times, now
        ),
    )


async def _decide(
    rt: Runtime,
    config: CampaignConfig,
    attempt_id: str,
    decide: Callable[[int, tuple[str, ...], list[datetime], datetime], RetryDecision],
) -> int | None:
    """Run a retry decision with the contact's budget, zones, attempt times and Redis time."""
    name, number, attempt = k.parse_attempt_id(attempt_id)
    now_ms, raw_progress, raw_contact = await rt.scripts.retry_facts(name, number)
    if raw_progress is None:
        return None
    progress = json.loads(raw_progress)
    made = attempts_counted(progress, attempt)
    if made >= config.retry.max_attempts:
        return None
    contact = json.loads(raw_contact) if raw_contact else {}
    now = _ms_to_datetime(now_ms)
    try:
        zones = contact_zones(number, contact.get('z'), config.default_timezone)
        decision = decide(made, zones, [_ms_to_datetime(ms) for ms in progress.get('ts') or []], now)
    except (NoTimezone, NeverCallable) as exc:
        log.warning('retry_impossible', campaign=name, attempt=attempt, reason=str(exc))
        return None
    if decision.retry_at is None:
        return None
    return int(decision.retry_at.timestamp() * 1000)


async def voicemail_fields(rt: Runtime, config: CampaignConfig, call: Mapping[str, Any]) -> dict[str, Any]:
    """The voicemail step: an answered call's messages, fetched once at its end, say whether the agent
    used ``leaveVoicemail``. Only the flags are kept; the transcript is dropped here."""
    try:
        messages = await rt.ultravox.list_messages(str(call.get('callId')))
    except RequestRejected as exc:
        # no messages to read (a deleted call, an old API): the call stays answered
        log.warning('messages_unavailable', call_id=call.get('callId'), status=exc.status)
        return {}
    voicemail = detect_voicemail(messages, message_configured=config.voicemail_message is not None)
    return {'vm': 1, 'vml': int(voicemail.left)} if voicemail.reached else {}


async def record_end(rt: Runtime, attempt_id: str, call: Mapping[str, Any], member: str) -> bool:
    """Record that a call ended (from a poll or a ``call.ended`` webhook). True if it was news."""
    outcome = classify_call(call)
    if outcome is None:
        return False
    name = k.parse_attempt_id(attempt_id)[0]
    config = await rt.configs.get(name)
    billing = billing_of(call)
    fields = {
        'call': call.get('callId'),
        'jn': call.get('joined'),
        'en': call.get('ended'),
        'er': end_reason_summary(call),
        'dur': round(answered_seconds(call), 3),
        'sum': call.get('shortSummary') or call.get('summary'),
        'kind': medium_kind(call),
        **billing_fields(billing),
    }
    if outcome is Outcome.ANSWERED:
        fields.update(await voicemail_fields(rt, config, call))
        if fields.get('vm'):
            outcome = Outcome.VOICEMAIL
    recorded, retry = await finish_attempt(
        rt,
        config,
        attempt_id,
        outcome,
        fields,
        tracking_member=member,
        billing_final=billing.final,
        billing_poll_ms=rt.live_poll_ms,
        breaker=rt.trunk_breaker,
    )
    if recorded:
        count_end(config, outcome, retried=retry is not None)
        if outcome is Outcome.VOICEMAIL:
            metrics.VOICEMAILS.labels(campaign=name, left='true' if fields.get('vml') else 'false').inc()
        if fields['dur']:
            metrics.CALL_DURATION_SECONDS.labels(trunk=config.trunk).observe(fields['dur'])
        if billing.final:
            count_billing(config, name, billing, medium_kind(call))
        log.info('call_ended', attempt_id=masked_attempt(attempt_id), call_id=call.get('callId'), outcome=outcome)
    return recorded


async def record_billing(rt: Runtime, attempt_id: str, call: Mapping[str, Any], member: str) -> bool:
    """Settle an ended call's billing (``call.billed`` or a billing poll). True if it was news."""
    name = k.parse_attempt_id(attempt_id)[0]
    config = await rt.configs.get(name)
    billing = billing_of(call)
    settled = await rt.scripts.settle_billing(
        attempt_id,
        billing_fields(billing),
        tracking_member=member,
        final=billing.final,
        billing_wait_ms=int(rt.settings.billing_wait * 1000),
        billing_poll_ms=rt.live_poll_ms,
    )
    if settled:
        count_billing(config, name, billing, medium_kind(call))
    return settled


def count_end(config: CampaignConfig, outcome: Outcome, *, retried: bool) -> None:
    """Counted only by the process whose script recorded the end, so never twice."""
    metrics.CALLS_ENDED.labels(trunk=config.trunk, campaign=config.name, outcome=outcome.value).inc()
    if retried:
        metrics.RETRIES_SCHEDULED.labels(campaign=config.name, outcome=outcome.value).inc()


def count_billing(config: CampaignConfig, name: str, billing: Billing, kind: str = 'sip') -> None:
    metrics.SIP_BILLED_SECONDS.labels(trunk=config.trunk, campaign=name).inc(billing.sip_seconds)
    metrics.AGENT_BILLED_SECONDS.labels(trunk=config.trunk, campaign=name).inc(billing.agent_seconds)
    # by trunk kind (sip, twilio, telnyx, plivo), for the dashboard's minutes-per-kind panel
    metrics.BILLED_SECONDS_BY_KIND.labels(kind=kind, meter='agent').inc(billing.agent_seconds)
    metrics.BILLED_SECONDS_BY_KIND.labels(kind=kind, meter='sip').inc(billing.sip_seconds)
