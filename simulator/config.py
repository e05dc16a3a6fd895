"""The simulator's configuration: outcome rates, call timings, account limits, faults and webhooks."""

from __future__ import annotations

import functools
import json
import tomllib
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


if TYPE_CHECKING:
    from pathlib import Path


class SimOutcome(StrEnum):
    """How a simulated call ends; the names double as the values of ``forced_outcomes``."""

    ANSWERED = 'answered'
    NO_ANSWER = 'no_answer'
    BUSY = 'busy'
    INVALID_NUMBER = 'invalid_number'
    REJECTED = 'rejected'
    UNAVAILABLE = 'unavailable'
    CONNECTION_ERROR = 'connection_error'
    SYSTEM_ERROR = 'system_error'
    #: Answered by a machine: the agent invokes ``leaveVoicemail`` (see simulator/agent.py).
    VOICEMAIL = 'voicemail'


class ThrottleConfig(BaseModel):
    """Limits of one named account throttle (``?throttle=<name>`` on the create endpoints)."""

    model_config = ConfigDict(extra='forbid')

    per_second: int | None = Field(default=None, ge=1)
    per_minute: int | None = Field(default=None, ge=1)


class SimulatorConfig(BaseModel):
    """Every knob of the simulator. Durations are simulated seconds unless the name says ``real``."""

    model_config = ConfigDict(extra='forbid', validate_assignment=True)

    # auth and determinism
    api_key: str | None = None  # None: any non-empty X-API-Key is accepted
    seed: int = 0
    time_scale: float = Field(default=1.0, gt=0)  # real seconds per simulated second

    # outcome rates (normalised; failure_rate is split between connection_error and system_error)
    answer_rate: float = Field(default=0.6, ge=0)
    no_answer_rate: float = Field(default=0.15, ge=0)
    busy_rate: float = Field(default=0.1, ge=0)
    invalid_number_rate: float = Field(default=0.04, ge=0)
    rejected_rate: float = Field(default=0.03, ge=0)
    unavailable_rate: float = Field(default=0.04, ge=0)
    failure_rate: float = Field(default=0.04, ge=0)
    # E.164 number (user part of the SIP ``to``) -> outcomes of its 1st, 2nd, ... call
    forced_outcomes: dict[str, list[SimOutcome]] = Field(default_factory=dict)

    # the agent's side of answered calls (simulator/agent.py)
    voicemail_rate: float = Field(default=0.0, ge=0, le=1)  # share of answered calls that reach voicemail
    tool_call_rate: float = Field(default=1.0, ge=0, le=1)  # share of answered calls that call the HTTP tool
    disposition_mix: dict[str, float] = Field(default_factory=dict)  # empty: uniform over the tool's enum
    # E.164 number -> dispositions reported on its 1st, 2nd, ... answered call (then the mix)
    forced_dispositions: dict[str, list[str]] = Field(default_factory=dict)
    callback_at: str | None = None  # callbackAt sent with callback_requested (ISO 8601), None: omitted
    tool_delay: float = Field(default=0.0, ge=0)  # simulated seconds after the answer before the tool call

    # timings
    ring_min: float = Field(default=2.0, ge=0)
    ring_max: float = Field(default=20.0, ge=0)
    talk_min: float = Field(default=10.0, ge=0)
    talk_max: float = Field(default=180.0, ge=0)
    talk_distribution: Literal['uniform', 'lognormal'] = 'uniform'
    no_answer_seconds: float | None = Field(default=None, ge=0)  # None: ring_max (capped by joinTimeout)
    agent_hangup_share: float = Field(default=0.5, ge=0, le=1)
    billing_delay: float = Field(default=5.0, ge=0)

    # account limits (None: off)
    max_concurrent_calls: int | None = Field(default=None, ge=1)
    creates_per_second: int | None = Field(default=None, ge=1)
    creates_per_minute: int | None = Field(default=None, ge=1)
    throttles: dict[str, ThrottleConfig] = Field(default_factory=dict)  # empty: any throttle name passes
    # an account's read limit on ``GET /api/calls/{id}/messages`` (429 with Retry-After over it)
    message_reads_per_second: int | None = Field(default=None, ge=1)
    known_agents: list[str] | None = None  # None: any UUID is an agent
    # 'payment_required' answers every API request with 402, 'disabled' with 403 (an unusable account)
    account_state: Literal['active', 'payment_required', 'disabled'] = 'active'
    reject_unknown_fields: bool = False  # the published schema allows unknown fields; opt in to refuse
    # telephony providers (simulator/providers.py): those configured in the account's telephony configs
    # (``medium.<provider>.outgoing`` is refused for the others), and each provider's own API account
    telephony_providers: list[Literal['twilio', 'telnyx', 'plivo']] = Field(default_factory=list)
    provider_accounts: dict[str, dict[str, str]] = Field(default_factory=dict)  # provider -> credentials
    provider_callback_loss_rate: float = Field(default=0.0, ge=0, le=1)  # status callbacks never sent
    provider_calls_per_second: int | None = Field(default=None, ge=1)  # a provider's own limit (429 over it)
    # a provider's create answers this many real seconds late (the call is placed when the request arrives)
    provider_create_delay: float = Field(default=0.0, ge=0)

    # fault injection (probabilities per request; slow_seconds is real time). A slow create is
    # completed after slow_seconds whether or not the client is still waiting for the answer.
    error_5xx_rate: float = Field(default=0.0, ge=0, le=1)
    slow_rate: float = Field(default=0.0, ge=0, le=1)
    slow_seconds: float = Field(default=5.0, ge=0)
    drop_rate: float = Field(default=0.0, ge=0, le=1)
    lost_response_rate: float = Field(default=0.0, ge=0, le=1)
    get_error_rate: float = Field(default=0.0, ge=0, le=1)

    # webhooks
    webhook_url: str | None = None
    webhook_secret: list[str] = Field(default_factory=list)
    webhook_events: list[str] = Field(default_factory=lambda: ['call.ended', 'call.billed'])
    webhook_duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    webhook_max_tries: int = Field(default=10, ge=1)
    webhook_retry_base: float = Field(default=1.0, gt=0)  # first retry delay, doubled each try

    # listing
    default_page_size: int = Field(default=100, ge=1)
    max_page_size: int = Field(default=1000, ge=1)

    @field_validator('webhook_secret', mode='before')
    @classmethod
    def _one_secret_is_a_list(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value

    @field_validator('webhook_events')
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        unknown = set(value) - {'call.started', 'call.joined', 'call.ended', 'call.billed'}
        if unknown:
            raise ValueError(f'unknown webhook events: {sorted(unknown)}')
        return value

    @model_validator(mode='after')
    def _ranges_are_ordered(self) -> SimulatorConfig:
        if self.ring_min > self.ring_max:
            raise ValueError('ring_min must not exceed ring_max')
        if self.talk_min > self.talk_max:
            raise ValueError('talk_min must not exceed talk_max')
        return self

    @functools.cached_property
    def outcome_weights(self) -> list[tuple[SimOutcome, float]]:
        half_failure = self.failure_rate / 2
        weights = [
            (SimOutcome.ANSWERED, self.answer_rate),
            (SimOutcome.NO_ANSWER, self.no_answer_rate),
            (SimOutcome.BUSY, self.busy_rate),
            (SimOutcome.INVALID_NUMBER, self.invalid_number_rate),
            (SimOutcome.REJECTED, self.rejected_rate),
            (SimOutcome.UNAVAILABLE, self.unavailable_rate),
            (SimOutcome.CONNECTION_ERROR, half_failure),
            (SimOutcome.SYSTEM_ERROR, half_failure),
        ]
        total = sum(weight for _, weight in weights)
        if total <= 0:
            return [(SimOutcome.ANSWERED, 1.0)]
        return [(outcome, weight / total) for outcome, weight in weights]

    def updated(self, changes: dict[str, Any]) -> SimulatorConfig:
        """A new config with ``changes`` applied and everything re-validated (for ``POST /_sim/config``)."""
        return SimulatorConfig.model_validate({**self.model_dump(), **changes})


def load_config_file(path: Path) -> dict[str, Any]:
    """Read SimulatorConfig fields from a TOML (``.toml``) or JSON file."""
    text = path.read_text(encoding='utf-8')
    data: Any = tomllib.loads(text) if path.suffix.lower() == '.toml' else json.loads(text)
    if not isinstance(data, dict):
        raise TypeError(f'{path}: expected a table/object of SimulatorConfig fields')
    return data
