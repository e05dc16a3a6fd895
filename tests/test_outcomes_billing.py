"""Outcomes of ended calls, Ultravox duration strings and billing by the started 6-second increment."""

from __future__ import annotations

from typing import Any

import pytest

from dialer.billing import (
    Billing,
    answered_seconds,
    billed_seconds,
    billing_of,
    format_duration,
    parse_duration,
)
from dialer.models import Outcome
from dialer.outcomes import classify_call, end_reason_summary


CREATED = '2026-07-01T12:00:00Z'
JOINED = '2026-07-01T12:00:10.000000Z'


def ended_call(
    *,
    joined: str | None = None,
    ended: str | None = '2026-07-01T12:01:00Z',
    end_reason: str | None = 'unjoined',
    termination: str | None = None,
    sip_details: bool = True,
    **fields: Any,
) -> dict[str, Any]:
    call: dict[str, Any] = {
        'callId': 'c1',
        'created': CREATED,
        'joined': joined,
        'ended': ended,
        'endReason': end_reason,
        'billingStatus': 'BILLING_STATUS_PENDING',
        'billedDuration': None,
        'sipDetails': {'billedDuration': None, 'terminationReason': termination} if sip_details else None,
    }
    call.update(fields)
    return call


# --- outcomes ---------------------------------------------------------------------------------------


def test_a_call_that_has_not_ended_has_no_outcome_yet() -> None:
    assert classify_call(ended_call(ended=None, end_reason=None)) is None
    assert classify_call(ended_call(joined=JOINED, ended=None, end_reason=None)) is None


@pytest.mark.parametrize(
    'end_reason', ['hangup', 'agent_hangup', 'timeout', 'connection_error', 'system_error', 'unjoined']
)
def test_a_joined_call_is_answered_whatever_the_end_reason(end_reason: str) -> None:
    call = ended_call(joined=JOINED, end_reason=end_reason, termination='SIP_TERMINATION_NORMAL')
    assert classify_call(call) == Outcome.ANSWERED


@pytest.mark.parametrize(
    ('termination', 'outcome'),
    [
        ('SIP_TERMINATION_BUSY', Outcome.BUSY),
        ('SIP_TERMINATION_INVALID_NUMBER', Outcome.INVALID_NUMBER),
        ('SIP_TERMINATION_TIMEOUT', Outcome.NO_ANSWER),
        ('SIP_TERMINATION_CANCELED', Outcome.NO_ANSWER),
        ('SIP_TERMINATION_DESTINATION_UNAVAILABLE', Outcome.NO_ANSWER),
        ('SIP_TERMINATION_REJECTED', Outcome.REJECTED),
    ],
)
def test_unjoined_calls_are_classified_by_sip_termination_reason(termination: str, outcome: Outcome) -> None:
    # The SIP reason wins over the end reason, even a system error.
    for end_reason in ('unjoined', 'system_error'):
        assert classify_call(ended_call(end_reason=end_reason, termination=termination)) == outcome


@pytest.mark.parametrize(
    ('end_reason', 'outcome'),
    [
        ('unjoined', Outcome.NO_ANSWER),
        ('timeout', Outcome.NO_ANSWER),
        ('connection_error', Outcome.FAILED),
        ('system_error', Outcome.FAILED),
        ('hangup', Outcome.FAILED),
        (None, Outcome.FAILED),
    ],
)
@pytest.mark.parametrize('termination', ['SIP_TERMINATION_UNKNOWN', 'SIP_TERMINATION_NORMAL', None, 'missing'])
def test_without_a_telling_sip_reason_the_end_reason_decides(
    end_reason: str | None, outcome: Outcome, termination: str | None
) -> None:
    call = ended_call(end_reason=end_reason, termination=termination, sip_details=termination != 'missing')
    assert classify_call(call) == outcome


def test_end_reason_summary_joins_end_and_sip_reasons() -> None:
    assert end_reason_summary(ended_call(termination='SIP_TERMINATION_BUSY')) == 'unjoined/SIP_TERMINATION_BUSY'
    assert end_reason_summary(ended_call(end_reason='system_error', sip_details=False)) == 'system_error'
    assert end_reason_summary(ended_call(end_reason=None, termination=None)) == 'unknown'


# --- durations --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('text', 'seconds'),
    [('30s', 30.0), ('12.5s', 12.5), ('0.5s', 0.5), ('0s', 0.0), ('600', 600.0), ('.25s', 0.25)],
)
def test_duration_strings_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_missing_durations_are_none_and_malformed_ones_are_errors() -> None:
    assert parse_duration(None) is None
    assert parse_duration('') is None
    with pytest.raises(ValueError, match='12m'):
        parse_duration('12m')


@pytest.mark.parametrize(
    ('seconds', 'text'),
    [(600, '600s'), (600.0, '600s'), (12.5, '12.5s'), (0.5, '0.5s'), (0, '0s'), (30.125, '30.125s')],
)
def test_durations_format_without_a_trailing_zero(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize('bad', [-1.0, float('inf'), float('nan')])
def test_negative_or_infinite_durations_cannot_be_formatted(bad: float) -> None:
    with pytest.raises(ValueError, match='duration'):
        format_duration(bad)


# --- billing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('answered', 'billed'),
    [(0, 0), (-3, 0), (0.1, 6), (5.999, 6), (6, 6), (6.01, 12), (12, 12), (59.5, 60), (60.000001, 66)],
)
def test_billing_rounds_up_to_the_started_six_seconds(answered: float, billed: int) -> None:
    assert billed_seconds(answered) == billed


def test_float_noise_from_timestamps_does_not_bill_an_extra_increment() -> None:
    assert billed_seconds(6.0000000001) == 6


def test_answered_time_runs_from_joined_to_ended() -> None:
    assert answered_seconds(ended_call(joined=JOINED, ended='2026-07-01T12:00:41.500000Z')) == 31.5
    assert answered_seconds(ended_call()) == 0.0
    assert answered_seconds(ended_call(joined=JOINED, ended=None)) == 0.0


def test_pending_billing_is_computed_from_answered_time() -> None:
    call = ended_call(joined=JOINED, ended='2026-07-01T12:00:41Z', end_reason='hangup')
    assert billing_of(call) == Billing(sip_seconds=36, agent_seconds=36, source='computed', final=False)


def test_an_unanswered_call_costs_nothing() -> None:
    assert billing_of(ended_call(termination='SIP_TERMINATION_BUSY')) == Billing(0, 0, 'computed', final=False)


def test_final_billing_takes_ultravox_figures() -> None:
    call = ended_call(
        joined=JOINED,
        end_reason='hangup',
        billingStatus='BILLING_STATUS_BILLED',
        billedDuration='48s',
        sipDetails={'billedDuration': '54s', 'terminationReason': 'SIP_TERMINATION_NORMAL'},
    )
    assert billing_of(call) == Billing(sip_seconds=54, agent_seconds=48, source='ultravox', final=True)


def test_final_free_call_bills_no_agent_time_but_its_sip_time() -> None:
    call = ended_call(
        joined=JOINED,
        billingStatus='BILLING_STATUS_FREE_MINUTES',
        billedDuration=None,
        sipDetails={'billedDuration': '12s', 'terminationReason': 'SIP_TERMINATION_NORMAL'},
    )
    assert billing_of(call) == Billing(sip_seconds=12, agent_seconds=0, source='ultravox', final=True)


@pytest.mark.parametrize(
    'fields',
    [
        # Still pending even though a figure is present.
        {'billingStatus': 'BILLING_STATUS_PENDING', 'sipDetails': {'billedDuration': '54s'}},
        # Final status but no SIP figure (or a garbled one).
        {'billingStatus': 'BILLING_STATUS_BILLED', 'billedDuration': '48s'},
        {'billingStatus': 'BILLING_STATUS_BILLED', 'sipDetails': {'billedDuration': 'soon'}},
        {'billingStatus': None, 'sipDetails': {'billedDuration': '54s'}},
    ],
)
def test_billing_is_computed_until_ultravox_gives_final_sip_figures(fields: dict[str, Any]) -> None:
    call = ended_call(joined=JOINED, ended='2026-07-01T12:00:17Z', end_reason='hangup', **fields)
    assert billing_of(call) == Billing(sip_seconds=12, agent_seconds=12, source='computed', final=False)
