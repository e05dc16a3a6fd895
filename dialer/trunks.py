"""Trunks: how Ultravox reaches a phone on the team's own carriers, and the limits each one imposes.

A trunk is a tagged union on ``kind`` so that Ultravox's other media (``twilio``, ``telnyx``,
``plivo``) can be added as further kinds; only ``sip`` exists today.
"""

from __future__ import annotations

import os
import tomllib
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, field_validator

from dialer.models import check_name
from dialer.sip import Transport, check_sip_host, sip_uri


#: Unicode categories refused in SIP header fields: controls, format characters (zero-width, bidi
#: overrides), line and paragraph separators, unassigned and private-use code points.
_CONTROL = frozenset({'Cc', 'Cf', 'Zl', 'Zp', 'Cn', 'Co', 'Cs'})


class TrunkConfigError(ValueError):
    """A trunks file that cannot be used; the message names the file, trunk and field."""


class TrunkLimits(BaseModel):
    """What the carrier allows; these are enforced across the whole fleet."""

    model_config = ConfigDict(extra='forbid', frozen=True)

    max_concurrent: int = Field(ge=1, le=100_000)
    calls_per_second: float = Field(gt=0, le=10_000)
    #: Calls that may start back to back before the per-second spacing applies (1 = strictly spaced).
    burst: int = Field(default=1, ge=1, le=10_000)


class SipTrunk(TrunkLimits):
    kind: Literal['sip'] = 'sip'
    name: str
    host: str
    transport: Transport = 'udp'
    caller_id: str = Field(alias='from', min_length=1)
    username: str | None = None
    password: SecretStr | None = None
    #: Production alternatives to an inline password: an environment variable or a file holding it.
    password_env: str | None = None
    password_file: Path | None = None

    model_config = ConfigDict(extra='forbid', frozen=True, populate_by_name=True)

    @field_validator('name')
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name('trunk', value)

    @field_validator('host', 'caller_id', 'username', mode='before')
    @classmethod
    def _printable(cls, value: Any) -> Any:
        # These go into SIP headers: a newline or space would split or forge a header line.
        if isinstance(value, str):
            bad = next((ch for ch in value if ch.isspace() or unicodedata.category(ch) in _CONTROL), None)
            if bad is not None:
                what = 'whitespace' if bad.isspace() else 'a control character'
                raise ValueError(f'must not contain {what} (U+{ord(bad):04X} at position {value.index(bad) + 1})')
        return value

    @field_validator('host')
    @classmethod
    def _host(cls, value: str) -> str:
        return check_sip_host(value)

    def to_uri(self, number: str) -> str:
        return sip_uri(number, self.host, self.transport)

    def resolved_password(self) -> SecretStr | None:
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise TrunkConfigError(f'trunk {self.name!r}: field password_env: ${self.password_env} is not set')
            return SecretStr(value)
        if self.password_file is not None:
            try:
                return SecretStr(self.password_file.read_text(encoding='utf-8').strip())
            except OSError as exc:
                raise TrunkConfigError(
                    f'trunk {self.name!r}: field password_file: cannot read {self.password_file}: {exc.strerror}'
                ) from None
        return self.password

    def medium(self, number: str, password: SecretStr | None) -> dict[str, Any]:
        """The ``medium`` of a Create Call request dialling ``number`` through this trunk."""
        outgoing: dict[str, str] = {'to': self.to_uri(number), 'from': self.caller_id}
        if self.username is not None:
            outgoing['username'] = self.username
        if password is not None:
            outgoing['password'] = password.get_secret_value()
        return {'sip': {'outgoing': outgoing}}

    @property
    def limits(self) -> TrunkLimits:
        return TrunkLimits(max_concurrent=self.max_concurrent, calls_per_second=self.calls_per_second, burst=self.burst)


Trunk = Annotated[SipTrunk, Field(discriminator='kind')]
_TRUNK = TypeAdapter(Trunk)


def _password_sources(name: str, raw: dict[str, Any]) -> None:
    given = [k for k in ('password', 'password_env', 'password_file') if raw.get(k) is not None]
    if len(given) > 1:
        raise TrunkConfigError(f'trunk {name!r}: field {given[1]}: give only one of {", ".join(given)}')


def parse_trunks(data: dict[str, Any], source: str = 'trunks file') -> dict[str, Trunk]:
    """Validate the ``[trunks.NAME]`` tables of a parsed TOML document."""
    tables = data.get('trunks')
    if not isinstance(tables, dict) or not tables:
        raise TrunkConfigError(f'{source}: no [trunks.NAME] table found')
    unknown = sorted(set(data) - {'trunks'})
    if unknown:
        raise TrunkConfigError(f'{source}: unknown top-level key {unknown[0]!r} (expected only [trunks.NAME])')
    trunks: dict[str, Trunk] = {}
    for name, raw in tables.items():
        if not isinstance(raw, dict):
            raise TrunkConfigError(f'{source}: trunk {name!r}: expected a table of fields')
        try:
            _password_sources(name, raw)
            trunk = _TRUNK.validate_python({'kind': 'sip', **raw, 'name': name})
            trunk.resolved_password()
        except TrunkConfigError as exc:
            raise TrunkConfigError(f'{source}: {exc}') from None
        except ValidationError as exc:
            raise TrunkConfigError(f'{source}: trunk {name!r}: {_describe(exc)}') from None
        trunks[name] = trunk
    return trunks


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = '.'.join(str(p) for p in error['loc'] if p != 'sip') or 'trunk'
        message = str(error['msg']).removeprefix('Value error, ')
        if error['type'] == 'missing':
            message = 'is required'
        elif error['type'] == 'extra_forbidden':
            message = 'is not a known trunk field'
        parts.append(f'field {where}: {message}')
    return '; '.join(parts)


def load_trunks(path: Path) -> dict[str, Trunk]:
    """Read and validate a trunks file; every problem is reported with the file, trunk and field."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TrunkConfigError(f'{path}: trunks file not found (set DIALER_TRUNKS_FILE)') from None
    except OSError as exc:
        raise TrunkConfigError(f'{path}: cannot read trunks file: {exc.strerror}') from None
    try:
        data = tomllib.loads(raw.decode('utf-8'))
    except UnicodeDecodeError:
        raise TrunkConfigError(f'{path}: trunks file is not UTF-8 text') from None
    except tomllib.TOMLDecodeError as exc:
        raise TrunkConfigError(f'{path}: invalid TOML: {exc}') from None
    return parse_trunks(data, str(path))


class TrunkRegistry:
    """The trunks of one process, re-read when the file changes so limits can be edited live."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = self._stat()
        self.trunks = load_trunks(path)

    def _stat(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def get(self, name: str) -> Trunk:
        try:
            return self.trunks[name]
        except KeyError:
            known = ', '.join(sorted(self.trunks)) or 'none'
            raise TrunkConfigError(f'{self.path}: unknown trunk {name!r} (known: {known})') from None

    def refresh(self) -> bool:
        """Reload if the file changed. A broken edit keeps the last good trunks (and raises)."""
        mtime = self._stat()
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        self.trunks = load_trunks(self.path)
        return True
