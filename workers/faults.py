"""Faults that hold dialling without spending anyone's attempts, and the probes that lift them.

- **Account faults** (401 bad key, 402 payment required, 403 forbidden/disabled): the account hold is
  set with a ``fault:`` reason, so no worker claims or creates anything. The hold is short and is
  refreshed by each failed probe; the first probe that succeeds (the key was fixed and the workers
  restarted, the account re-enabled) lifts it, and dialling resumes on its own.
- **Campaign faults**, in the campaign hash's ``fault`` field: its agent is gone (404 on create),
  or its trunk is not in the trunks file. The claim script skips such a campaign and ``begin`` hands
  back attempts claimed before the fault was seen. A probe (``GET /api/agents/{id}``) or the trunk
  coming back clears it.

Only one worker of the fleet probes per ``DIALER_FAULT_PROBE_INTERVAL`` (a ``SET NX PX`` lock).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import structlog

from dialer import constants as k
from dialer import metrics
from dialer.models import CampaignState
from dialer.ultravox import AccountFault, AgentNotFound, UltravoxError


if TYPE_CHECKING:
    from workers.runtime import Runtime


log = structlog.get_logger(__name__)

#: Campaign fault reasons (bounded: they are metric label values).
AGENT_NOT_FOUND = 'agent_not_found'
TRUNK_MISSING = 'trunk_missing'
#: States in which a campaign still dials (or will, once resumed), so a missing trunk matters.
_OPEN_STATES = frozenset({CampaignState.ACTIVE.value, CampaignState.PAUSED.value})


def _fault_hold_ms(rt: Runtime) -> int:
    # Twice the probe interval: a fleet that stops probing (every worker gone) lets the hold lapse,
    # and the next create finds out again whether the account works.
    return int(rt.settings.fault_probe_interval * 2000)


async def open_account_fault(rt: Runtime, exc: AccountFault) -> None:
    """Hold every creation on the account; say so once per opening, loudly."""
    reason = f'{k.FAULT_HOLD_PREFIX}{exc.code}: Ultravox answered HTTP {exc.status}'
    held_before = await rt.redis.get(k.ACCOUNT_HOLD)
    await rt.scripts.hold(k.ACCOUNT_HOLD, _fault_hold_ms(rt), reason)
    metrics.ACCOUNT_FAULTS.labels(reason=exc.code).inc()
    if not (held_before or '').startswith(k.FAULT_HOLD_PREFIX):
        log.error(
            'account_fault',
            status=exc.status,
            code=exc.code,
            reason=exc.reason,
            fix='check DIALER_ULTRAVOX_API_KEY and the account; dialling resumes once a probe succeeds',
        )


async def open_campaign_fault(rt: Runtime, name: str, reason: str, detail: str) -> bool:
    """Hold one campaign; True if this call opened the fault."""
    now_ms = await rt.scripts.now_ms()
    fault = json.dumps({'reason': reason, 'detail': detail[:300], 'since_ms': now_ms})
    opened = bool(await rt.redis.hsetnx(k.campaign(name), 'fault', fault))
    if opened:
        log.error('campaign_blocked', campaign=name, reason=reason, detail=detail[:300])
    return opened


async def clear_campaign_fault(rt: Runtime, name: str, reason: str) -> bool:
    """Lift a campaign's fault if it is still the one named (another fault is left in place)."""
    raw = await rt.redis.hget(k.campaign(name), 'fault')
    if raw is None or _reason(raw) != reason:
        return False
    await rt.redis.hdel(k.campaign(name), 'fault')
    log.info('campaign_unblocked', campaign=name, reason=reason)
    return True


def _reason(raw: str) -> str:
    try:
        fault: Any = json.loads(raw)
        return str(fault['reason'])
    except (ValueError, KeyError, TypeError):
        return 'unknown'


#: name -> (state, fault reason or None, trunk) of every campaign in a dialling state.
CampaignFaults = dict[str, tuple[str, str | None, str]]


async def campaign_faults(rt: Runtime) -> CampaignFaults:
    """Every campaign in a dialling state: name -> (state, fault reason or None, trunk)."""
    names = sorted(await rt.redis.smembers(k.CAMPAIGNS))
    if not names:
        return {}
    async with rt.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(k.campaign(name), 'state', 'fault')
        rows = await pipe.execute()
    found: dict[str, tuple[str, str | None, str]] = {}
    for name, (state, fault) in zip(names, rows, strict=True):
        if state in _OPEN_STATES:
            config = await rt.configs.get(name)
            found[name] = (state, None if fault is None else _reason(fault), config.trunk)
    return found


async def check_trunks(rt: Runtime, campaigns: CampaignFaults, *, reloaded: bool) -> None:
    """Block campaigns whose trunk is not in this worker's trunks file; unblock them when it is back."""
    missing: dict[str, list[str]] = {}
    for name, (_, fault, trunk) in campaigns.items():
        if trunk not in rt.trunks.trunks:
            missing.setdefault(trunk, []).append(name)
            if fault is None:
                detail = f'trunk {trunk!r} is not in {rt.trunks.path}'
                await open_campaign_fault(rt, name, TRUNK_MISSING, detail)
        elif fault == TRUNK_MISSING:
            await clear_campaign_fault(rt, name, TRUNK_MISSING)
    if reloaded:
        for trunk, names in sorted(missing.items()):
            log.error('trunk_missing', trunk=trunk, campaigns=names, file=str(rt.trunks.path))


async def probe_faults(rt: Runtime, worker_id: str, campaigns: CampaignFaults) -> None:
    """One probe per open fault, by one worker of the fleet per probe interval."""
    interval_ms = int(rt.settings.fault_probe_interval * 1000)
    hold = await rt.redis.get(k.ACCOUNT_HOLD)
    account_fault = (hold or '').startswith(k.FAULT_HOLD_PREFIX)
    faults = {name: row for name, row in campaigns.items() if row[1] == AGENT_NOT_FOUND}
    if not account_fault and not faults:
        return
    if not await rt.redis.set(k.FAULT_PROBE, worker_id, nx=True, px=interval_ms):
        return
    if account_fault:
        await _probe_account(rt, hold or '')
        return  # campaign probes need a working account
    for name in faults:
        config = await rt.configs.get(name)
        if config.agent_id is None:
            await clear_campaign_fault(rt, name, AGENT_NOT_FOUND)
            continue
        try:
            await rt.ultravox.get_agent(config.agent_id)
        except AgentNotFound:
            log.warning('campaign_still_blocked', campaign=name, reason=AGENT_NOT_FOUND)
        except AccountFault as exc:
            await open_account_fault(rt, exc)
            return
        except UltravoxError as exc:
            log.info('fault_probe_inconclusive', campaign=name, reason=str(exc))
        else:
            await clear_campaign_fault(rt, name, AGENT_NOT_FOUND)


async def _probe_account(rt: Runtime, hold: str) -> None:
    try:
        await rt.ultravox.probe_account()
    except AccountFault as exc:
        await open_account_fault(rt, exc)  # still broken: keep holding
        log.warning('account_still_faulty', status=exc.status, code=exc.code)
    except UltravoxError as exc:
        # cannot tell (Ultravox down or slow): keep holding, try again next interval
        await rt.scripts.hold(k.ACCOUNT_HOLD, _fault_hold_ms(rt), hold)
        log.info('fault_probe_inconclusive', reason=str(exc))
    else:
        if await rt.scripts.lift_fault():
            log.info('account_fault_lifted', note='dialling resumes')
