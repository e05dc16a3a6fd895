"""Domain models shared by every layer: outcomes, contact records and a campaign's configuration."""

from __future__ import annotations

import re
import zoneinfo
from datetime import datetime, time
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Literal, Self

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


NAME_PATTERN = r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'
_NAME = re.compile(NAME_PATTERN)

Name = Annotated[str, Field(pattern=NAME_PATTERN)]


def check_name(kind: str, value: str) -> str:
    """Campaign and trunk names end up inside Redis keys, so only a safe alphabet is allowed."""
    if not _NAME.match(value):
        raise ValueError(
            f'{kind} name {value!r} must be 1-64 letters, digits, "_", "." or "-", starting with a letter or digit'
        )
    return value


class Outcome(StrEnum):
    """How one attempt (and, for the last attempt, the contact) ended."""

    ANSWERED = 'answered'
    NO_ANSWER = 'no_answer'
    BUSY = 'busy'
    INVALID_NUMBER = 'invalid_number'
    REJECTED = 'rejected'
    FAILED = 'failed'
    DNC = 'dnc'
    CANCELLED = 'cancelled'


#: Outcomes that can never be retried: a retry would call a person who answered, a number that does
#: not exist, someone who asked not to be called, or a contact the operator withdrew.
NEVER_RETRIED = frozenset({Outcome.ANSWERED, Outcome.INVALID_NUMBER, Outcome.DNC, Outcome.CANCELLED})


class ContactStatus(StrEnum):
    PENDING = 'pending'  # waiting for its first dial (maybe for its calling window)
    DIALING = 'dialing'  # claimed: a slot is held and the create is being sent
    IN_CALL = 'in_call'  # the call exists at Ultravox and has not been seen to end
    RETRY_WAIT = 'retry_wait'  # ended without a final outcome; due again later
    DONE = 'done'  # final outcome recorded


class CampaignState(StrEnum):
    ACTIVE = 'active'
    PAUSED = 'paused'
    CANCELLED = 'cancelled'
    COMPLETED = 'completed'


class Weekday(StrEnum):
    MON = 'mon'
    TUE = 'tue'
    WED = 'wed'
    THU = 'thu'
    FRI = 'fri'
    SAT = 'sat'
    SUN = 'sun'

    @property
    def number(self) -> int:
        """Monday is 0, as in ``datetime.weekday()``."""
        return list(Weekday).index(self)


#: 47 CFR 64.1200(c)(1): telephone solicitations only between 8 a.m. and 9 p.m. called party's time.
LEGAL_EARLIEST = time(8, 0)
LEGAL_LATEST = time(21, 0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra='forbid', frozen=True)


class CallingHours(_Strict):
    """When a contact may be called, in the contact's own local time."""

    start: time = time(9, 0)
    end: time = time(20, 0)
    days: tuple[Weekday, ...] = tuple(Weekday)
    #: Off only for internal test lines: lets hours leave the 08:00-21:00 legal bound.
    legal_bound: bool = True

    @field_validator('start', 'end', mode='before')
    @classmethod
    def _parse_time(cls, value: Any) -> Any:
        # '24:00' is the natural way to write "until midnight".
        if value in {'24:00', '24:00:00'}:
            return time.max
        return value

    @model_validator(mode='after')
    def _consistent(self) -> Self:
        if self.start >= self.end:
            raise ValueError(f'calling hours start {self.start:%H:%M} must be before end {self.end:%H:%M}')
        if not self.days:
            raise ValueError('calling hours need at least one day of the week')
        if self.legal_bound and (self.start < LEGAL_EARLIEST or self.end > LEGAL_LATEST):
            raise ValueError(
                f'calling hours {self.start:%H:%M}-{self.end:%H:%M} leave the legal 08:00-21:00 bound '
                '(set legal_bound = false only for internal test lines)'
            )
        return self


def _default_delays() -> dict[Outcome, float]:
    return {Outcome.NO_ANSWER: 3600.0, Outcome.BUSY: 600.0, Outcome.FAILED: 900.0, Outcome.REJECTED: 3600.0}


class RetryPolicy(_Strict):
    """Which outcomes are redialled, after how long, and how often at most."""

    retry_on: tuple[Outcome, ...] = (Outcome.NO_ANSWER, Outcome.BUSY, Outcome.FAILED)
    #: Seconds to wait before the next attempt, by the outcome of the last one.
    delays: dict[Outcome, float] = Field(default_factory=_default_delays)
    max_attempts: int = Field(default=3, ge=1, le=100)
    #: At most this many attempts per contact in any rolling 24 hours (state "N calls per day" rules).
    max_per_24h: int = Field(default=3, ge=1, le=100)

    @model_validator(mode='after')
    def _consistent(self) -> Self:
        never = sorted(set(self.retry_on) & NEVER_RETRIED)
        if never:
            raise ValueError(f'retry_on lists outcomes that are never retried: {", ".join(never)}')
        missing = [o for o in self.retry_on if o not in self.delays]
        if missing:
            raise ValueError(f'retry_on lists {", ".join(missing)} but delays gives no delay for it')
        negative = [o for o, d in self.delays.items() if d < 0]
        if negative:
            raise ValueError(f'delays must not be negative (for {", ".join(negative)})')
        if len(self.retry_on) != len(set(self.retry_on)):
            raise ValueError('retry_on lists an outcome twice')
        # max_attempts = 1 with the default retry_on simply means "no retries": not a contradiction
        return self


#: phonenumbers' PhoneNumberType names, lower-case (campaigns/numbers.py maps them).
NUMBER_TYPES: tuple[str, ...] = (
    'fixed_line', 'mobile', 'fixed_line_or_mobile', 'toll_free', 'premium_rate', 'shared_cost', 'voip',
    'personal_number', 'pager', 'uan', 'voicemail',
)  # fmt: skip
NumberType = Literal[
    'fixed_line', 'mobile', 'fixed_line_or_mobile', 'toll_free', 'premium_rate', 'shared_cost', 'voip',
    'personal_number', 'pager', 'uan', 'voicemail',
]  # fmt: skip
#: Numbers a person answers; premium-rate, shared-cost, toll-free, pager, UAN and voicemail are not.
DEFAULT_NUMBER_TYPES: tuple[NumberType, ...] = (
    'fixed_line',
    'mobile',
    'fixed_line_or_mobile',
    'voip',
    'personal_number',
)


class CampaignConfig(_Strict):
    """Everything a worker needs to dial a campaign's contacts. Stored as JSON in Redis."""

    name: Name
    trunk: Name
    agent_id: str | None = None
    system_prompt: str | None = None
    default_region: str = 'US'
    #: Used when a contact has no ``timezone`` and its number maps to no zone.
    default_timezone: str | None = None
    hours: CallingHours = CallingHours()
    retry: RetryPolicy = RetryPolicy()
    #: Bounds on one call, in seconds (Ultravox ``maxDuration`` / ``joinTimeout``); None = Ultravox default.
    max_duration: float | None = Field(default=None, gt=0, le=3600 * 4)
    join_timeout: float | None = Field(default=None, gt=0, le=600)
    first_speaker: Literal['user', 'agent'] = 'user'
    #: Optional Ultravox call throttle name (``?throttle=``).
    throttle: str | None = None
    #: phonenumbers number types a contact's number may have; others are rejected at load.
    number_types: tuple[NumberType, ...] = DEFAULT_NUMBER_TYPES
    #: No contact is due before this instant (set by ``load --start-at``); None = as soon as hours allow.
    start_at: datetime | None = None

    @field_validator('number_types')
    @classmethod
    def _number_types(cls, value: tuple[NumberType, ...]) -> tuple[NumberType, ...]:
        if not value:
            raise ValueError(f'number_types needs at least one of {", ".join(NUMBER_TYPES)}')
        return tuple(dict.fromkeys(value))

    @field_validator('start_at')
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError('start_at needs a UTC offset, e.g. 2026-03-02T09:00:00+00:00')
        return value

    @field_validator('default_region')
    @classmethod
    def _region(cls, value: str) -> str:
        if not re.fullmatch(r'[A-Z]{2}', value):
            raise ValueError(f'default_region must be a two-letter ISO country code such as US, not {value!r}')
        return value

    @field_validator('default_timezone')
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            check_timezone(value)
        return value

    @model_validator(mode='after')
    def _one_agent_source(self) -> Self:
        if (self.agent_id is None) == (self.system_prompt is None):
            raise ValueError('a campaign needs exactly one of agent_id or system_prompt')
        return self

    @property
    def join_timeout_seconds(self) -> float:
        return self.join_timeout if self.join_timeout is not None else 30.0

    @property
    def max_duration_seconds(self) -> float:
        return self.max_duration if self.max_duration is not None else 3600.0


@cache  # only known zones are cached (a failure raises): a few hundred at most
def check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f'unknown time zone {value!r} (expected an IANA name such as America/New_York)') from None
    return value


class ContactRecord(_Strict):
    """One contact as the loader stored it. Short JSON keys keep a million of them small in Redis."""

    model_config = ConfigDict(extra='forbid', frozen=True, populate_by_name=True)

    contact_id: str = Field(alias='i')
    line: int = Field(alias='l')
    name: str | None = Field(default=None, alias='n')
    timezone: str | None = Field(default=None, alias='z')
    context: dict[str, str] = Field(default_factory=dict, alias='c')

    def dump(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_defaults=True)

    @staticmethod
    def dump_fields(contact_id: str, line: int, name: str, timezone: str, context: dict[str, str]) -> bytes:
        """The JSON ``dump`` gives for these fields (empty name or zone: none), UTF-8 encoded, without
        building a model: the loader writes a million of them."""
        record: dict[str, object] = {'i': contact_id, 'l': line}
        if name:
            record['n'] = name
        if timezone:
            record['z'] = timezone
        if context:
            record['c'] = context
        return pydantic_core.to_json(record)
