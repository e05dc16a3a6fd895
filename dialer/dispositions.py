"""Recording what a conversation achieved, as the agent reports it through the outcome tool.

``record_disposition`` is the one place a disposition (and an opt-out) is written: the HTTP route
calls it, and a later result outbox (``contact.opted_out``) hooks in here, inside the same script.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dialer import constants as k
from dialer.models import DO_NOT_CALL
from dialer.outbox import NO_OUTBOX, Outbox
from dialer.scripts import register


if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript


@dataclass(frozen=True, slots=True)
class DispositionReport:
    """One invocation of the outcome tool, already validated against the campaign."""

    attempt_id: str
    call_id: str
    disposition: str
    notes: str | None = None
    #: Redis ms of the requested call-back (None: no time given).
    callback_at_ms: int | None = None

    @property
    def digest(self) -> str:
        """Same arguments, same digest: a retried invocation is recognised and recorded once."""
        text = json.dumps([self.call_id, self.disposition, self.notes, self.callback_at_ms], separators=(',', ':'))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @property
    def opts_out(self) -> bool:
        return self.disposition == DO_NOT_CALL


@dataclass(frozen=True, slots=True)
class Recorded:
    #: recorded | updated | duplicate | unknown_attempt | foreign_call
    verdict: str
    now_ms: int

    @property
    def accepted(self) -> bool:
        return self.verdict in {'recorded', 'updated', 'duplicate'}


_scripts: weakref.WeakKeyDictionary[Redis, AsyncScript] = weakref.WeakKeyDictionary()


def _script(redis: Redis) -> AsyncScript:
    script = _scripts.get(redis)
    if script is None:
        script = _scripts[redis] = register(redis, 'disposition')
    return script


async def record_disposition(redis: Redis, report: DispositionReport, outbox: Outbox = NO_OUTBOX) -> Recorded:
    """Record ``report`` on its attempt and contact; an opt-out puts the number on the DNC list (with
    its consent evidence) and appends ``contact.opted_out`` to the outbox in the same atomic step.
    Idempotent by the report's digest."""
    name, number, attempt = k.parse_attempt_id(report.attempt_id)
    keys = [
        k.CLOCK_OFFSET,
        k.campaign(name),
        k.campaign_progress(name),
        k.campaign_attempts(name),
        k.DNC,
        k.DNC_EVIDENCE,
        *outbox.keys(),
    ]
    args = [
        name,
        number,
        attempt,
        report.call_id,
        report.disposition,
        report.notes or '',
        '' if report.callback_at_ms is None else report.callback_at_ms,
        report.digest,
        '1' if report.opts_out else '0',
        *outbox.args(),
    ]
    verdict, now = await _script(redis)(keys=keys, args=[str(a) for a in args])
    return Recorded(str(verdict), int(now))
