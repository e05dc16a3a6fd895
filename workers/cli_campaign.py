"""``dialer campaign ...``: load contacts, watch and steer campaigns, export results."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from campaigns import lifecycle, results
from campaigns.campaign_file import build_config, load_campaign_file
from campaigns.loader import load_contacts
from dialer.trunks import TrunkRegistry
from workers.cli import cli, load_settings, run
from workers.runtime import redis_client


console = Console(stderr=True)


@cli.group()
def campaign() -> None:
    """Load, inspect, pause, resume, cancel and export campaigns."""


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(',') if v.strip()] if value else None


def _hours_options(hours: str | None, days: str | None, legal_bound: bool | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if hours:
        start, sep, end = hours.partition('-')
        if not sep:
            raise click.BadParameter('expected HH:MM-HH:MM, e.g. 09:00-20:00', param_hint='--hours')
        options.update(start=start.strip(), end=end.strip())
    if days:
        options['days'] = _expand_days(days)
    if legal_bound is not None:
        options['legal_bound'] = legal_bound
    return options


_WEEK = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun']


def _expand_days(value: str) -> list[str]:
    """``mon-fri``, ``mon,wed,fri`` or ``sat-sun``."""
    days: list[str] = []
    for part in _split(value) or []:
        first, _, last = part.lower().partition('-')
        if first not in _WEEK or (last and last not in _WEEK):
            raise click.BadParameter(f'{part!r}: days are mon..sun, as a list or range', param_hint='--days')
        days += _WEEK[_WEEK.index(first) : _WEEK.index(last) + 1] if last else [first]
    return days


def campaign_options(command: Any) -> Any:
    """Options shared by ``load`` and ``update``; each is also a key of the campaign file."""
    options = [
        click.option('--agent-id', help='Ultravox agent to call with (POST /api/agents/{id}/calls).'),
        click.option('--system-prompt', help='Ad-hoc prompt instead of an agent (POST /api/calls).'),
        click.option('--trunk', help='Trunk (from the trunks file) the calls go out on.'),
        click.option('--default-region', help='Region for numbers written without +country code. [US]'),
        click.option('--default-timezone', help='IANA zone for contacts whose zone cannot be derived.'),
        click.option('--max-attempts', type=int, help='Attempts per contact, all outcomes together. [3]'),
        click.option('--retry-on', help='Outcomes redialled, comma-separated. [no_answer,busy,failed]'),
        click.option('--max-per-24h', type=int, help='Attempts per contact in any rolling 24 hours. [3]'),
        click.option('--hours', help="Calling hours in each contact's local time. [09:00-20:00]"),
        click.option('--days', help='Calling days, e.g. mon-fri or mon,wed,fri. [every day]'),
        click.option('--legal-bound/--no-legal-bound', default=None, help='Keep hours inside 08:00-21:00. [on]'),
        click.option('--max-duration', type=float, help='Longest call in seconds (Ultravox maxDuration).'),
        click.option('--join-timeout', type=float, help='Ring time allowed in seconds (joinTimeout).'),
        click.option('--throttle', help='Ultravox call throttle name (?throttle=).'),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _cli_options(**given: Any) -> dict[str, Any]:
    hours = _hours_options(given.pop('hours', None), given.pop('days', None), given.pop('legal_bound', None))
    retry: dict[str, Any] = {}
    if given.get('retry_on'):
        retry['retry_on'] = _split(given.pop('retry_on'))
    for key in ('max_attempts', 'max_per_24h'):
        if given.get(key) is not None:
            retry[key] = given.pop(key)
    options = {key: value for key, value in given.items() if value is not None}
    if hours:
        options['hours'] = hours
    if retry:
        options['retry'] = retry
    return options


@campaign.command()
@click.argument('contacts', type=click.Path(path_type=Path))
@click.option('--campaign', 'name', help='Campaign name (letters, digits, _ . -).')
@click.option('--campaign-file', type=click.Path(path_type=Path), help='TOML file with the campaign options.')
@click.option('--rejects', type=click.Path(path_type=Path), help='Where rejected rows go. [CONTACTS.rejects.csv]')
@click.option('--progress/--no-progress', default=None, help='Progress bar (default: on a terminal).')
@campaign_options
def load(
    contacts: Path,
    name: str | None,
    campaign_file: Path | None,
    rejects: Path | None,
    progress: bool | None,
    **options: Any,
) -> None:
    """Load CONTACTS (CSV) into a campaign, creating it if needed; dialling starts at once."""
    settings = load_settings()

    async def go() -> None:
        file_options = load_campaign_file(campaign_file) if campaign_file else {}
        config = build_config(file_options, _cli_options(name=name, **options))
        TrunkRegistry(settings.trunks_file).get(config.trunk)
        redis = redis_client(settings)
        try:
            summary = await load_contacts(
                redis,
                config,
                contacts,
                rejects_path=rejects or contacts.with_name(contacts.name + '.rejects.csv'),
                progress=sys.stderr.isatty() if progress is None else progress,
            )
        finally:
            await redis.aclose()
        if summary.skipped_whole_file:
            click.echo(f'{contacts}: already loaded into {config.name!r}; nothing new enqueued')
            return
        click.echo(
            f'{contacts}: {summary.rows} rows, {summary.accepted} contacts enqueued into {config.name!r}, '
            f'{summary.already_loaded} already loaded, {summary.rejected} rejected'
        )
        for reason, count in sorted(summary.rejects_by_reason.items()):
            click.echo(f'  rejected {count:>6}  {reason}')
        if summary.rejected:
            click.echo(f'  rejected rows with their line numbers: {rejects or contacts.name + ".rejects.csv"}')

    run(go())


@campaign.command()
@click.argument('name')
@campaign_options
def update(name: str, **options: Any) -> None:
    """Change a running campaign's settings (hours, retries, limits ...); workers apply them within seconds."""
    settings = load_settings()

    async def go() -> None:
        redis = redis_client(settings)
        try:
            current = await lifecycle.read_config(redis, name)
            changes = _cli_options(**options)
            base = json.loads(current.model_dump_json())
            for key in ('hours', 'retry'):
                if key in changes:
                    changes[key] = {**base[key], **changes[key]}
            config = lifecycle.merge_update(current, changes)
            TrunkRegistry(settings.trunks_file).get(config.trunk)
            await lifecycle.save_config(redis, config, update=True)
        finally:
            await redis.aclose()
        click.echo(f'campaign {name!r} updated')

    run(go())


def _state_command(action: str, doc: str) -> None:
    @campaign.command(name=action, help=doc)
    @click.argument('name')
    def command(name: str) -> None:
        settings = load_settings()

        async def go() -> str:
            redis = redis_client(settings)
            try:
                return await lifecycle.change_state(redis, name, action)
            finally:
                await redis.aclose()

        click.echo(f'campaign {name!r} is {run(go())}')


_state_command('pause', 'Stop new dials fleet-wide within seconds; calls in flight finish normally.')
_state_command('resume', 'Continue a paused campaign exactly where it stopped.')
_state_command('cancel', 'End every not-yet-dialled contact with outcome "cancelled".')


@campaign.command(name='list')
def list_() -> None:
    """List campaigns and their states."""
    settings = load_settings()

    async def go() -> list[tuple[str, str]]:
        redis = redis_client(settings)
        try:
            names = await lifecycle.list_campaigns(redis)
            return [(n, (await lifecycle.read_campaign(redis, n)).get('state', '?')) for n in names]
        finally:
            await redis.aclose()

    for name, state in run(go()):
        click.echo(f'{name}\t{state}')


@campaign.command()
@click.argument('name')
@click.option('--json', 'as_json', is_flag=True, help='Machine-readable output.')
def status(name: str, *, as_json: bool) -> None:
    """Counts by state and outcome, calls in flight, attempts, SIP minutes."""
    settings = load_settings()

    async def go() -> dict[str, Any]:
        redis = redis_client(settings)
        try:
            return await results.campaign_status(redis, name)
        finally:
            await redis.aclose()

    data = run(go())
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        Console().print(results.render_status(data))


@campaign.command()
@click.argument('name')
@click.option('--output', required=True, type=click.Path(path_type=Path), help='File to write.')
@click.option('--format', 'fmt', type=click.Choice(['csv', 'jsonl']), default='csv', show_default=True)
def export(name: str, output: Path, fmt: str) -> None:
    """One row per contact: outcome, attempts, call ids, times, durations, billed SIP seconds."""
    settings = load_settings()

    async def go() -> int:
        redis = redis_client(settings)
        try:
            return int(await results.export_results(redis, name, output, fmt))
        finally:
            await redis.aclose()

    click.echo(f'{run(go())} contacts written to {output}')


@campaign.command()
@click.argument('name')
@click.option('--force', is_flag=True, help='Delete even with calls in flight.')
def delete(name: str, *, force: bool) -> None:
    """Delete a campaign and everything it stored in Redis."""
    settings = load_settings()

    async def go() -> None:
        redis = redis_client(settings)
        try:
            await lifecycle.delete_campaign(redis, name, force=force)
        finally:
            await redis.aclose()

    run(go())
    click.echo(f'campaign {name!r} deleted')
