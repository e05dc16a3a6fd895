"""The dial job: one arq job per claimed attempt, placing exactly one Ultravox call.

arq may run a job more than once (a crash, SIGTERM, a lost worker). The attempt is recorded as
'creating' in Redis before the request is sent; a rerun that finds that record never creates
blindly: it looks the call up by its ``attempt_id`` metadata first, and waits while it cannot tell.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from arq import Retry

from campaigns.policy import NeverCallable, NoTimezone, contact_zones, is_callable, next_callable
from dialer import constants as k
from dialer import metrics
from dialer.models import ContactRecord, Outcome
from dialer.scripts import job_ref_parts
from dialer.ultravox import RateLimited, RequestRejected, TransientError, UltravoxError, build_create_request
from workers.calls import count_end, retry_at


if TYPE_CHECKING:
    from dialer.models import CampaignConfig
    from dialer.trunks import Trunk
    from workers.runtime import Runtime


log = structlog.get_logger(__name__)

#: Creates tried in one job run before the attempt is handed back to wait for a healthier API.
CREATE_TRIES = 3


async def dial_attempt(ctx: dict[str, Any], job_ref: str) -> str:
    rt: Runtime = ctx['runtime']
    name, number, attempt = job_ref_parts(job_ref)
    attempt_id = k.attempt_id(name, number, attempt)
    config = await rt.configs.get(name)
    trunk = rt.trunks.get(config.trunk)
    structlog.contextvars.bind_contextvars(campaign=name, attempt=attempt, trunk=trunk.name)
    try:
        with metrics.CALLS_IN_FLIGHT.track_inprogress():
            return await _dial(rt, job_ref, attempt_id, config, trunk)
    finally:
        structlog.contextvars.unbind_contextvars('campaign', 'attempt', 'trunk', 'contact_id', 'call_id')


async def _dial(rt: Runtime, job_ref: str, attempt_id: str, config: CampaignConfig, trunk: Trunk) -> str:
    started = time.monotonic()
    begun = await rt.scripts.begin(job_ref, trunk.name, rt.slot_limits(trunk), rt.claim_lease_ms)
    if begun.verdict == 'wait':
        # an ambiguous create whose slot was lost: keep the record, try again when a slot frees
        raise Retry(defer=rt.settings.ambiguous_create_delay)
    if begun.verdict not in {'go', 'ambiguous'}:
        metrics.WORKER_JOBS.labels(result=begun.verdict).inc()
        if begun.verdict in {'paused', 'no_slot'}:
            metrics.ATTEMPTS_HANDED_BACK.labels(trunk=trunk.name, reason=begun.verdict).inc()
        return begun.verdict
    contact = ContactRecord.model_validate_json(begun.contact or '{"i": "?", "l": 0}')
    structlog.contextvars.bind_contextvars(contact_id=contact.contact_id)

    if begun.verdict == 'ambiguous':
        if await _resolve_ambiguous(rt, attempt_id, config, trunk, started):
            return 'created'
        # Ultravox has no such call: start over cleanly (begin re-checks pause, DNC and slots).
        await rt.scripts.forget(attempt_id)
        raise Retry(defer=0.05)

    _, number, attempt = k.parse_attempt_id(attempt_id)
    now = datetime.fromtimestamp(begun.now_ms / 1000, UTC)
    try:
        zones = contact_zones(number, contact.timezone, config.default_timezone)
        if not is_callable(zones, config.hours, now):
            opens = next_callable(zones, config.hours, now)
            await rt.scripts.hand_back(job_ref, trunk.name, due_at_ms=int(opens.timestamp() * 1000))
            metrics.ATTEMPTS_HANDED_BACK.labels(trunk=trunk.name, reason='hours').inc()
            return 'outside_hours'
    except (NoTimezone, NeverCallable) as exc:
        await _fail(rt, attempt_id, config, job_ref, f'not callable: {exc}', final=True)
        return 'failed'

    request = build_create_request(
        config, trunk, trunk.resolved_password(), number, contact, attempt_id=attempt_id, attempt=attempt
    )
    return await _create(rt, job_ref, attempt_id, config, trunk, request, started)


async def _create(
    rt: Runtime,
    job_ref: str,
    attempt_id: str,
    config: CampaignConfig,
    trunk: Trunk,
    request: Any,
    started: float,
) -> str:
    for tries in range(1, CREATE_TRIES + 1):
        if not await _wait_for_rate_token(rt, job_ref, attempt_id, trunk):
            return 'rate_wait'
        try:
            call = await rt.ultravox.create_call(request)
        except RateLimited as exc:
            # Ultravox is over the account's limits: slow the whole fleet, spend no attempt.
            await rt.scripts.hold(k.ACCOUNT_HOLD, int(exc.retry_after * 1000), f'ultravox {exc.status}')
            await rt.scripts.hand_back(job_ref, trunk.name, delay_ms=int(exc.retry_after * 1000))
            metrics.ATTEMPTS_HANDED_BACK.labels(trunk=trunk.name, reason='rate_limited').inc()
            metrics.LIMITER_WAITS.labels(trunk=trunk.name, limit='ultravox').inc()
            return 'rate_limited'
        except RequestRejected as exc:
            log.warning('create_rejected', status=exc.status, reason=exc.reason)
            await _fail(rt, attempt_id, config, job_ref, f'request rejected ({exc.status}): {exc.reason}', final=True)
            return 'rejected'
        except TransientError as exc:
            log.warning('create_failed', reason=exc.reason, maybe_created=exc.maybe_created, tries=tries)
            opened = await rt.record_create_failure()
            if exc.maybe_created:
                # The call may exist. Never create again before looking it up, and look it up only
                # once Ultravox has surely finished with the request.
                raise Retry(defer=rt.settings.ambiguous_create_delay) from None
            if opened or tries == CREATE_TRIES:
                delay = rt.settings.breaker_cooldown if opened else 2.0**tries
                await rt.scripts.hand_back(job_ref, trunk.name, delay_ms=int(delay * 1000))
                metrics.ATTEMPTS_HANDED_BACK.labels(trunk=trunk.name, reason='api_error').inc()
                return 'api_error'
            await asyncio.sleep(min(2.0**tries, 8) * random.uniform(0.5, 1.0))  # noqa: S311  jitter only
            continue
        await _record_created(rt, attempt_id, config, trunk, call, started)
        return 'created'
    return 'api_error'  # pragma: no cover - the loop always returns


async def _wait_for_rate_token(rt: Runtime, job_ref: str, attempt_id: str, trunk: Trunk) -> bool:
    """Take a creation token; short waits happen here, long ones hand the attempt back."""
    while True:
        wait_ms = await rt.take_rate_token(trunk, attempt_id)
        if wait_ms == 0:
            return True
        metrics.LIMITER_WAITS.labels(trunk=trunk.name, limit='rate').inc()
        if wait_ms > rt.settings.max_rate_wait * 1000:
            await rt.scripts.hand_back(job_ref, trunk.name, delay_ms=wait_ms)
            metrics.ATTEMPTS_HANDED_BACK.labels(trunk=trunk.name, reason='rate').inc()
            return False
        await asyncio.sleep(wait_ms / 1000)


async def _resolve_ambiguous(
    rt: Runtime, attempt_id: str, config: CampaignConfig, trunk: Trunk, started: float
) -> bool:
    """Look up a create whose response was lost. True if the call exists (and is now recorded)."""
    try:
        calls = await rt.ultravox.find_calls({'attempt_id': attempt_id})
    except UltravoxError as exc:
        log.warning('ambiguous_create_unresolved', reason=str(exc))
        raise Retry(defer=rt.settings.ambiguous_create_delay) from None
    if not calls:
        log.info('ambiguous_create_absent')
        return False
    if len(calls) > 1:
        log.error('duplicate_calls_for_attempt', calls=len(calls))
    await _record_created(rt, attempt_id, config, trunk, min(calls, key=lambda c: str(c.get('created'))), started)
    return True


async def _record_created(
    rt: Runtime, attempt_id: str, config: CampaignConfig, trunk: Trunk, call: dict[str, Any], started: float
) -> None:
    call_id = str(call['callId'])
    recorded = await rt.scripts.created(
        attempt_id,
        trunk.name,
        call_id,
        rt.slot_limits(trunk),
        lease_ms=rt.call_lease_ms(config),
        first_poll_ms=int(rt.settings.poll_initial * 1000),
    )
    if recorded:
        metrics.CALLS_CREATED.labels(trunk=trunk.name, campaign=config.name).inc()
        metrics.CALL_SETUP_SECONDS.labels(trunk=trunk.name).observe(time.monotonic() - started)
        metrics.WORKER_JOBS.labels(result='created').inc()
        log.info('call_created', call_id=call_id)


async def _fail(
    rt: Runtime, attempt_id: str, config: CampaignConfig, job_ref: str, reason: str, *, final: bool
) -> None:
    """The attempt failed without a call (e.g. Ultravox refused the request as invalid)."""
    retry = await retry_at(rt, config, attempt_id, Outcome.FAILED, final=final)
    recorded = await rt.scripts.finish(
        attempt_id,
        config.trunk,
        Outcome.FAILED.value,
        {'r': reason[:500], 'sip': 0, 'agent': 0, 'bsrc': 'computed'},
        retry_at_ms=retry,
        billing_final=True,
        billing_poll_ms=0,
        job_ref=job_ref,
    )
    if recorded:
        count_end(config, Outcome.FAILED, retried=retry is not None)
