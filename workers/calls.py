"""Following a call to its end: the outcome, the retry decision, billing. Shared by the tracker
(polling) and the webhook receiver, and idempotent so both may report the same end."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from campaigns.policy import NeverCallable, NoTimezone, contact_zones, decide_retry
from dialer import constants as k
from dialer import metrics
from dialer.billing import Billing, answered_seconds, billing_of
from dialer.logs import masked_attempt
from dialer.outcomes import classify_call, end_reason_summary


if TYPE_CHECKING:
    from collections.abc import Mapping

    from dialer.models import CampaignConfig, Outcome
    from workers.runtime import Runtime


log = structlog.get_logger(__name__)


def tracking_member(attempt_id: str, call_id: str) -> str:
    return f'{attempt_id}|{call_id}'


def billing_fields(billing: Billing) -> dict[str, Any]:
    return {'sip': billing.sip_seconds, 'agent': billing.agent_seconds, 'bsrc': billing.source}


def _ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def retry_at(
    rt: Runtime, config: CampaignConfig, attempt_id: str, outcome: Outcome, *, final: bool = False
) -> int | None:
    """When the contact is next due after this attempt's ``outcome`` (None: no further attempt)."""
    name, number, attempt = k.parse_attempt_id(attempt_id)
    if final or outcome not in config.retry.retry_on:
        return None  # decided by the policy alone: spare the Redis round trips below
    async with rt.redis.pipeline(transaction=False) as pipe:
        pipe.hget(k.campaign_progress(name), number)
        pipe.hget(k.campaign_contacts(name), number)
        raw_progress, raw_contact = await pipe.execute()
    if raw_progress is None:
        return None
    progress = json.loads(raw_progress)
    # a requeued contact's budget counts only the attempts made since (``b``: attempts before it)
    made = attempt - int(progress.get('b') or 0)
    if made >= config.retry.max_attempts:
        return None
    contact = json.loads(raw_contact) if raw_contact else {}
    now = _ms_to_datetime(await rt.scripts.now_ms())
    try:
        zones = contact_zones(number, contact.get('z'), config.default_timezone)
        decision = decide_retry(
            config.retry,
            config.hours,
            zones,
            outcome,
            attempts_made=made,
            attempt_times=[_ms_to_datetime(ms) for ms in progress.get('ts') or []],
            now=now,
        )
    except (NoTimezone, NeverCallable) as exc:
        log.warning('retry_impossible', campaign=name, attempt=attempt, reason=str(exc))
        return None
    if decision.retry_at is None:
        return None
    return int(decision.retry_at.timestamp() * 1000)


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
        **billing_fields(billing),
    }
    retry = await retry_at(rt, config, attempt_id, outcome)
    recorded = await rt.scripts.finish(
        attempt_id,
        config.trunk,
        outcome.value,
        fields,
        retry_at_ms=retry,
        tracking_member=member,
        billing_final=billing.final,
        billing_poll_ms=int(rt.settings.poll_interval * 1000),
        breaker=rt.trunk_breaker,
    )
    if recorded:
        count_end(config, outcome, retried=retry is not None)
        if fields['dur']:
            metrics.CALL_DURATION_SECONDS.labels(trunk=config.trunk).observe(fields['dur'])
        if billing.final:
            count_billing(config, name, billing)
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
        billing_poll_ms=int(rt.settings.poll_interval * 1000),
    )
    if settled:
        count_billing(config, name, billing)
    return settled


def count_end(config: CampaignConfig, outcome: Outcome, *, retried: bool) -> None:
    """Counted only by the process whose script recorded the end, so never twice."""
    metrics.CALLS_ENDED.labels(trunk=config.trunk, campaign=config.name, outcome=outcome.value).inc()
    if retried:
        metrics.RETRIES_SCHEDULED.labels(campaign=config.name, outcome=outcome.value).inc()


def count_billing(config: CampaignConfig, name: str, billing: Billing) -> None:
    metrics.SIP_BILLED_SECONDS.labels(trunk=config.trunk, campaign=name).inc(billing.sip_seconds)
    metrics.AGENT_BILLED_SECONDS.labels(trunk=config.trunk, campaign=name).inc(billing.agent_seconds)
