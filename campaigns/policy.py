"""When a contact may be called (calling hours in the contact's own local time) and when to retry.

Pure functions: every one takes ``now`` explicitly and nothing here reads a clock, so tests control
time and the worker can pass Redis time.

A contact may map to several time zones (a US number whose area code spans two zones, a number with
no area detail such as a toll-free one). It is callable only when the calling hours hold in *every*
one of them: calling at 08:30 in one zone must not mean 07:30 in the other.
"""

from __future__ import annotations

import functools
import math
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

import phonenumbers
from phonenumbers import timezone as phone_timezones
from phonenumbers.tzdata import TIMEZONE_DATA


if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from dialer.models import CallingHours, Outcome, RetryPolicy, Weekday


#: How far ahead next_callable looks; a week plus a day covers any weekday pattern across a DST change.
HORIZON = timedelta(days=8)
DAY = timedelta(days=1)
#: Rolling window of RetryPolicy.max_per_24h.
CAP_WINDOW = timedelta(hours=24)

# Real DST transitions are months apart; sampling the UTC offset this often cannot miss one.
_OFFSET_SAMPLE = timedelta(hours=3)


class NoTimezone(ValueError):  # noqa: N818  named after the condition, like the other domain errors
    """A contact has no ``timezone``, its number maps to no zone and the campaign has no default."""


class NeverCallable(ValueError):  # noqa: N818
    """No instant within HORIZON is inside the calling hours in all of a contact's zones."""


# --- time zones of a contact ---------------------------------------------------------------------

_COUNTRY_CODES = frozenset(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def _national_prefix_digits() -> int:
    """The longest national prefix phonenumbers' zone map distinguishes (6 in current metadata)."""
    longest = 0
    for prefix in TIMEZONE_DATA:
        cc_length = _country_code_length(prefix)
        if cc_length:
            longest = max(longest, len(prefix) - cc_length)
    return longest


def _country_code_length(digits: str) -> int:
    # Country calling codes are prefix-free, so the first match is the only one.
    for length in (1, 2, 3):
        if digits[:length] in _COUNTRY_CODES:
            return length
    return 0


_NATIONAL_PREFIX = _national_prefix_digits()
_ZONE_CACHE_MAX = 200_000
# (country code + national prefix, length of the number) -> zones. The loader asks for a million
# distinct numbers, so a cache on the whole number would never hit; the zone map is keyed by prefix
# and, for numbers that passed normalise_number, so is the number type that decides between the
# prefix's zones and the country's zones. The length is in the key because it can change the type.
_zone_cache: dict[tuple[str, int], tuple[str, ...]] = {}


def contact_zones(number: str, timezone: str | None, default_timezone: str | None) -> tuple[str, ...]:
    """The IANA zones whose calling hours apply to a contact, most specific source first.

    ``number`` is E.164 (as normalise_number returns it). The CSV's ``timezone`` wins, then the
    zones of the number's prefix, then the campaign's default; with none of them, NoTimezone.
    """
    if timezone:
        _zone(timezone)
        return (timezone,)
    zones = number_zones(number)
    if zones:
        return zones
    if default_timezone:
        _zone(default_timezone)
        return (default_timezone,)
    raise NoTimezone(
        'cannot tell the time zone of the number: add a "timezone" column to the CSV '
        "(an IANA name such as America/New_York) or set the campaign's default_timezone"
    )


def number_zones(number: str) -> tuple[str, ...]:
    """The zones phonenumbers gives for an E.164 number; empty when it knows none."""
    digits = number[1:]
    cc_length = _country_code_length(digits) if number.startswith('+') and digits.isdigit() else 0
    if not cc_length:
        return _lookup_zones(number)
    key = (digits[: cc_length + _NATIONAL_PREFIX], len(digits))
    zones = _zone_cache.get(key)
    if zones is None:
        zones = _lookup_zones(number)
        # An invalid number maps to no zone; caching that would hide the zones of valid neighbours.
        if zones:
            if len(_zone_cache) >= _ZONE_CACHE_MAX:
                _zone_cache.clear()
            _zone_cache[key] = zones
    return zones


def _lookup_zones(number: str) -> tuple[str, ...]:
    try:
        parsed = phonenumbers.parse(number)
    except phonenumbers.NumberParseException:
        return ()
    zones = phone_timezones.time_zones_for_number(parsed)
    return tuple(z for z in zones if z != phone_timezones.UNKNOWN_TIMEZONE and _known_zone(z))


@functools.cache
def _known_zone(name: str) -> bool:
    # phonenumbers' metadata may name a zone newer than this machine's tz database.
    try:
        _zone(name)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f'unknown time zone {name!r} (expected an IANA name such as America/New_York)') from None


@functools.lru_cache(maxsize=256)
def _day_indices(days: tuple[Weekday, ...]) -> frozenset[int]:
    return frozenset(day.number for day in days)


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError('now must be timezone-aware (UTC)')


# --- calling hours ------------------------------------------------------------------------------


def is_callable(zones: Sequence[str], hours: CallingHours, now: datetime) -> bool:
    """True iff in every zone ``now`` falls on an allowed weekday and start <= local time < end."""
    _require_aware(now)
    days = _day_indices(hours.days)
    for name in zones:
        local = now.astimezone(_zone(name))
        if local.weekday() not in days or not hours.start <= local.time() < hours.end:
            return False
    return True


def next_callable(zones: Sequence[str], hours: CallingHours, now: datetime) -> datetime:
    """The earliest instant >= now at which is_callable holds (``now`` itself when it does).

    The set of callable instants is an intersection of unions of intervals, so it can only begin at
    ``now`` or where one zone's interval begins: a window start on an allowed day (both readings of it
    on a fall-back day) or a DST change (the first valid instant when the start falls in the skipped
    hour). Those candidates are checked in time order.
    """
    if not zones:
        raise ValueError('a contact needs at least one time zone')
    if is_callable(zones, hours, now):
        return now
    limit = now + HORIZON
    candidates = sorted({c for name in zones for c in _interval_starts(name, hours, now, limit)})
    for candidate in candidates:
        if is_callable(zones, hours, candidate):
            return candidate
    raise NeverCallable(
        f'calling hours {_hhmm(hours.start)}-{_hhmm(hours.end)} never hold in all of '
        f'{", ".join(zones)} at once within {HORIZON.days} days'
    )


def initial_due(zones: Sequence[str], hours: CallingHours, now: datetime) -> datetime:
    """When a newly loaded contact is first due."""
    return next_callable(zones, hours, now)


def _interval_starts(name: str, hours: CallingHours, now: datetime, limit: datetime) -> Iterator[datetime]:
    """Instants in (now, limit] where the zone's callable intervals may begin, in UTC."""
    tz = _zone(name)
    days = _day_indices(hours.days)
    first = now.astimezone(tz).date() - DAY
    for offset in range((limit - now).days + 3):
        day = first + timedelta(days=offset)
        if day.weekday() not in days:
            continue
        for fold in (0, 1):
            start = datetime.combine(day, hours.start, tzinfo=tz).replace(fold=fold).astimezone(UTC)
            if now < start <= limit:
                yield start
    utc_day = now.astimezone(UTC).date()
    while utc_day <= limit.astimezone(UTC).date():
        for change in _offset_changes(name, utc_day):
            if now < change <= limit:
                yield change
        utc_day += DAY


@functools.lru_cache(maxsize=8192)
def _offset_changes(name: str, utc_day: date) -> tuple[datetime, ...]:
    """The instants during a UTC day at which the zone's UTC offset changes (DST), to the second."""
    tz = _zone(name)
    changes = []
    lo = datetime.combine(utc_day, time(), tzinfo=UTC)
    end = lo + DAY
    while lo < end:
        hi = lo + _OFFSET_SAMPLE
        if lo.astimezone(tz).utcoffset() != hi.astimezone(tz).utcoffset():
            changes.append(_bisect_change(tz, lo, hi))
        lo = hi
    return tuple(changes)


def _bisect_change(tz: zoneinfo.ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    before = lo.astimezone(tz).utcoffset()
    low, high = 0, int((hi - lo).total_seconds())
    while high - low > 1:
        mid = (low + high) // 2
        if (lo + timedelta(seconds=mid)).astimezone(tz).utcoffset() == before:
            low = mid
        else:
            high = mid
    return lo + timedelta(seconds=high)


def window_description(zones: Sequence[str], hours: CallingHours, now: datetime) -> str:
    """Short human text for status output, such as 'opens 09:00 America/Chicago (in 3h12m)'."""
    try:
        opens = next_callable(zones, hours, now)
    except NeverCallable:
        return f'never open in all of {", ".join(zones)} at once'
    if opens == now:
        ends = ((name, _window_end(name, hours, now)) for name in zones)
        name, closes = min(ends, key=lambda item: item[1])
        local = closes.astimezone(_zone(name))
        label = '24:00' if hours.end == time.max else f'{local:%H:%M}'
        return f'open until {label} {name} (closes in {_duration(closes - now)})'
    name = min(zones, key=lambda z: _seconds_after_start(opens.astimezone(_zone(z)).time(), hours.start))
    local = opens.astimezone(_zone(name))
    day = '' if local.date() == now.astimezone(_zone(name)).date() else f'{local:%a} '
    return f'opens {day}{local:%H:%M} {name} (in {_duration(opens - now)})'


def _window_end(name: str, hours: CallingHours, now: datetime) -> datetime:
    local = now.astimezone(_zone(name))
    if hours.end == time.max:
        end = datetime.combine(local.date() + DAY, time(), tzinfo=local.tzinfo)
    else:
        end = datetime.combine(local.date(), hours.end, tzinfo=local.tzinfo)
    return end.astimezone(UTC)


def _seconds_after_start(local: time, start: time) -> float:
    delta = (local.hour * 3600 + local.minute * 60 + local.second) - (start.hour * 3600 + start.minute * 60)
    return delta if delta >= 0 else math.inf


def _hhmm(value: time) -> str:
    return '24:00' if value == time.max else f'{value:%H:%M}'


def _duration(delta: timedelta) -> str:
    minutes = math.ceil(delta.total_seconds() / 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f'{days}d{hours}h'
    if hours:
        return f'{hours}h{minutes:02d}m'
    return f'{minutes}m'


# --- retries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryDecision:
    """Either ``retry_at`` (redial then) or ``final_outcome`` (the contact is done); never both."""

    retry_at: datetime | None
    final_outcome: Outcome | None
    reason: str


def decide_retry(
    policy: RetryPolicy,
    hours: CallingHours,
    zones: Sequence[str],
    outcome: Outcome,
    attempts_made: int,
    attempt_times: Sequence[datetime],
    now: datetime,
) -> RetryDecision:
    """Whether and when to redial a contact whose latest attempt ended with ``outcome``.

    ``attempt_times`` are the start times of every attempt so far, this one included. The retry is
    due after the outcome's delay, later if that would exceed ``max_per_24h`` attempts in any rolling
    24 hours, and later again until the calling hours hold in all of the contact's zones.
    """
    _require_aware(now)
    if outcome not in policy.retry_on:
        return RetryDecision(None, outcome, f'{outcome} is not retried')
    if attempts_made >= policy.max_attempts:
        return RetryDecision(None, outcome, f'max attempts ({policy.max_attempts}) reached')
    delay = timedelta(seconds=policy.delays[outcome])
    candidate = now + delay
    notes = [f'{outcome}: retry after {_duration(delay)}']
    capped = _after_daily_cap(policy.max_per_24h, attempt_times, candidate)
    if capped != candidate:
        notes.append(f'held by the {policy.max_per_24h} per 24 h cap')
        candidate = capped
    try:
        retry_at = next_callable(zones, hours, candidate)
        if outcome in policy.other_hour_on and attempt_times:
            moved = _other_hour(zones, hours, max(attempt_times), retry_at)
            if moved != retry_at:
                notes.append('moved to another hour of the day')
                retry_at = moved
    except NeverCallable as exc:
        return RetryDecision(None, outcome, f'not retried: {exc}')
    if retry_at != candidate:
        notes.append('moved into the calling window')
    return RetryDecision(retry_at, None, ', '.join(notes))


def _other_hour(zones: Sequence[str], hours: CallingHours, last: datetime, candidate: datetime) -> datetime:
    """The first callable instant >= candidate whose local hour (in the contact's first zone) differs
    from the hour ``last`` started in; ``candidate`` itself when no such instant is near."""
    tz = _zone(zones[0])
    taken = last.astimezone(tz).hour
    moment = candidate
    for _ in range(24):
        if moment.astimezone(tz).hour != taken:
            return moment
        local = moment.astimezone(tz)
        next_hour = (local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)).astimezone(UTC)
        moment = next_callable(zones, hours, next_hour)
    return candidate


def decide_callback(
    policy: RetryPolicy,
    hours: CallingHours,
    zones: Sequence[str],
    disposition: str,
    requested: datetime | None,
    attempts_made: int,
    attempt_times: Sequence[datetime],
    now: datetime,
) -> RetryDecision:
    """Whether and when to call back a contact whose agent recorded ``disposition``.

    A call-back the person asked for is due at the time they named (now, if it has passed), else after
    the disposition's delay; outside the outcome delays, but inside the attempt budget, the 24 h cap
    and the calling hours (the nearest callable instant when the time named is not).
    """
    _require_aware(now)
    if disposition not in policy.retry_dispositions:
        return RetryDecision(None, None, f'{disposition} is not called back')
    if attempts_made >= policy.max_attempts:
        return RetryDecision(None, None, f'max attempts ({policy.max_attempts}) reached')
    delay = timedelta(seconds=policy.disposition_delays[disposition])
    wanted = max(requested, now) if requested is not None else now + delay
    candidate = _after_daily_cap(policy.max_per_24h, attempt_times, wanted)
    try:
        retry_at = next_callable(zones, hours, candidate)
    except NeverCallable as exc:
        return RetryDecision(None, None, f'not called back: {exc}')
    return RetryDecision(retry_at, None, f'{disposition}: called back at {retry_at:%Y-%m-%d %H:%M} UTC')


def _after_daily_cap(max_per_24h: int, attempt_times: Sequence[datetime], candidate: datetime) -> datetime:
    """The earliest instant >= candidate with fewer than max_per_24h attempts in the 24 h before it."""
    times = sorted(attempt_times)
    while True:
        counted = [t for t in times if candidate - CAP_WINDOW < t <= candidate]
        if len(counted) < max_per_24h:
            return candidate
        # Once the oldest counted attempt is exactly 24 h old it no longer counts.
        candidate = counted[0] + CAP_WINDOW
