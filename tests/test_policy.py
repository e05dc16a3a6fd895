"""Calling hours in each contact's local time, and the retry decision (campaigns/policy.py)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from phonenumbers import timezone as phone_timezones

from campaigns import policy
from campaigns.policy import (
    NeverCallable,
    NoTimezone,
    RetryDecision,
    contact_zones,
    decide_retry,
    initial_due,
    is_callable,
    next_callable,
    window_description,
)
from dialer.models import CallingHours, Outcome, RetryPolicy, Weekday


NY = 'America/New_York'
CHICAGO = 'America/Chicago'
LONDON = 'Europe/London'
HOURS = CallingHours()  # 09:00-20:00 every day


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(zone: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)  # type: ignore[misc]


def _brute_force(zones: tuple[str, ...], hours: CallingHours, now: datetime) -> datetime:
    """Reference answer: the first whole minute >= now (or now) at which the contact is callable."""
    if is_callable(zones, hours, now):
        return now
    minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(8 * 24 * 60):
        if is_callable(zones, hours, minute):
            return minute
        minute += timedelta(minutes=1)
    raise AssertionError('never callable')


# --- zones of a contact ---


def test_csv_timezone_wins_over_the_number_and_the_default():
    assert contact_zones('+14155552671', 'Europe/Paris', 'Asia/Tokyo') == ('Europe/Paris',)


def test_number_prefix_gives_the_zone_when_the_csv_has_none():
    assert contact_zones('+14155552671', None, 'Asia/Tokyo') == ('America/Los_Angeles',)
    assert contact_zones('+442079460958', None, None) == (LONDON,)


def test_area_code_spanning_two_zones_gives_both():
    assert contact_zones('+12085550123', None, None) == ('America/Boise', 'America/Los_Angeles')


def test_campaign_default_is_used_when_the_number_maps_to_no_zone():
    # +800 is the international freephone code: no country, no zone.
    assert contact_zones('+80012345678', None, 'Europe/Berlin') == ('Europe/Berlin',)


def test_no_zone_anywhere_raises_with_a_hint_to_add_a_timezone_column():
    with pytest.raises(NoTimezone, match='timezone'):
        contact_zones('+80012345678', None, None)
    assert issubclass(NoTimezone, ValueError)


def test_unknown_csv_timezone_is_rejected():
    with pytest.raises(ValueError, match='unknown time zone'):
        contact_zones('+14155552671', 'Mars/Olympus', None)


def test_prefix_cache_agrees_with_phonenumbers_for_many_numbers():
    rng = random.Random(7)
    policy._zone_cache.clear()
    numbers = []
    while len(numbers) < 3000:
        country = rng.choice(['US', 'GB', 'DE', 'IN', 'AU', 'BR', 'MX', 'CA', 'RU'])
        example = phonenumbers.example_number(country)
        assert example is not None
        national = str(example.national_number)
        keep = rng.randint(1, len(national) - 1)
        digits = national[:keep] + ''.join(rng.choice('0123456789') for _ in range(len(national) - keep))
        candidate = phonenumbers.parse(f'+{example.country_code}{digits}')
        if phonenumbers.is_valid_number(candidate):
            numbers.append(phonenumbers.format_number(candidate, phonenumbers.PhoneNumberFormat.E164))
    for number in numbers * 2:  # the second round is served from the cache
        expected = tuple(
            z for z in phone_timezones.time_zones_for_number(phonenumbers.parse(number)) if z != 'Etc/Unknown'
        )
        assert policy.number_zones(number) == expected, number


# --- calling hours ---


def test_contact_outside_hours_is_not_callable_until_the_window_opens():
    now = local(CHICAGO, 2026, 1, 6, 5, 48)  # a Tuesday, 05:48 in Chicago
    assert not is_callable((CHICAGO,), HOURS, now)
    assert next_callable((CHICAGO,), HOURS, now) == local(CHICAGO, 2026, 1, 6, 9, 0)


def test_contact_inside_hours_is_callable_now():
    now = local(CHICAGO, 2026, 1, 6, 12, 0)
    assert is_callable((CHICAGO,), HOURS, now)
    assert next_callable((CHICAGO,), HOURS, now) == now


def test_window_end_is_exclusive_and_start_inclusive():
    assert is_callable((NY,), HOURS, local(NY, 2026, 1, 6, 9, 0))
    assert is_callable((NY,), HOURS, local(NY, 2026, 1, 6, 19, 59, 59))
    assert not is_callable((NY,), HOURS, local(NY, 2026, 1, 6, 20, 0))
    assert next_callable((NY,), HOURS, local(NY, 2026, 1, 6, 20, 0)) == local(NY, 2026, 1, 7, 9, 0)


def test_end_of_day_window_runs_until_midnight():
    hours = CallingHours(start=time(18, 0), end=time.max, legal_bound=False)
    assert is_callable((NY,), hours, local(NY, 2026, 1, 6, 23, 59))
    assert not is_callable((NY,), hours, local(NY, 2026, 1, 7, 0, 0))


def test_contact_in_two_zones_is_callable_only_when_both_are_inside_hours():
    zones = contact_zones('+12085550123', None, None)  # Boise (Mountain) and Los Angeles (Pacific)
    eight_thirty_pacific = local('America/Los_Angeles', 2026, 1, 6, 8, 30)  # 09:30 in Boise
    assert is_callable(('America/Boise',), HOURS, eight_thirty_pacific)
    assert not is_callable(zones, HOURS, eight_thirty_pacific)
    assert next_callable(zones, HOURS, eight_thirty_pacific) == local('America/Los_Angeles', 2026, 1, 6, 9, 0)
    # In the evening Boise closes first.
    assert not is_callable(zones, HOURS, local('America/Boise', 2026, 1, 6, 20, 15))


def test_partly_overlapping_windows_open_at_the_later_start():
    hours = CallingHours(start=time(9, 0), end=time(12, 0))
    zones = (NY, LONDON)  # 5 h apart in January: London 09-12 is New York 04-07, no overlap
    with pytest.raises(NeverCallable):
        next_callable(zones, hours, utc(2026, 1, 6, 0, 0))
    wide = CallingHours(start=time(8, 0), end=time(21, 0))  # overlap: 08:00-16:00 New York
    assert next_callable(zones, wide, utc(2026, 1, 6, 0, 0)) == local(NY, 2026, 1, 6, 8, 0)


def test_zones_twelve_hours_apart_with_a_short_window_are_never_callable():
    hours = CallingHours(start=time(9, 0), end=time(12, 0))
    with pytest.raises(NeverCallable, match='never hold'):
        next_callable(('America/New_York', 'Asia/Shanghai'), hours, utc(2026, 1, 6))
    assert issubclass(NeverCallable, ValueError)


def test_weekdays_only_skips_the_weekend():
    hours = CallingHours(days=(Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI))
    friday_evening = local(NY, 2026, 1, 9, 20, 30)
    saturday_noon = local(NY, 2026, 1, 10, 12, 0)
    assert not is_callable((NY,), hours, saturday_noon)
    assert next_callable((NY,), hours, friday_evening) == local(NY, 2026, 1, 12, 9, 0)


def test_weekday_is_the_contacts_local_weekday_not_utc():
    hours = CallingHours(start=time(8, 0), end=time(21, 0), days=(Weekday.MON,))
    # Monday 20:30 in Los Angeles is already Tuesday in UTC.
    monday_evening = local('America/Los_Angeles', 2026, 1, 5, 20, 30)
    assert monday_evening.weekday() == 1
    assert is_callable(('America/Los_Angeles',), hours, monday_evening)


def test_single_allowed_day_is_found_almost_a_week_ahead():
    hours = CallingHours(days=(Weekday.SUN,))
    monday = local(NY, 2026, 1, 5, 10, 0)
    assert next_callable((NY,), hours, monday) == local(NY, 2026, 1, 11, 9, 0)


def test_spring_forward_day_opens_at_the_window_start_in_new_york():
    # 2026-03-08: clocks go from 02:00 EST to 03:00 EDT.
    before = utc(2026, 3, 8, 5, 0)  # 00:00 EST
    assert next_callable((NY,), HOURS, before) == local(NY, 2026, 3, 8, 9, 0)
    assert local(NY, 2026, 3, 8, 9, 0) == utc(2026, 3, 8, 13, 0)


def test_window_start_in_the_skipped_hour_opens_at_the_first_valid_instant():
    hours = CallingHours(start=time(2, 30), end=time(4, 0), legal_bound=False)
    # 02:30 does not exist on 2026-03-08 in New York; 03:00 EDT (07:00 UTC) is the first instant after.
    assert next_callable((NY,), hours, utc(2026, 3, 8, 5, 0)) == utc(2026, 3, 8, 7, 0)


def test_window_start_in_the_repeated_hour_opens_again_after_fall_back():
    # 2026-11-01: 02:00 EDT becomes 01:00 EST, so 01:30 happens twice.
    hours = CallingHours(start=time(1, 30), end=time(1, 45), legal_bound=False)
    first = local(NY, 2026, 11, 1, 1, 30, fold=0)
    second = local(NY, 2026, 11, 1, 1, 30, fold=1)
    assert second - first == timedelta(hours=1)
    assert next_callable((NY,), hours, utc(2026, 11, 1, 4, 0)) == first
    after_first = first + timedelta(minutes=20)
    assert not is_callable((NY,), hours, after_first)
    assert next_callable((NY,), hours, after_first) == second


def test_fall_back_day_keeps_the_usual_window_start():
    assert next_callable((NY,), HOURS, utc(2026, 11, 1, 4, 0)) == local(NY, 2026, 11, 1, 9, 0)
    assert local(NY, 2026, 11, 1, 9, 0) == utc(2026, 11, 1, 14, 0)


def test_london_spring_forward_on_the_last_sunday_of_march():
    # 2026-03-29 01:00 GMT becomes 02:00 BST.
    hours = CallingHours(start=time(1, 15), end=time(3, 0), legal_bound=False)
    assert next_callable((LONDON,), hours, utc(2026, 3, 28, 23, 0)) == utc(2026, 3, 29, 1, 0)
    assert next_callable((LONDON,), HOURS, utc(2026, 3, 28, 23, 0)) == utc(2026, 3, 29, 8, 0)


def test_half_hour_and_forty_five_minute_zones():
    now = utc(2026, 1, 5, 0, 0)
    assert next_callable(('Asia/Kolkata',), HOURS, now) == utc(2026, 1, 5, 3, 30)
    assert next_callable(('Asia/Kathmandu',), HOURS, now) == utc(2026, 1, 5, 3, 15)
    # Adelaide is on daylight time (UTC+10:30) in January: 10:30 local, already open.
    assert next_callable(('Australia/Adelaide',), HOURS, now) == now
    assert next_callable(('Asia/Kolkata', 'Asia/Kathmandu', 'Australia/Adelaide'), HOURS, now) == utc(2026, 1, 5, 3, 30)


@pytest.mark.parametrize(
    ('zones', 'start'),
    [
        ((NY,), utc(2026, 3, 7, 12, 17)),
        ((NY,), utc(2026, 10, 31, 23, 59)),
        ((LONDON, 'Europe/Berlin'), utc(2026, 3, 28, 19, 5)),
        (('Australia/Adelaide', 'Australia/Darwin'), utc(2026, 4, 1, 9, 0)),
        (('Asia/Kolkata', 'Asia/Kathmandu'), utc(2026, 2, 3, 4, 10)),
        (('America/Boise', 'America/Los_Angeles'), utc(2026, 1, 9, 3, 33)),
        (('Australia/Lord_Howe',), utc(2026, 4, 4, 10, 0)),
    ],
)
def test_next_callable_matches_a_minute_by_minute_search(zones, start):
    hours = CallingHours(start=time(8, 0), end=time(10, 30), days=(Weekday.SUN, Weekday.WED))
    at = start
    for _ in range(6):
        expected = _brute_force(zones, hours, at)
        assert next_callable(zones, hours, at) == expected
        at = expected + timedelta(hours=2, minutes=31)


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match='timezone-aware'):
        is_callable((NY,), HOURS, datetime(2026, 1, 6, 12, 0))  # noqa: DTZ001


def test_initial_due_is_the_next_window():
    now = local(NY, 2026, 1, 6, 6, 0)
    assert initial_due((NY,), HOURS, now) == local(NY, 2026, 1, 6, 9, 0)


def test_window_description_says_when_and_where_the_window_opens():
    now = local(CHICAGO, 2026, 1, 6, 5, 48)
    assert window_description((CHICAGO,), HOURS, now) == 'opens 09:00 America/Chicago (in 3h12m)'
    friday = local(CHICAGO, 2026, 1, 9, 21, 0)
    weekdays = CallingHours(days=(Weekday.MON,))
    assert window_description((CHICAGO,), weekdays, friday) == 'opens Mon 09:00 America/Chicago (in 2d12h)'


def test_window_description_when_open_names_the_closing_time():
    now = local(CHICAGO, 2026, 1, 6, 18, 30)
    # 18:30 in Chicago is 19:30 in New York, which closes first.
    assert window_description((CHICAGO, NY), HOURS, now) == 'open until 20:00 America/New_York (closes in 30m)'


def test_window_description_when_never_open():
    hours = CallingHours(start=time(9, 0), end=time(12, 0))
    text = window_description(('America/New_York', 'Asia/Shanghai'), hours, utc(2026, 1, 6))
    assert text.startswith('never open')


# --- retries ---

POLICY = RetryPolicy()  # no_answer 1 h, busy 10 min, failed 15 min; 3 attempts, 3 per 24 h


def decide(outcome, attempts_made, attempt_times, now, *, zones=(NY,), retry=POLICY, hours=HOURS) -> RetryDecision:
    return decide_retry(retry, hours, zones, outcome, attempts_made, attempt_times, now)


def test_busy_is_retried_after_its_delay():
    now = local(NY, 2026, 1, 6, 10, 0)
    decision = decide(Outcome.BUSY, 1, [now], now)
    assert decision.retry_at == now + timedelta(minutes=10)
    assert decision.final_outcome is None


def test_retry_landing_outside_hours_moves_to_the_next_window():
    now = local(NY, 2026, 1, 6, 19, 30)
    decision = decide(Outcome.NO_ANSWER, 1, [now], now)  # +1 h = 20:30, closed
    assert decision.retry_at == local(NY, 2026, 1, 7, 9, 0)
    assert 'calling window' in decision.reason


def test_retries_stop_at_max_attempts():
    now = local(NY, 2026, 1, 6, 12, 0)
    times = [now - timedelta(hours=2), now - timedelta(hours=1), now]
    decision = decide(Outcome.BUSY, 3, times, now)
    assert decision.retry_at is None
    assert decision.final_outcome is Outcome.BUSY
    assert 'max attempts' in decision.reason


def test_daily_cap_pushes_the_retry_until_the_oldest_attempt_is_24_hours_old():
    retry = RetryPolicy(max_attempts=10, max_per_24h=2)
    first = local(NY, 2026, 1, 6, 11, 0)
    now = local(NY, 2026, 1, 6, 12, 0)
    decision = decide(Outcome.BUSY, 2, [first, now], now, retry=retry)
    assert decision.retry_at == first + timedelta(hours=24)
    assert '24 h cap' in decision.reason


def test_daily_cap_and_calling_hours_combine():
    retry = RetryPolicy(max_attempts=10, max_per_24h=2)
    first = local(NY, 2026, 1, 6, 19, 50)
    now = local(NY, 2026, 1, 6, 19, 55)
    decision = decide(Outcome.BUSY, 2, [first, now], now, retry=retry)
    # The cap frees a slot at 19:50 the next day; the window is still open then.
    assert decision.retry_at == local(NY, 2026, 1, 7, 19, 50)
    # One a day on weekdays only: Friday's attempt frees a slot on Saturday, which is closed.
    weekdays = CallingHours(days=(Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI))
    friday = local(NY, 2026, 1, 9, 12, 0)
    once_a_day = RetryPolicy(max_attempts=10, max_per_24h=1)
    decision = decide(Outcome.BUSY, 1, [friday], friday, retry=once_a_day, hours=weekdays)
    assert decision.retry_at == local(NY, 2026, 1, 12, 9, 0)
    assert '24 h cap' in decision.reason
    assert 'calling window' in decision.reason


def test_attempts_older_than_24_hours_do_not_count_towards_the_cap():
    retry = RetryPolicy(max_attempts=10, max_per_24h=2)
    now = local(NY, 2026, 1, 6, 12, 0)
    decision = decide(Outcome.BUSY, 2, [now - timedelta(hours=25), now], now, retry=retry)
    assert decision.retry_at == now + timedelta(minutes=10)


@pytest.mark.parametrize('outcome', [Outcome.ANSWERED, Outcome.INVALID_NUMBER, Outcome.DNC, Outcome.CANCELLED])
def test_answered_and_other_final_outcomes_are_never_retried(outcome):
    now = local(NY, 2026, 1, 6, 12, 0)
    decision = decide(outcome, 1, [now], now)
    assert decision == RetryDecision(None, outcome, f'{outcome} is not retried')


def test_outcome_missing_from_retry_on_is_final():
    now = local(NY, 2026, 1, 6, 12, 0)
    decision = decide(Outcome.REJECTED, 1, [now], now)
    assert decision.final_outcome is Outcome.REJECTED
    assert decision.retry_at is None


def test_contact_that_can_never_be_called_again_is_final():
    hours = CallingHours(start=time(9, 0), end=time(12, 0))
    now = utc(2026, 1, 6, 12, 0)
    decision = decide(Outcome.BUSY, 1, [now], now, zones=('America/New_York', 'Asia/Shanghai'), hours=hours)
    assert decision.retry_at is None
    assert decision.final_outcome is Outcome.BUSY
    assert 'never hold' in decision.reason
