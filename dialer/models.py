"""Domain models shared by every layer: outcomes, contact records and a campaign's configuration."""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime, time
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


if TYPE_CHECKING:
    from collections.abc import Mapping


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
    #: Answered by a machine: the agent used its ``leaveVoicemail`` tool (``voicemail_left`` says
    #: whether a message was left). Retried by default, in another hour of the day.
    VOICEMAIL = 'voicemail'
    #: The contact called us back and the call was answered (campaign option ``callbacks.close_contact``):
    #: closed without another outbound attempt (an attempt already claimed is stopped by send.lua).
    CALLED_BACK = 'called_back'


#: Outcomes that can never be retried: a retry would call a person who answered, a number that does
#: not exist, someone who asked not to be called, a contact the operator withdrew, or one who called us.
NEVER_RETRIED = frozenset(
    {Outcome.ANSWERED, Outcome.INVALID_NUMBER, Outcome.DNC, Outcome.CANCELLED, Outcome.CALLED_BACK}
)


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
    return {
        Outcome.NO_ANSWER: 3600.0,
        Outcome.BUSY: 600.0,
        Outcome.FAILED: 900.0,
        Outcome.REJECTED: 3600.0,
        Outcome.VOICEMAIL: 3 * 3600.0,
    }


#: What a conversation achieved, as the agent reports it through the dialer's HTTP tool.
DISPOSITION_PATTERN = r'^[a-z][a-z0-9_]{0,31}$'
Disposition = Annotated[str, Field(pattern=DISPOSITION_PATTERN)]
DEFAULT_DISPOSITIONS: tuple[str, ...] = (
    'interested',
    'not_interested',
    'callback_requested',
    'do_not_call',
    'wrong_person',
)
#: The opt-out: the number goes on the global DNC list the moment the agent reports it.
DO_NOT_CALL = 'do_not_call'
CALLBACK_REQUESTED = 'callback_requested'
#: A campaign's disposition list is a metric label: bounded.
MAX_DISPOSITIONS = 20


def _default_disposition_delays() -> dict[str, float]:
    return {CALLBACK_REQUESTED: 86400.0}


class RetryPolicy(_Strict):
    """Which outcomes are redialled, after how long, and how often at most."""

    retry_on: tuple[Outcome, ...] = (Outcome.NO_ANSWER, Outcome.BUSY, Outcome.FAILED, Outcome.VOICEMAIL)
    #: Seconds to wait before the next attempt, by the outcome of the last one.
    delays: dict[Outcome, float] = Field(default_factory=_default_delays)
    #: Outcomes whose retry must fall in another local hour of the day than the attempt (a machine
    #: that answered at 10:15 is likelier to be a person at another time of day).
    other_hour_on: tuple[Outcome, ...] = (Outcome.VOICEMAIL,)
    #: Dispositions (reported by the agent on an answered call) that make another attempt: at the
    #: time the person asked for, else after ``disposition_delays``. Never ``do_not_call``.
    retry_dispositions: tuple[Disposition, ...] = (CALLBACK_REQUESTED,)
    disposition_delays: dict[Disposition, float] = Field(default_factory=_default_disposition_delays)
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
        if DO_NOT_CALL in self.retry_dispositions:
            raise ValueError('retry_dispositions must not list do_not_call: an opt-out is never called again')
        undelayed = [d for d in self.retry_dispositions if d not in self.disposition_delays]
        if undelayed:
            raise ValueError(
                f'retry_dispositions lists {", ".join(undelayed)} but disposition_delays gives no delay for it'
            )
        if any(d < 0 for d in self.disposition_delays.values()):
            raise ValueError('disposition_delays must not be negative')
        # max_attempts = 1 with the default retry_on simply means "no retries": not a contradiction
        return self


#: Ultravox agent ids are UUIDs; a looser pattern keeps simulator and test ids usable.
AGENT_ID_PATTERN = r'^[A-Za-z0-9-]{1,64}$'


class CallbackPolicy(_Strict):
    """What happens when a contact of the campaign calls back (workers/sip_fallback.py)."""

    #: The agent that answers a call-back; None = the campaign's own agent (or, for a system-prompt
    #: campaign, an ad-hoc call with its prompt).
    agent_id: str | None = Field(default=None, pattern=AGENT_ID_PATTERN)
    #: An answered call-back closes the contact (outcome ``called_back``): no further outbound attempt.
    close_contact: bool = True
    #: Once the campaign has ended (completed or cancelled), call-backs are still routed to it for this
    #: many seconds after its end; later callers get the unknown-caller default.
    route_after_end: float = Field(default=7 * 86400.0, ge=0)


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
    #: What the agent may report through the dialer's outcome tool (when ``DIALER_TOOL_BASE_URL`` is set).
    dispositions: tuple[Disposition, ...] = DEFAULT_DISPOSITIONS
    #: Ad-hoc (system prompt) campaigns: the message the built-in ``leaveVoicemail`` tool leaves; None
    #: = the agent decides (agent campaigns configure their tools on the agent).
    voicemail_message: str | None = Field(default=None, min_length=1, max_length=1000)
    #: Call-backs from the campaign's contacts (agent, closing the contact, routing after the end).
    callbacks: CallbackPolicy = CallbackPolicy()
    #: Ask Ultravox to record each call (``recordingEnabled``); the attempt export then links each
    #: answered call's recording (``/api/calls/{id}/recording``).
    recording: bool = False

    @field_validator('dispositions')
    @classmethod
    def _dispositions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError('dispositions needs at least one entry')
        if len(value) > MAX_DISPOSITIONS:
            raise ValueError(f'dispositions lists {len(value)} entries; at most {MAX_DISPOSITIONS}')
        return tuple(dict.fromkeys(value))

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
        # one spelling per instant, so that the same start given with another offset compares equal
        return value.astimezone(UTC) if value is not None else None

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
        if self.voicemail_message is not None and self.agent_id is not None:
            raise ValueError(
                "voicemail_message is for system_prompt campaigns; give an agent's leaveVoicemail tool its message "
                'on the agent'
            )
        unknown = [d for d in self.retry.retry_dispositions if d not in self.dispositions]
        # the default retry list names callback_requested; a campaign without it simply never uses it
        if unknown and self.retry.retry_dispositions != (CALLBACK_REQUESTED,):
            raise ValueError(f'retry.retry_dispositions lists {", ".join(unknown)}, which dispositions does not')
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


def attempts_counted(progress: Mapping[str, Any], attempt: int | None = None) -> int:
    """Attempts that count against a contact's budget: those made since it was last requeued.

    ``progress`` is the contact's progress record (``a``: attempts made, ``b``: attempts made before
    its last requeue); ``attempt`` overrides ``a`` with the attempt just made.
    """
    made = int(progress.get('a') or 0) if attempt is None else attempt
    return made - int(progress.get('b') or 0)
