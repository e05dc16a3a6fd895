"""From an Ultravox Call object to the outcome of the attempt that created it.

The first matching row wins:

| condition                                              | outcome          |
|--------------------------------------------------------|------------------|
| ``ended`` is null                                      | None (still live)|
| ``joined`` is not null (whatever the ``endReason``)    | ANSWERED         |
| ``sipDetails.terminationReason`` ``_BUSY``             | BUSY             |
| ``_INVALID_NUMBER``                                    | INVALID_NUMBER   |
| ``_TIMEOUT`` or ``_CANCELED``                          | NO_ANSWER        |
| ``_DESTINATION_UNAVAILABLE``                           | NO_ANSWER        |
| ``_REJECTED``                                          | REJECTED         |
| otherwise (``_NORMAL``, ``_UNKNOWN``, no sipDetails),  |                  |
| by ``endReason``: ``unjoined`` or ``timeout``          | NO_ANSWER        |
| ``connection_error``, ``system_error``, anything else  | FAILED           |

Choices worth knowing:
- A joined call is ANSWERED even when it ended by ``timeout`` or an error: a person (or a machine)
  picked up, and ANSWERED is never retried, so nobody is called twice for one conversation.
- ``DESTINATION_UNAVAILABLE`` (a phone switched off, out of coverage, a carrier's 480) is usually
  temporary, so it is NO_ANSWER and retried after the no-answer delay, not REJECTED.
- An unjoined call that ended by ``hangup``/``agent_hangup`` without a telling SIP reason is an
  anomaly; FAILED keeps it visible in the statistics while still being retried by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dialer.models import Outcome


_BY_TERMINATION: dict[str, Outcome] = {
    'SIP_TERMINATION_BUSY': Outcome.BUSY,
    'SIP_TERMINATION_INVALID_NUMBER': Outcome.INVALID_NUMBER,
    'SIP_TERMINATION_TIMEOUT': Outcome.NO_ANSWER,
    'SIP_TERMINATION_CANCELED': Outcome.NO_ANSWER,
    'SIP_TERMINATION_DESTINATION_UNAVAILABLE': Outcome.NO_ANSWER,
    'SIP_TERMINATION_REJECTED': Outcome.REJECTED,
}

_BY_END_REASON: dict[str, Outcome] = {
    'unjoined': Outcome.NO_ANSWER,
    'timeout': Outcome.NO_ANSWER,
    'connection_error': Outcome.FAILED,
    'system_error': Outcome.FAILED,
}


def termination_reason(call: Mapping[str, Any]) -> str | None:
    """``sipDetails.terminationReason`` of a call, or None when absent."""
    details = call.get('sipDetails')
    if not isinstance(details, Mapping):
        return None
    reason = details.get('terminationReason')
    return reason if isinstance(reason, str) and reason else None


def classify_call(call: Mapping[str, Any]) -> Outcome | None:
    """The outcome of an ended call (see the module table); None while the call has not ended."""
    if call.get('ended') is None:
        return None
    if call.get('joined') is not None:
        return Outcome.ANSWERED
    by_sip = _BY_TERMINATION.get(termination_reason(call) or '')
    if by_sip is not None:
        return by_sip
    end_reason = call.get('endReason')
    return _BY_END_REASON.get(end_reason if isinstance(end_reason, str) else '', Outcome.FAILED)


def end_reason_summary(call: Mapping[str, Any]) -> str:
    """``endReason/terminationReason`` for records, e.g. ``unjoined/SIP_TERMINATION_BUSY``."""
    end_reason = call.get('endReason')
    summary = end_reason if isinstance(end_reason, str) and end_reason else 'unknown'
    sip_reason = termination_reason(call)
    return f'{summary}/{sip_reason}' if sip_reason is not None else summary
