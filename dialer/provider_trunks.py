"""Trunk kinds that reach a phone through a telephony provider: Twilio, Telnyx, Plivo.

Two modes, chosen per trunk (seed "phone integration", Ultravox's ``CallMedium``):

- ``ultravox`` (default): the Create Call request carries ``medium.<provider>.outgoing {to, from,
  additionalParams}`` and Ultravox places the call with the credentials stored in the account's
  telephony config (``/api/telephony_configs/<provider>``). No provider credential lives here.
- ``direct``: the Create Call request carries ``medium.<provider>: {}``; Ultravox answers with a
  ``joinUrl`` and the dialer places the phone leg itself with the provider's REST API
  (``dialer/providers/``), streaming to that ``joinUrl``. The credentials are trunk secrets with the
  same rules as SIP passwords: inline, ``<field>_env`` or ``<field>_file``; masked in logs, never in
  Redis, metrics or exports.

``additional_params`` are checked against the provider's documented create-call parameters (only the
keys listed below are accepted; provider names as the provider spells them):

- Twilio Calls resource (form fields): https://www.twilio.com/docs/voice/api/call-resource
- Telnyx TeXML / Call Control dial: https://developers.telnyx.com/api/call-scripting/initiate-texml-call
  (in direct mode they become Call Control Dial fields: ``dialer/providers/telnyx.py`` ``dial_body``)
- Plivo Make a call: https://www.plivo.com/docs/voice/api/call/make-a-call
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from dialer.models import check_name
from dialer.trunk_base import CONTROL_CATEGORIES, TrunkConfigError, TrunkLimits, resolve_secret


PROVIDER_KINDS = ('twilio', 'telnyx', 'plivo')
_ED25519_KEY_BYTES = 32
_TELNYX_DIAL_MIN_TIMEOUT = 5
Mode = Literal['ultravox', 'direct']

# key -> (type, constraint). Types: int (lo, hi), enum (values), url, bool, events (values), text (max length).
_Spec = tuple[str, Any]
_TWILIO_EVENTS = ('initiated', 'ringing', 'answered', 'completed')
_TWILIO_PARAMS: dict[str, _Spec] = {
    'Timeout': ('int', (1, 600)),
    'TimeLimit': ('int', (1, 14_400)),
    'MachineDetection': ('enum', ('Enable', 'DetectMessageEnd')),
    'MachineDetectionTimeout': ('int', (3, 59)),
    'AsyncAmd': ('enum', ('true', 'false')),
    'AsyncAmdStatusCallback': ('url', None),
    'Record': ('bool', None),
    'StatusCallback': ('url', None),
    'StatusCallbackMethod': ('enum', ('GET', 'POST')),
    'StatusCallbackEvent': ('events', _TWILIO_EVENTS),
}
_TELNYX_PARAMS: dict[str, _Spec] = {
    'Timeout': ('int', (1, 120)),
    'TimeLimit': ('int', (30, 14_400)),
    'MachineDetection': ('enum', ('Enable', 'Disable', 'DetectMessageEnd')),
    'StatusCallback': ('url', None),
    'StatusCallbackMethod': ('enum', ('GET', 'POST')),
    'StatusCallbackEvent': ('events', _TWILIO_EVENTS),
    'Record': ('bool', None),
}
_PLIVO_PARAMS: dict[str, _Spec] = {
    'ring_timeout': ('int', (1, 120)),
    'time_limit': ('int', (1, 86_400)),
    'machine_detection': ('enum', ('true', 'hangup')),
    'machine_detection_time': ('int', (2000, 10_000)),
    'hangup_url': ('url', None),
    'hangup_method': ('enum', ('GET', 'POST')),
    'caller_name': ('text', 50),
}
#: Keys the dialer sets itself in direct mode (status callbacks point at our webhook receiver).
_DIRECT_OWNED = frozenset(
    {'StatusCallback', 'StatusCallbackMethod', 'StatusCallbackEvent', 'AsyncAmdStatusCallback', 'hangup_url'}
)


def _check_param(key: str, spec: _Spec, value: Any) -> None:
    kind, arg = spec
    if kind == 'int':
        lo, hi = arg
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f'{key}: must be a whole number from {lo} to {hi}')
    elif kind == 'enum':
        if value not in arg:
            raise ValueError(f'{key}: must be one of {", ".join(arg)}')
    elif kind == 'bool':
        if not isinstance(value, bool):
            raise ValueError(f'{key}: must be true or false')
    elif kind == 'url':
        parts = urlsplit(value) if isinstance(value, str) else None
        if parts is None or parts.scheme not in {'http', 'https'} or not parts.netloc:
            raise ValueError(f'{key}: must be an http(s) URL')
    elif kind == 'events':
        items = value.split() if isinstance(value, str) else value
        if not isinstance(items, list) or not items or any(item not in arg for item in items):
            raise ValueError(f'{key}: must be a list of {", ".join(arg)}')
    elif kind == 'text' and (not isinstance(value, str) or len(value) > arg):
        raise ValueError(f'{key}: must be text of at most {arg} characters')


class ProviderTrunk(TrunkLimits):
    """Common to the provider kinds: caller id, mode, documented extra parameters, secrets."""

    model_config = ConfigDict(extra='forbid', frozen=True, populate_by_name=True)

    provider: ClassVar[str]
    #: Documented create-call parameters accepted in ``additional_params``.
    documented_params: ClassVar[dict[str, _Spec]]
    #: Secret fields (each also accepted as ``<field>_env`` / ``<field>_file``) required in direct mode.
    secret_fields: ClassVar[tuple[str, ...]]
    #: Plain credential fields required in direct mode.
    id_fields: ClassVar[tuple[str, ...]]
    #: Credentials that verify the provider's signed webhooks: accepted in ultravox mode too, because the
    #: call-back webhooks of a number at the provider are verified whoever places the outbound calls.
    verify_fields: ClassVar[tuple[str, ...]] = ()
    #: Whether the dialer can place this provider's phone leg itself (direct mode) yet.
    direct_available: ClassVar[bool] = False

    name: str
    mode: Mode = 'ultravox'
    caller_id: str = Field(alias='from', pattern=r'^\+[1-9][0-9]{6,14}$')
    additional_params: dict[str, Any] = Field(default_factory=dict)
    #: Direct mode: public base URL of ``dialer webhooks`` (status callbacks go to <url>/webhooks/<kind>).
    #: Without it the provider's call is followed by polling alone.
    callback_url: str | None = None

    @field_validator('name')
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name('trunk', value)

    @field_validator('callback_url')
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if (
                parts.scheme not in {'http', 'https'}
                or not parts.netloc
                or any(ch.isspace() or unicodedata.category(ch) in CONTROL_CATEGORIES for ch in value)
            ):
                raise ValueError('must be an http(s) URL such as https://hooks.example.com')
        return value.rstrip('/') if value else value

    @model_validator(mode='after')
    def _params_and_credentials(self) -> ProviderTrunk:
        for key, value in self.additional_params.items():
            spec = self.documented_params.get(key)
            if spec is None:
                known = ', '.join(sorted(self.documented_params))
                raise ValueError(f'additional_params.{key}: is not a documented {self.provider} parameter ({known})')
            if self.mode == 'direct' and key in _DIRECT_OWNED:
                raise ValueError(f'additional_params.{key}: is set by the dialer in direct mode')
            _check_param(f'additional_params.{key}', spec, value)
        given = [f for f in (*self.secret_fields, *self.id_fields) if self._given(f) and f not in self.verify_fields]
        if self.mode == 'ultravox' and given:
            raise ValueError(
                f'{given[0]}: provider credentials are only used in direct mode; in ultravox mode Ultravox '
                f'uses the credentials stored in your account (/api/telephony_configs/{self.provider})'
            )
        if self.mode == 'direct':
            missing = next((f for f in (*self.id_fields, *self.secret_fields) if not self._given(f)), None)
            if missing is not None:
                hint = f' (or {missing}_env / {missing}_file)' if missing in self.secret_fields else ''
                raise ValueError(f'{missing}: is required in direct mode{hint}')
            if not self.direct_available:
                # refused here, not at the first dial: a campaign on it could never place a call
                raise ValueError(
                    f'mode: direct mode is not available for {self.provider} yet; use mode = "ultravox" '
                    f'(Ultravox places the call with the credentials in /api/telephony_configs/{self.provider})'
                )
        return self

    def _given(self, field: str) -> bool:
        return any(getattr(self, name, None) is not None for name in (field, f'{field}_env', f'{field}_file'))

    def secret(self, field: str) -> SecretStr | None:
        inline: SecretStr | None = getattr(self, field)
        env: str | None = getattr(self, f'{field}_env')
        file: Path | None = getattr(self, f'{field}_file')
        return resolve_secret(self.name, field, inline, env, file)

    def required_secret(self, field: str) -> SecretStr:
        value = self.secret(field)
        if value is None:
            raise TrunkConfigError(f'trunk {self.name!r}: field {field}: is required in direct mode')
        return value

    def secrets(self) -> list[SecretStr]:
        return [value for field in self.secret_fields if (value := self.secret(field)) is not None]

    def resolved_password(self) -> SecretStr | None:
        """A provider trunk has no SIP password (the dial job passes it to ``medium``)."""
        return None

    @property
    def host(self) -> str:
        """Where calls go, for status lines: the provider and how it is reached."""
        return f'{self.provider} ({self.mode} mode)'

    @property
    def transport(self) -> str:
        return self.mode

    def medium(self, number: str, _password: SecretStr | None = None) -> dict[str, Any]:
        """The ``medium`` of the Create Call request; see the module docstring for the two modes."""
        if self.mode == 'direct':
            return {self.provider: {}}
        outgoing: dict[str, Any] = {'to': number, 'from': self.caller_id}
        if self.additional_params:
            outgoing['additionalParams'] = dict(self.additional_params)
        return {self.provider: {'outgoing': outgoing}}

    @property
    def limits(self) -> TrunkLimits:
        return TrunkLimits(max_concurrent=self.max_concurrent, calls_per_second=self.calls_per_second, burst=self.burst)


class TwilioTrunk(ProviderTrunk):
    kind: Literal['twilio'] = 'twilio'
    provider: ClassVar[str] = 'twilio'
    documented_params: ClassVar[dict[str, _Spec]] = _TWILIO_PARAMS
    secret_fields: ClassVar[tuple[str, ...]] = ('auth_token',)
    id_fields: ClassVar[tuple[str, ...]] = ('account_sid',)
    verify_fields: ClassVar[tuple[str, ...]] = ('auth_token',)
    direct_available: ClassVar[bool] = True

    account_sid: str | None = Field(default=None, pattern=r'^AC[0-9a-fA-F]{32}$')
    #: Signs status callbacks (X-Twilio-Signature) and, without an API key, authenticates requests.
    auth_token: SecretStr | None = None
    auth_token_env: str | None = None
    auth_token_file: Path | None = None
    #: Optional API key (SID + secret) used for REST requests instead of the auth token.
    api_key_sid: str | None = Field(default=None, pattern=r'^SK[0-9a-fA-F]{32}$')
    api_key_secret: SecretStr | None = None
    api_key_secret_env: str | None = None
    api_key_secret_file: Path | None = None

    def secrets(self) -> list[SecretStr]:
        extra = self.secret('api_key_secret')
        return [*super().secrets(), *([extra] if extra is not None else [])]


class TelnyxTrunk(ProviderTrunk):
    kind: Literal['telnyx'] = 'telnyx'
    provider: ClassVar[str] = 'telnyx'
    documented_params: ClassVar[dict[str, _Spec]] = _TELNYX_PARAMS
    secret_fields: ClassVar[tuple[str, ...]] = ('api_key',)
    # the public key is required in direct mode: the status webhooks are verified with it
    id_fields: ClassVar[tuple[str, ...]] = ('connection_id', 'public_key')
    verify_fields: ClassVar[tuple[str, ...]] = ('public_key',)
    direct_available: ClassVar[bool] = True

    #: Call Control v2 API key (``Authorization: Bearer``).
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    api_key_file: Path | None = None
    #: The Call Control application (connection) whose outbound voice profile places the calls.
    connection_id: str | None = Field(default=None, pattern=r'^[A-Za-z0-9_-]{1,64}$')
    #: The account's Ed25519 public key (base64) that verifies webhook signatures; not a secret.
    public_key: str | None = None

    @field_validator('public_key')
    @classmethod
    def _public_key(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raw = b''
            if len(raw) != _ED25519_KEY_BYTES:
                raise ValueError(
                    "must be the account's Ed25519 public key, base64 (Mission Control: Keys & Credentials, Public Key)"
                )
        return value

    @model_validator(mode='after')
    def _direct_timeout(self) -> TelnyxTrunk:
        timeout = self.additional_params.get('Timeout')
        if self.mode == 'direct' and isinstance(timeout, int) and timeout < _TELNYX_DIAL_MIN_TIMEOUT:
            # Dial's timeout_secs starts at 5 s; refused here rather than by every Dial
            raise ValueError('additional_params.Timeout: must be at least 5 in direct mode (Dial timeout_secs)')
        return self


class PlivoTrunk(ProviderTrunk):
    kind: Literal['plivo'] = 'plivo'
    provider: ClassVar[str] = 'plivo'
    documented_params: ClassVar[dict[str, _Spec]] = _PLIVO_PARAMS
    secret_fields: ClassVar[tuple[str, ...]] = ('auth_token',)
    id_fields: ClassVar[tuple[str, ...]] = ('auth_id',)
    # the auth token signs Plivo's requests (X-Plivo-Signature-V3), call-back webhooks included
    verify_fields: ClassVar[tuple[str, ...]] = ('auth_token',)
    direct_available: ClassVar[bool] = True

    auth_id: str | None = Field(default=None, pattern=r'^[A-Z0-9]{20}$')
    #: Authenticates REST requests (Basic auth with ``auth_id``) and signs Plivo's callbacks.
    auth_token: SecretStr | None = None
    auth_token_env: str | None = None
    auth_token_file: Path | None = None

    @model_validator(mode='after')
    def _answer_url(self) -> PlivoTrunk:
        if self.mode == 'direct' and self.callback_url is None:
            # Plivo takes no inline XML: it fetches the call's instructions from an answer URL, which
            # `dialer webhooks` serves (<callback_url>/webhooks/plivo/answer)
            raise ValueError(
                'callback_url: is required in direct mode for plivo (Plivo fetches the XML that streams the call '
                'to Ultravox from <callback_url>/webhooks/plivo/answer, served by `dialer webhooks`)'
            )
        if self.mode == 'direct' and 'hangup_method' in self.additional_params:
            raise ValueError('additional_params.hangup_method: is set by the dialer in direct mode')
        return self
