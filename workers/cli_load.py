"""What ``dialer campaign load`` and ``dialer campaign plan --csv`` share: the load-only options and
the settings a load would use (an existing campaign's, or new ones from the options given)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from campaigns.campaign_file import load_campaign_file
from campaigns.config_match import config_for_load
from campaigns.lifecycle import UnknownCampaignError, read_config
from dialer.models import DEFAULT_NUMBER_TYPES, NAME_PATTERN, NUMBER_TYPES
from dialer.scripts import Scripts


if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from redis.asyncio import Redis

    from campaigns.csv_plan import CsvPlan
    from campaigns.loader import LoadSummary
    from campaigns.plan import ZonePlan
    from dialer.models import CampaignConfig


START_AT_HELP = (
    'No contact is dialled before this instant: an ISO-8601 date-time with an offset '
    '(2026-03-02T09:00+01:00, or Z for UTC), or HH:MM for the next time the UTC clock shows it '
    "(today, or tomorrow when it has passed). Calling hours still apply in each contact's zone."
)
NUMBER_TYPES_HELP = (
    f'Number types called, comma-separated (phonenumbers types: {", ".join(NUMBER_TYPES)}); '
    f'numbers of other types are rejected at load. [{",".join(DEFAULT_NUMBER_TYPES)}]'
)

_HHMM = re.compile(r'([01]\d|2[0-3]):([0-5]\d)')
_NAME = re.compile(NAME_PATTERN)


def load_options(command: Any) -> Any:
    """``--start-at`` and ``--number-types``: settings a campaign is created with, not changed by update."""
    command = click.option('--number-types', metavar='TYPE,...', help=NUMBER_TYPES_HELP)(command)
    return click.option('--start-at', metavar='TIME', help=START_AT_HELP)(command)


def parse_start_at(text: str, now: datetime) -> datetime:
    """``HH:MM`` (the next such UTC time after ``now``) or an ISO-8601 date-time with an offset."""
    value = text.strip()
    hhmm = _HHMM.fullmatch(value)
    if hhmm:
        at = now.astimezone(UTC).replace(hour=int(hhmm[1]), minute=int(hhmm[2]), second=0, microsecond=0)
        return at if at > now else at + timedelta(days=1)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f'{text!r} is neither HH:MM (UTC) nor an ISO-8601 date-time such as 2026-03-02T09:00+01:00',
            param_hint='--start-at',
        ) from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise click.BadParameter(
            f'{text!r} has no UTC offset: add one (2026-03-02T09:00+01:00, or Z for UTC)', param_hint='--start-at'
        )
    return at


def parse_number_types(text: str) -> list[str]:
    types = [part.strip().lower().replace('-', '_') for part in text.split(',') if part.strip()]
    unknown = [kind for kind in types if kind not in NUMBER_TYPES]
    if unknown or not types:
        raise click.BadParameter(
            f'{", ".join(unknown) or "nothing given"}: number types are {", ".join(NUMBER_TYPES)}',
            param_hint='--number-types',
        )
    return types


async def existing_config(redis: Redis, name: str | None) -> CampaignConfig | None:
    if name is None or not _NAME.match(name):
        return None  # an invalid name is reported by build_config, naming where it was given
    try:
        return await read_config(redis, name)
    except UnknownCampaignError:
        return None


async def settings_for_load(
    redis: Redis,
    *,
    name: str | None,
    campaign_file: Path | None,
    start_at: str | None,
    number_types: str | None,
    cli_options: Callable[[dict[str, float] | None, dict[str, Any]], dict[str, Any]],
    placeholders: dict[str, Any] | None = None,
) -> CampaignConfig:
    """The settings a load into ``name`` (or the campaign file's name) uses; reads Redis, writes nothing.

    ``cli_options(base_delays, extra)`` turns the command line's options into campaign settings.
    ``placeholders``: values for required settings nobody gave (``plan`` needs no trunk or agent).
    """
    file_options = load_campaign_file(campaign_file) if campaign_file else {}
    named = name or file_options.get('name')
    existing = await existing_config(redis, named if isinstance(named, str) else None)
    extra: dict[str, Any] = {'name': name}
    if number_types is not None:
        extra['number_types'] = parse_number_types(number_types)
    if start_at is not None:
        now = datetime.fromtimestamp(await Scripts(redis).now_ms() / 1000, UTC)
        extra['start_at'] = parse_start_at(start_at, now).astimezone(UTC).isoformat()
    base_delays = existing.model_dump(mode='json')['retry']['delays'] if existing is not None else None
    given = cli_options(base_delays, extra)
    if existing is None and placeholders:
        given = {**{key: value for key, value in placeholders.items() if _missing(key, file_options, given)}, **given}
    return config_for_load(existing, file_options, given)


def _missing(key: str, *sources: dict[str, Any]) -> bool:
    # an agent placeholder would clash with a system prompt given instead
    related = ('agent_id', 'system_prompt') if key == 'agent_id' else (key,)
    return all(source.get(other) is None for source in sources for other in related)


def report_load(
    contacts: Path, config: CampaignConfig, summary: LoadSummary, rejects_path: Path, *, paused: bool
) -> None:
    """The load's summary on stdout; warnings (unused columns) on stderr."""
    name = config.name
    if summary.unused_columns:
        listed = ', '.join(summary.unused_columns)
        click.echo(
            f'warning: the system prompt uses no {{{{placeholder}}}} for these columns: {listed} '
            '(their values are never sent; reference them as {{column}} or drop them)',
            err=True,
        )
    if summary.skipped_whole_file:
        click.echo(f'{contacts}: already loaded into {name!r}; nothing new enqueued')
        return
    click.echo(
        f'{contacts}: {summary.rows} rows, {summary.accepted} contacts enqueued into {name!r}, '
        f'{summary.already_loaded} already loaded, {summary.rejected} rejected'
    )
    for reason, count in sorted(summary.rejects_by_reason.items()):
        click.echo(f'  rejected {count:>6}  {reason}')
    if summary.rejected:
        click.echo(f'  rejected rows, whole, with their line numbers: {rejects_path} (fix them and load that file)')
    if config.start_at is not None:
        click.echo(f'  no contact is dialled before {config.start_at:%Y-%m-%d %H:%M} UTC')
    if paused:
        click.echo(
            f'  campaign {name!r} is paused: check `dialer campaign plan {name}`, then '
            f'`dialer campaign resume {name}` starts dialling'
        )


#: ``plan --csv`` without a campaign: stand-ins for the settings a plan does not use.
PLAN_PLACEHOLDERS = {'name': 'csv-plan', 'trunk': 'unset', 'agent_id': 'unset'}
#: More zones than this are summarised: a number that maps to a whole country's zones.
_ZONES_LISTED = 3


def zones_label(zones: tuple[str, ...]) -> str:
    """A plan row's zones on one line: listed when few, else counted (``42 zones (America/Adak …)``)."""
    if not zones:
        return '-'
    if len(zones) <= _ZONES_LISTED:
        return ', '.join(zones)
    return f'{len(zones)} zones ({zones[0]} …)'


def plan_table(title: str, plans: list[ZonePlan]) -> Table:
    table = Table(title=title)
    table.add_column('zones', no_wrap=True, overflow='ellipsis')
    for column in ('callable now', 'waiting'):
        table.add_column(column)
    table.add_column('opens (UTC)', no_wrap=True)
    table.add_column('problems')
    for p in plans:
        table.add_row(
            zones_label(p.zones),
            str(p.callable_now),
            str(p.waiting),
            f'{p.opens_at:%Y-%m-%d %H:%M}' if p.opens_at else '',
            '; '.join(f'{k}: {v}' for k, v in p.problems.items()),
        )
    return table


def report_csv_plan(csv_path: Path | None, planned: CsvPlan) -> None:
    rejected = sum(planned.rejects_by_reason.values())
    click.echo(f'{csv_path}: {planned.rows} rows, {planned.accepted} would be enqueued, {rejected} rejected')
    for reason, count in sorted(planned.rejects_by_reason.items()):
        click.echo(f'  rejected {count:>6}  {reason}')
    if planned.unused_columns:
        listed = ', '.join(planned.unused_columns)
        click.echo(f'warning: the system prompt uses no {{{{placeholder}}}} for these columns: {listed}', err=True)
