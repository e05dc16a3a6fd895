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
from dialer.trunks import TrunkConfigError
from dialer.ultravox import (
    AccountFault,
    AgentNotFound,
    RateLimited,
    RequestRejected,
    TransientError,
    UltravoxError,
    build_create_request,
)
from workers.calls import count_end, finish_attempt
from workers.faults import open_account_fault, open_campaign_fault
from workers.phone_leg import place_phone_leg


if TYPE_CHECKING:
    from dialer.models import CampaignConfig
    from dialer.trunks import Trunk
    from workers.arq_worker import RunningJob
    from workers.runtime import Runtime


log = structlog.get_logger(__name__)

#: Creates tried in one job run before the attempt is handed back to wait for a healthier API.
CREATE_TRIES = 3
#: Longest pause between two lookups of a quarantined ambiguous create.
LOOKUP_INTERVAL_CAP = 60.0
#: A campaign whose trunk left the trunks file gets its claimed attempts back after this long.
TRUNK_MISSING_DELAY_MS = 5_000


async def dial_attempt(ctx: dict[str, Any], job_ref: str) -> str:
    rt: Runtime = ctx['runtime']
    # the arq job is finished by the script that records its call (workers/arq_worker.py)
    job: RunningJob | None = ctx['running_job'](ctx['job_id']) if 'running_job' in ctx else None
    name, number, attempt = job_ref_parts(job_ref)
    attempt_id = k.attempt_id(name, number, attempt)
    config = await rt.configs.get(name)
    structlog.contextvars.bind_contextvars(campaign=name, attempt=attempt, trunk=config.trunk)
    try:
        with metrics.CALLS_IN_FLIGHT.track_inprogress():
            try:
                trunk = rt.trunks.get(config.trunk)
            except TrunkConfigError:
                return await _trunk_missing(rt, job_ref, attempt_id, config)
            return await _dial(rt, job_ref, attempt_id, config, trunk, job)
    finally:
        structlog.contextvars.unbind_contextvars('campaign', 'attempt', 'trunk', 'contact_id', 'call_id')


async def _trunk_missing(rt: Runtime, job_ref: str, attempt_id: str, config: CampaignConfig) -> str:
    """The campaign's trunk left the trunks file: give the attempt back unspent, unless its create
    may already have gone out (then it waits, recorded, until the trunk is back to resolve it)."""
    _, number, attempt = k.parse_attempt_id(attempt_id)
    if await rt.redis.hexists(k.campaign_attempts(config.name), f'{number}:{attempt}'):
        raise Retry(defer=rt.settings.ambiguous_create_delay)
    await rt.scripts.hand_back(job_ref, config.trunk, delay_ms=TRUNK_MISSING_DELAY_MS)
    metrics.ATTEMPTS_HANDED_BACK.labels(trunk=config.trunk, reason='trunk_missing').inc()
    log.warning('trunk_missing', reason='the trunk is not in the trunks file; attempt handed back')
    return 'trunk_missing'


async def _dial(
    rt: Runtime, job_ref: str, attempt_id: str, config: CampaignConfig, trunk: Trunk, job: RunningJob | None
) -> str:
    started = time.monotonic()
    begun = await rt.scripts.begin(
        job_ref, trunk.name, rt.slot_limits(trunk), rt.claim_lease_ms, rt.call_lease_ms(config)
    )
    if begun.verdict == 'wait':
        # an ambiguous create whose slot was lost: keep the record, try again when a slot frees
        raise Retry(defer=rt.settings.ambiguous_create_delay)
    if begun.verdict not in {'go', 'ambiguous'}:
        metrics.WORKER_JOBS.labels(result=begun.verdict).inc()
        if begun.verdict in {'paused', 'no_slot', 'held'}:
            metrics.ATTEMPTS_HANDED_BACK.labels(trunk=trunk.name, reason=begun.verdict).inc()
        return begun.verdict
    contact = ContactRecord.model_validate_json(begun.contact or '{"i": "?", "l": 0}')
    structlog.contextvars.bind_contextvars(contact_id=contact.contact_id)

    if begun.verdict == 'ambiguous':
        return await _resolve_ambiguous(rt, attempt_id, config, trunk, started, job)

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
        config,
        trunk,
        trunk.resolved_password(),
        number,
        contact,
        attempt_id=attempt_id,
        attempt=attempt,
        tools=rt.tool_endpoint,
    )
    return await _create(rt, job_ref, attempt_id, config, trunk, request, started, job)


async def _create(
    rt: Runtime,
    job_ref: str,
    attempt_id: str,
    config: CampaignConfig,
    trunk: Trunk,
    request: Any,
    started: float,
    job: RunningJob | None,
) -> str:
    for tries in range(1, CREATE_TRIES + 1):
        if not await _wait_for_rate_token(rt, job_ref, attempt_id, trunk):
            return 'rate_wait'
        verdict = await _clear_to_send(rt, attempt_id, trunk, request)
        if verdict != 'go':
            return await _not_sent(rt, job_ref, attempt_id, config, trunk, verdict)
        try:
            call = await rt.ultravox.create_call(request)
        except (RateLimited, AccountFault, AgentNotFound, RequestRejected) as exc:
            return await _refused(rt, job_ref, attempt_id, config, trunk, exc)
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
        await _record_created(rt, attempt_id, config, trunk, call, started, job)
        return 'created'
    return 'api_error'  # pragma: no cover - the loop always returns


async def _wait_for_rate_token(rt: Runtime, job_ref: str, attempt_id: str, trunk: Trunk) -> bool:
    """Reserve the creation slot once and sleep until it; waits past ``DIALER_MAX_RATE_WAIT`` hand the attempt back.

    The script answers with the send time of a reservation it has recorded, so one call suffices
    however long the wait; only a hold (nothing reserved) is asked about again.
    """
    while True:
        wait_ms = await rt.take_rate_token(trunk, attempt_id)
        if wait_ms == 0:
            return True
        metrics.LIMITER_WAITS.labels(trunk=trunk.name, limit='rate').inc()
        if wait_ms > 0:
            await asyncio.sleep(wait_ms / 1000)
            return True
        if -wait_ms > rt.settings.max_rate_wait * 1000:
            await rt.scripts.hand_back(job_ref, trunk.name, delay_ms=-wait_ms)
            metrics.ATTEMPTS_HANDED_BACK.labels(trunk=trunk.name, reason='rate').inc()
            return False
        await asyncio.sleep(-wait_ms / 1000)


async def _clear_to_send(rt: Runtime, attempt_id: str, trunk: Trunk, request: Any) -> str:
    """``send.lua``'s verdict, after waiting out the trunk's 1-s window (widened by the rate's safety
    margin) when it is full: a job that woke late for its reserved slot; the wait is about a second
    at most."""
    while True:
        verdict = await rt.scripts.send(
            attempt_id,
            contact_id=str(request.body.get('metadata', {}).get('contact_id', '')),
            caller_id=trunk.caller_id,
            callback_retention_ms=int(rt.settings.callback_retention * 1000),
            trunk=trunk.name,
            per_second=trunk.sends_per_window,
            window_ms=rt.send_window_ms,
        )
        if not verdict.startswith('wait:'):
            return verdict
        metrics.LIMITER_WAITS.labels(trunk=trunk.name, limit='window').inc()
        await asyncio.sleep(int(verdict.removeprefix('wait:')) / 1000)


async def _not_sent(
    rt: Runtime, job_ref: str, attempt_id: str, config: CampaignConfig, trunk: Trunk, verdict: str
) -> str:
    """Something changed while the job waited for its rate slot; nothing was sent."""
    if verdict == 'dnc':
        # opted out meanwhile (e.g. in another campaign's call): closed, never dialled
        await _close(rt, attempt_id, config, job_ref, Outcome.DNC, 'on the do-not-call list at dial time')
    elif verdict == 'closed':
        # the contact called back and was answered meanwhile (workers/callback_tracking.py)
        await _close(rt, attempt_id, config, job_ref, Outcome.CALLED_BACK, 'closed by an answered call-back')
    elif verdict in {'paused', 'cancelled'}:
        await rt.scripts.hand_back(job_ref, trunk.name)
        metrics.ATTEMPTS_HANDED_BACK.labels(trunk=trunk.name, reason=verdict).inc()
    metrics.WORKER_JOBS.labels(result=verdict).inc()
    return verdict


async def _refused(
    rt: Runtime,
    job_ref: str,
    attempt_id: str,
    config: CampaignConfig,
    trunk: Trunk,
    exc: RateLimited | AccountFault | AgentNotFound | RequestRejected,
) -> str:
    """Ultravox refused the create (no call exists). Only a refusal about *this* request fails it."""
    if isinstance(exc, RateLimited):
        # Ultravox is over the account's limits: slow the whole fleet, spend no attempt.
        await rt.scripts.hold(k.ACCOUNT_HOLD, int(exc.retry_after * 1000), f'ultravox {exc.status}')
        await rt.scripts.hand_back(job_ref, trunk.name, delay_ms=int(exc.retry_after * 1000))
        metrics.ATTEMPTS_HANDED_BACK.labels(trunk=trunk.name, reason='rate_limited').inc()
        metrics.LIMITER_WAITS.labels(trunk=trunk.name, limit='ultravox').inc()
        return 'rate_limited'
    if isinstance(exc, AccountFault):
        # The key or the account is unusable: hold the whole fleet, spend nothing.
        await open_account_fault(rt, exc)
        return await _held(rt, job_ref, trunk, 'account_fault')
    if isinstance(exc, AgentNotFound):
        # The campaign's agent is gone: hold this campaign until a probe finds the agent again.
        await open_campaign_fault(rt, config.name, 'agent_not_found', exc.reason)
        return await _held(rt, job_ref, trunk, 'agent_not_found')
    log.warning('create_rejected', status=exc.status, reason=exc.reason)
    await _fail(rt, attempt_id, config, job_ref, f'request rejected ({exc.status}): {exc.reason}', final=True)
    return 'rejected'


async def _held(rt: Runtime, job_ref: str, trunk: Trunk, reason: str) -> str:
    """Give the attempt back unspent; the claim script keeps it waiting while the fault lasts."""
    await rt.scripts.hand_back(job_ref, trunk.name)
    metrics.ATTEMPTS_HANDED_BACK.labels(trunk=trunk.name, reason=reason).inc()
    metrics.WORKER_JOBS.labels(result=reason).inc()
    return reason


async def _resolve_ambiguous(
    rt: Runtime, attempt_id: str, config: CampaignConfig, trunk: Trunk, started: float, job: RunningJob | None
) -> str:
    """Look up a create whose response was lost; never dial it again while it could still become a call.

    Ultravox may finish a create long after our request gave up, so a lookup that finds nothing is not
    the end: the attempt stays recorded as 'creating' (its slots held) and is looked up again with
    backoff until the quarantine (``DIALER_AMBIGUOUS_QUARANTINE``) has passed. Only then is it forgotten
    and dialled afresh.
    """
    settings = rt.settings
    try:
        calls = await rt.ultravox.find_calls({'attempt_id': attempt_id})
    except AccountFault as exc:
        await open_account_fault(rt, exc)
        raise Retry(defer=settings.fault_probe_interval) from None
    except UltravoxError as exc:
        log.warning('ambiguous_create_unresolved', reason=str(exc))
        raise Retry(defer=settings.ambiguous_create_delay) from None
    if calls:
        if len(calls) > 1:
            log.error('duplicate_calls_for_attempt', calls=len(calls))
        call = min(calls, key=lambda c: str(c.get('created')))
        await _record_created(rt, attempt_id, config, trunk, call, started, job)
        metrics.AMBIGUOUS_CREATES.labels(trunk=trunk.name, resolution='found').inc()
        log.info('ambiguous_create_found', call_id=call.get('callId'))
        return 'created'
    verdict = await rt.scripts.forget(attempt_id, int(settings.ambiguous_quarantine * 1000))
    if not verdict.forgotten:
        base = max(settings.ambiguous_create_delay, 0.5)
        pause = min(base * 2.0 ** max(verdict.lookups - 1, 0), LOOKUP_INTERVAL_CAP)
        pause = min(pause, max(verdict.quarantine_left_ms / 1000, 0.05))
        log.info('ambiguous_create_quarantined', lookups=verdict.lookups, left_s=verdict.quarantine_left_ms / 1000)
        raise Retry(defer=pause)
    # The quarantine passed and Ultravox never had the call: start over (begin re-checks everything).
    metrics.AMBIGUOUS_CREATES.labels(trunk=trunk.name, resolution='absent').inc()
    log.warning('ambiguous_create_absent', lookups=verdict.lookups)
    raise Retry(defer=0.05)


async def _record_created(
    rt: Runtime,
    attempt_id: str,
    config: CampaignConfig,
    trunk: Trunk,
    call: dict[str, Any],
    started: float,
    job: RunningJob | None = None,
) -> None:
    """Ultravox says ``call`` exists: count it, and record it unless the attempt already moved on (the
    arq job ``job`` is finished with the record: a rerun would have nothing left to do)."""
    call_id = str(call['callId'])
    recorded = await rt.scripts.created(
        attempt_id,
        trunk.name,
        call_id,
        rt.slot_limits(trunk),
        lease_ms=rt.call_lease_ms(config),
        first_poll_ms=rt.first_poll_ms,
        job=job.entry if job is not None else None,
    )
    if recorded and job is not None:
        job.finished()
    # counted even when the script found the attempt already ended: it is still a call created
    metrics.CALLS_CREATED.labels(trunk=trunk.name, campaign=config.name).inc()
    if recorded:
        metrics.CALL_SETUP_SECONDS.labels(trunk=trunk.name).observe(time.monotonic() - started)
        metrics.WORKER_JOBS.labels(result='created').inc()
        log.info('call_created', call_id=call_id)
    # direct-mode provider trunks: the phone leg (exactly once; no-op for other trunks)
    await place_phone_leg(rt, attempt_id, config, trunk, call)


async def _fail(
    rt: Runtime, attempt_id: str, config: CampaignConfig, job_ref: str, reason: str, *, final: bool
) -> None:
    """The attempt failed without a call (e.g. Ultravox refused the request as invalid)."""
    await _close(rt, attempt_id, config, job_ref, Outcome.FAILED, reason, final=final)


async def _close(
    rt: Runtime,
    attempt_id: str,
    config: CampaignConfig,
    job_ref: str,
    outcome: Outcome,
    reason: str,
    *,
    final: bool = True,
) -> None:
    """End the attempt with ``outcome`` although no call was made."""
    recorded, retry = await finish_attempt(
        rt,
        config,
        attempt_id,
        outcome,
        {'r': reason[:500], 'sip': 0, 'agent': 0, 'bsrc': 'computed'},
        final=final,
        billing_final=True,
        billing_poll_ms=0,
        job_ref=job_ref,
    )
    if recorded:
        count_end(config, outcome, retried=retry is not None)
