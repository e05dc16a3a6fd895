"""Campaign files: a campaign's settings in TOML, with the same options as the command line.

    name = "spring-renewals"
    trunk = "carrier-a"
    agent_id = "..."            # or system_prompt = "..."
    default_region = "US"
    default_timezone = "America/New_York"
    max_attempts = 3            # shorthand for [retry] max_attempts
    number_types = ["fixed_line", "mobile", "fixed_line_or_mobile", "voip", "personal_number"]
    start_at = 2026-03-02T09:00:00Z   # nothing is dialled before (a TOML date-time with an offset)

    [hours]
    start = "09:00"
    end = "20:00"
    days = ["mon", "tue", "wed", "thu", "fri"]

    dispositions = ["interested", "not_interested", "callback_requested", "do_not_call", "wrong_person"]
    voicemail_message = "..."   # system_prompt campaigns: what leaveVoicemail says
    recording = true             # Ultravox records each call; the attempt export links the recordings

    [retry]
    retry_on = ["no_answer", "busy", "voicemail"]
    delays = { no_answer = 3600, busy = 600, voicemail = 10800 }
    retry_dispositions = ["callback_requested"]
    disposition_delays = { callback_requested = 86400 }   # when no call-back time was named

    [callbacks]                  # a contact calling back (README "Call-backs")
    agent_id = "..."             # who answers (default: the campaign's agent)
    close_contact = true         # an answered call-back ends outbound attempts (outcome called_back)
    route_after_end = 604800     # seconds after the campaign ended that call-backs still reach it

Every problem names the file and the line (syntax) or the field (settings).
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from dialer.models import CampaignConfig, check_name


if TYPE_CHECKING:
    from pathlib import Path


TOP_LEVEL_KEYS = (
    'name',
    'trunk',
    'agent_id',
    'system_prompt',
    'default_region',
    'default_timezone',
    'max_attempts',
    'max_duration',
    'join_timeout',
    'first_speaker',
    'throttle',
    'number_types',
    'start_at',
    'dispositions',
    'voicemail_message',
    'recording',
    'hours',
    'retry',
    'callbacks',
)
TABLE_KEYS = {
    'hours': ('start', 'end', 'days', 'legal_bound'),
    'retry': (
        'retry_on',
        'delays',
        'max_attempts',
        'max_per_24h',
        'other_hour_on',
        'retry_dispositions',
        'disposition_delays',
    ),
    'callbacks': ('agent_id', 'close_contact', 'route_after_end'),
}
COMMAND_LINE = 'command line'

_TOML_LINE = re.compile(r'\(at line (\d+), column \d+\)$')


class CampaignFileError(ValueError):
    """Campaign settings that cannot be used; the message names the file (or command line) and field."""


class CampaignOptions(dict[str, Any]):
    """The options read from a campaign file; remembers the file so errors can name it."""

    def __init__(self, data: dict[str, Any], source: str) -> None:
        super().__init__(data)
        self.source = source


def load_campaign_file(path: Path) -> CampaignOptions:
    """Read a campaign file; syntax errors and unknown keys raise ``CampaignFileError``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CampaignFileError(f'{path}: campaign file not found') from None
    except IsADirectoryError:
        raise CampaignFileError(f'{path}: is a directory, not a campaign file') from None
    except OSError as exc:
        raise CampaignFileError(f'{path}: cannot read the campaign file: {exc.strerror or exc}') from None
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError:
        raise CampaignFileError(f'{path}: not UTF-8 text') from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_LINE.search(message)
        if match:
            raise CampaignFileError(
                f'{path}: line {match.group(1)}: invalid TOML: {message[: match.start()].strip()}'
            ) from None
        raise CampaignFileError(f'{path}: invalid TOML: {message}') from None
    _check_keys(str(path), data)
    return CampaignOptions(data, str(path))


def _check_keys(source: str, data: dict[str, Any]) -> None:
    for key, value in data.items():
        if key not in TOP_LEVEL_KEYS:
            raise CampaignFileError(f'{source}: unknown key {key!r} (known keys: {", ".join(TOP_LEVEL_KEYS)})')
        if key in TABLE_KEYS:
            if not isinstance(value, dict):
                raise CampaignFileError(f'{source}: field {key}: expected a [{key}] table')
            for sub in value:
                if sub not in TABLE_KEYS[key]:
                    known = ', '.join(TABLE_KEYS[key])
                    raise CampaignFileError(f'{source}: unknown key {key}.{sub} (known keys in [{key}]: {known})')


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """The options that were actually given: None means "not given" (click's default for options).

    Keys may also be dotted ("hours.start") or tables (``{"hours": {"start": ...}}``).
    """
    result: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        table, _, sub = key.partition('.')
        if sub:
            result.setdefault(table, {})[sub] = value
        elif key in TABLE_KEYS and isinstance(value, dict):
            result.setdefault(key, {}).update({s: v for s, v in value.items() if v is not None})
        else:
            result[key] = value
    return result


def _fold_max_attempts(source: str, options: dict[str, Any]) -> None:
    # max_attempts at the top level is the command line's --max-attempts; it lives in the retry policy.
    if 'max_attempts' not in options:
        return
    value = options.pop('max_attempts')
    retry = options.setdefault('retry', {})
    if 'max_attempts' in retry and retry['max_attempts'] != value:
        raise CampaignFileError(f'{source}: max_attempts is given twice (top level and [retry]) with different values')
    retry['max_attempts'] = value


def _deep_merge(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``under`` key by key at every depth (``retry.delays`` given on the command line
    for one outcome keeps the file's delays for the others)."""
    merged = dict(under)
    for key, value in over.items():
        below = merged.get(key)
        merged[key] = _deep_merge(below, value) if isinstance(value, dict) and isinstance(below, dict) else value
    return merged


def build_config(
    file_options: dict[str, Any],
    cli_options: dict[str, Any],
    *,
    source: str | None = None,
    base: CampaignConfig | None = None,
) -> CampaignConfig:
    """A validated CampaignConfig from a campaign file's options and the command line's (which win).

    ``source`` names the file in messages (default: the file ``load_campaign_file`` read). ``base``:
    settings the options are laid over (an existing campaign's), instead of the defaults.
    """
    source = source or getattr(file_options, 'source', None) or 'campaign options'
    from_file = _given(file_options)
    from_cli = _given(cli_options)
    _check_keys(source, from_file)
    _check_keys(COMMAND_LINE, from_cli)
    _fold_max_attempts(source, from_file)
    _fold_max_attempts(COMMAND_LINE, from_cli)
    merged: dict[str, Any] = json.loads(base.model_dump_json()) if base is not None else {}
    for given in (from_file, from_cli):
        for key, value in given.items():
            if key in TABLE_KEYS:
                merged[key] = _deep_merge(merged.get(key, {}), value)
            else:
                merged[key] = value
    for key in ('name', 'trunk'):
        # check_name explains the allowed alphabet better than the pattern pydantic would quote
        if isinstance(merged.get(key), str):
            try:
                check_name('campaign' if key == 'name' else 'trunk', merged[key])
            except ValueError as exc:
                origin = COMMAND_LINE if key in from_cli else source
                raise CampaignFileError(f'{origin}: field {key}: {exc}') from None
    try:
        return CampaignConfig.model_validate(merged)
    except ValidationError as exc:
        raise CampaignFileError(_describe(exc, source, from_file, from_cli)) from None


def _field_path(loc: tuple[int | str, ...], message: str) -> str:
    path = [str(part) for part in loc]
    # Cross-field checks report on their model; name the field their message starts with.
    table = path[0] if len(path) == 1 else None
    if table in TABLE_KEYS:
        first = message.split(' ', 1)[0]
        if first in TABLE_KEYS[table]:
            path.append(first)
    return '.'.join(path)


def _origin(where: str, source: str, from_file: dict[str, Any], from_cli: dict[str, Any]) -> str:
    """The command line when it gave the failing field (and the file did not give it too)."""
    if not where:
        return source
    top, _, sub = where.partition('.')
    if top not in from_cli:
        return source
    if top not in TABLE_KEYS:
        return COMMAND_LINE
    sub = sub.split('.', 1)[0]
    if sub:
        return COMMAND_LINE if sub in from_cli[top] else source
    return source if from_file.get(top) else COMMAND_LINE


def _describe(exc: ValidationError, source: str, from_file: dict[str, Any], from_cli: dict[str, Any]) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = tuple(error['loc'])
        message = str(error['msg']).removeprefix('Value error, ')
        if error['type'] == 'missing':
            message = 'is required'
        elif error['type'] == 'extra_forbidden':
            message = 'is not a known campaign setting'
        where = _field_path(loc, message)
        origin = _origin(where, source, from_file, from_cli)
        parts.append(f'{origin}: field {where}: {message}' if where else f'{origin}: {message}')
    return '; '.join(parts)
