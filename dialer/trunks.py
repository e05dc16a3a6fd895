"""Trunks: how Ultravox reaches a phone, and the limits each way imposes.

A trunk is a tagged union on ``kind``: ``sip`` (the team's own carrier, Ultravox's SIP medium) or a
telephony provider (``twilio``, ``telnyx``, ``plivo``; see ``dialer/provider_trunks.py``), each of
which knows how to build the ``medium`` of a Create Call request.
"""

from __future__ import annotations

import os
import tomllib
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, field_validator

from dialer.models import check_name
from dialer.provider_trunks import PROVIDER_KINDS, PlivoTrunk, TelnyxTrunk, TwilioTrunk
from dialer.sip import Transport, check_sip_host, sip_uri
from dialer.trunk_base import CONTROL_CATEGORIES as _CONTROL
from dialer.trunk_base import TrunkConfigError, TrunkLimits


__all__ = ['SipTrunk', 'Trunk', 'TrunkConfigError', 'TrunkLimits', 'TrunkRegistry', 'load_trunks', 'parse_trunks']


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

    def secrets(self) -> list[SecretStr]:
        """Every secret of the trunk (masked in logs); never stored in Redis, metrics or exports."""
        password = self.resolved_password()
        return [] if password is None else [password]

    @property
    def limits(self) -> TrunkLimits:
        return TrunkLimits(max_concurrent=self.max_concurrent, calls_per_second=self.calls_per_second, burst=self.burst)


Trunk = Annotated[SipTrunk | TwilioTrunk | TelnyxTrunk | PlivoTrunk, Field(discriminator='kind')]
_TRUNK = TypeAdapter(Trunk)
TRUNK_KINDS = ('sip', *PROVIDER_KINDS)


def _password_sources(name: str, raw: dict[str, Any]) -> None:
    """A secret may be given inline, as ``<field>_env`` or as ``<field>_file``: only one of them."""
    bases = {key.removesuffix('_env').removesuffix('_file') for key in raw if key.endswith(('_env', '_file'))}
    for base in sorted(bases | {'password'}):
        given = [k for k in (base, f'{base}_env', f'{base}_file') if raw.get(k) is not None]
        if len(given) > 1:
            raise TrunkConfigError(f'trunk {name!r}: field {given[1]}: give only one of {", ".join(given)}')


def _check_kind(name: str, raw: dict[str, Any]) -> None:
    kind = raw.get('kind', 'sip')
    if kind not in TRUNK_KINDS:
        raise TrunkConfigError(
            f'trunk {name!r}: field kind: unknown trunk kind {kind!r} (expected one of {", ".join(TRUNK_KINDS)})'
        )


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
            _check_kind(name, raw)
            _password_sources(name, raw)
            trunk = _TRUNK.validate_python({'kind': 'sip', **raw, 'name': name})
            trunk.secrets()
        except TrunkConfigError as exc:
            raise TrunkConfigError(f'{source}: {exc}') from None
        except ValidationError as exc:
            raise TrunkConfigError(f'{source}: trunk {name!r}: {_describe(exc)}') from None
        trunks[name] = trunk
    return trunks


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = '.'.join(str(p) for p in error['loc'] if p not in TRUNK_KINDS) or 'trunk'
        message = str(error['msg']).removeprefix('Value error, ')
        if where == 'trunk' and ': ' in message and ' ' not in message.split(': ', 1)[0]:
            # a check across fields names its field first ("auth_token: is required in direct mode")
            where, message = message.split(': ', 1)
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
