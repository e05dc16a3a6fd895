"""What a call costs: Ultravox duration strings, 6-second rounding and the billed figures of a Call.

Both agent and SIP minutes are billed per started 6-second "deciminute" and only for answered time
(ringing is not billed). Ultravox's own figures are authoritative but arrive late (``call.billed``);
until then we compute them from ``joined``/``ended`` so that status and metrics are never blank.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal


BILLING_INCREMENT = 6
BILLING_PENDING = 'BILLING_STATUS_PENDING'

# Ultravox writes protobuf durations ("30s", "12.5s"); tolerate a missing unit and ".5s" as well.
_DURATION = re.compile(r'^\s*(?P<value>-?(?:\d+(?:\.\d*)?|\.\d+))\s*s?\s*$')


def parse_duration(value: str | None) -> float | None:
    """Seconds in an Ultravox duration string; None for None or ''. Malformed text is a ValueError."""
    if value is None or not value.strip():
        return None
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f'{value!r} is not a duration in seconds such as "30s" or "12.5s"')
    return float(match.group('value'))


def format_duration(seconds: float) -> str:
    """The Ultravox string for ``seconds``: ``600s``, ``12.5s`` (no trailing ``.0``, at most 9 decimals)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f'a duration must be a finite, non-negative number of seconds, not {seconds!r}')
    if float(seconds).is_integer():
        return f'{int(seconds)}s'
    # The schema's pattern allows at most 9 fractional digits and no exponent.
    text = f'{seconds:.9f}'.rstrip('0').rstrip('.')
    return f'{text}s'


def billed_seconds(answered_seconds: float) -> int:
    """Seconds billed for ``answered_seconds`` of talk: rounded up to the next multiple of 6."""
    if answered_seconds <= 0:
        return 0
    # Timestamps carry microseconds: round first so 6.000000001 from float noise does not bill 12 s.
    increments = math.ceil(round(answered_seconds, 6) / BILLING_INCREMENT)
    return increments * BILLING_INCREMENT


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        # Python 3.11's fromisoformat accepts the 'Z' suffix Ultravox uses.
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def answered_seconds(call: Mapping[str, Any]) -> float:
    """Seconds from ``joined`` to ``ended``; 0 for a call nobody joined or that has not ended."""
    joined = _timestamp(call.get('joined'))
    ended = _timestamp(call.get('ended'))
    if joined is None or ended is None:
        return 0.0
    return max(0.0, (ended - joined).total_seconds())


@dataclass(frozen=True)
class Billing:
    sip_seconds: int
    agent_seconds: int
    #: 'ultravox' when the figures are Ultravox's final ones, 'computed' when derived from timestamps.
    source: Literal['ultravox', 'computed']
    final: bool


def _whole_seconds(value: Any) -> int | None:
    try:
        seconds = parse_duration(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return None if seconds is None else max(0, math.ceil(seconds))


#: Media whose phone leg is the provider's (Twilio, Telnyx, Plivo): Ultravox bills no SIP minutes.
PROVIDER_MEDIA = frozenset({'twilio', 'telnyx', 'plivo'})


def medium_kind(call: Mapping[str, Any]) -> str:
    """``sip``, ``twilio``, ``telnyx`` or ``plivo``: how a Call reached the phone (``sip`` if unknown)."""
    medium = call.get('medium')
    if isinstance(medium, Mapping):
        for kind in PROVIDER_MEDIA:
            if kind in medium:
                return kind
    return 'sip'


def billing_of(call: Mapping[str, Any]) -> Billing:
    """Billed SIP and agent seconds of a Call object, Ultravox's when final, otherwise computed."""
    status = call.get('billingStatus')
    if medium_kind(call) != 'sip':
        # The phone leg is the provider's (billed by the provider): only agent minutes here.
        agent = _whole_seconds(call.get('billedDuration'))
        if status is not None and status != BILLING_PENDING:
            return Billing(sip_seconds=0, agent_seconds=agent or 0, source='ultravox', final=True)
        computed = billed_seconds(answered_seconds(call))
        return Billing(sip_seconds=0, agent_seconds=computed, source='computed', final=False)
    sip_details = call.get('sipDetails')
    sip_billed = _whole_seconds(sip_details.get('billedDuration')) if isinstance(sip_details, Mapping) else None
    if status is not None and status != BILLING_PENDING and sip_billed is not None:
        # A final status with no agent duration (a free call) bills no agent time.
        agent_billed = _whole_seconds(call.get('billedDuration'))
        return Billing(
            sip_seconds=sip_billed,
            agent_seconds=agent_billed if agent_billed is not None else 0,
            source='ultravox',
            final=True,
        )
    # The agent is connected exactly while the callee is, so both bills run over the answered time.
    computed = billed_seconds(answered_seconds(call))
    return Billing(sip_seconds=computed, agent_seconds=computed, source='computed', final=False)
