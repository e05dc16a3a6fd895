"""``dialer trunks ...``, ``dialer dnc ...``, ``dialer campaign plan`` and ``dialer demo``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from campaigns import dnc, results
from campaigns.csv_plan import CsvPlan, plan_csv
from campaigns.plan import ZonePlan, plan_campaign
from dialer.constants import DNC
from dialer.scripts import Scripts
from dialer.trunks import TrunkRegistry, load_trunks
from workers.cli import cli, load_settings, run, user_errors
from workers.cli_campaign import _cli_options, campaign, campaign_options
from workers.cli_load import PLAN_PLACEHOLDERS, load_options, plan_table, report_csv_plan, settings_for_load
from workers.provider_check import check_provider_configs, inbound_setup_lines
from workers.runtime import redis_client


@cli.group()
def trunks() -> None:
    """Check the trunks file and see each trunk's load against its limits."""


@trunks.command(name='check')
@user_errors
def trunks_check() -> None:
    """Validate the trunks file (DIALER_TRUNKS_FILE); passwords are never printed."""
    settings = load_settings()
    loaded = load_trunks(settings.trunks_file)
    for name, trunk in loaded.items():
        click.echo(
            f'{name}: {trunk.kind} {trunk.host} ({trunk.transport}), from {trunk.caller_id}, '
            f'{trunk.max_concurrent} concurrent, {trunk.calls_per_second:g}/s (burst {trunk.burst})'
        )
    for line in inbound_setup_lines(loaded):
        click.echo(line)
    problems = run(check_provider_configs(settings, loaded))
    if problems:
        raise click.ClickException('\n'.join(problems))


@trunks.command(name='status')
@click.option('--json', 'as_json', is_flag=True, help='Machine-readable output.')
def trunks_status(*, as_json: bool) -> None:
    """Per trunk: calls in flight vs limit, recent calls per second vs limit, waiting work."""
    settings = load_settings()
    registry = TrunkRegistry(settings.trunks_file)

    async def go() -> list[dict[str, object]]:
        redis = redis_client(settings)
        try:
            return await results.trunks_status(redis, registry, settings.account_limits)
        finally:
            await redis.aclose()

    rows = run(go())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        Console().print(results.render_trunks(rows))


@campaign.command()
@click.argument('name', required=False)
@click.option(
    '--csv',
    'csv_path',
    type=click.Path(path_type=Path),
    help="Plan this contacts file as a load would (with NAME's settings or the options given); writes nothing.",
)
@click.option(
    '--campaign-file', type=click.Path(path_type=Path), help='With --csv: TOML file with the campaign options.'
)
@load_options
@campaign_options
def plan(
    name: str | None,
    csv_path: Path | None,
    campaign_file: Path | None,
    start_at: str | None,
    number_types: str | None,
    **options: Any,
) -> None:
    """Dry run: per time zone, how many contacts are callable now and when the rest open.

    `plan NAME` plans a loaded campaign. `plan --csv FILE [NAME] [options]` plans a file without
    loading it: the same checks, rejects and first due times as `campaign load` with the same
    arguments, and nothing written to Redis.
    """
    given = [flag for flag, value in (('--campaign-file', campaign_file), ('--start-at', start_at)) if value]
    given += [flag for flag, value in (('--number-types', number_types),) if value]
    given += ['--' + key.replace('_', '-') for key, value in options.items() if value is not None]
    if csv_path is None and (given or name is None):
        raise click.UsageError('give a campaign NAME, or --csv FILE (campaign options apply only with --csv)')
    settings = load_settings()

    async def go() -> tuple[datetime, list[ZonePlan], CsvPlan | None]:
        redis = redis_client(settings)
        try:
            if csv_path is None:
                assert name is not None
                now, plans = await plan_campaign(redis, name)
                return now, plans, None
            config = await settings_for_load(
                redis,
                name=name,
                campaign_file=campaign_file,
                start_at=start_at,
                number_types=number_types,
                cli_options=lambda delays, extra: _cli_options(base_delays=delays, **extra, **options),
                placeholders=PLAN_PLACEHOLDERS,
            )
            now_ms = await Scripts(redis).now_ms()
            planned = plan_csv(config, csv_path, now_ms)
            return datetime.fromtimestamp(now_ms / 1000, UTC), planned.zones, planned
        finally:
            await redis.aclose()

    now, plans, planned = run(go())
    title = f'{csv_path} (not loaded)' if csv_path is not None else name
    Console().print(plan_table(f'{title}: calling plan at {now:%Y-%m-%d %H:%M} UTC', plans))
    if planned is not None:
        report_csv_plan(csv_path, planned)


@cli.group(name='dnc')
def dnc_group() -> None:
    """The do-not-call list, checked right before every dial in every campaign."""


@dnc_group.command(name='add')
@click.argument('numbers', nargs=-1, required=True)
@click.option('--region', default='US', show_default=True, help='For numbers without +country code.')
def dnc_add(numbers: tuple[str, ...], region: str) -> None:
    """Add numbers to the do-not-call list."""
    settings = load_settings()

    async def go() -> int:
        redis = redis_client(settings)
        try:
            return await dnc.add_numbers(redis, numbers, region)
        finally:
            await redis.aclose()

    click.echo(f'{run(go())} numbers added')


@dnc_group.command(name='remove')
@click.argument('numbers', nargs=-1, required=True)
@click.option('--region', default='US', show_default=True)
def dnc_remove(numbers: tuple[str, ...], region: str) -> None:
    """Remove numbers from the do-not-call list."""
    settings = load_settings()

    async def go() -> int:
        redis = redis_client(settings)
        try:
            return await dnc.remove_numbers(redis, numbers, region)
        finally:
            await redis.aclose()

    click.echo(f'{run(go())} numbers removed')


@dnc_group.command(name='check')
@click.argument('number')
@click.option('--region', default='US', show_default=True, help='For a number without +country code.')
def dnc_check(number: str, region: str) -> None:
    """Say whether NUMBER is on the do-not-call list (exit 0 either way; a bad number is an error)."""
    settings = load_settings()

    async def go() -> tuple[str, bool]:
        redis = redis_client(settings)
        try:
            return await dnc.check_number(redis, number, region)
        finally:
            await redis.aclose()

    normalised, listed = run(go())
    click.echo(f'{normalised} is {"on" if listed else "not on"} the do-not-call list')


@dnc_group.command(name='list')
@click.option('--limit', type=click.IntRange(min=1), help='Stop after this many numbers.')
@click.option('--count', 'count_only', is_flag=True, help='Print only how many numbers are listed.')
def dnc_list(limit: int | None, *, count_only: bool) -> None:
    """Print the do-not-call list, one E.164 number a line, sorted (streamed: any size)."""
    settings = load_settings()

    async def go() -> int:
        redis = redis_client(settings)
        try:
            if count_only:
                return int(await redis.scard(DNC))
            printed = 0
            async for listed in dnc.listed_numbers(redis):
                click.echo(listed)
                printed += 1
                if printed == limit:
                    break
            return printed
        finally:
            await redis.aclose()

    total = run(go())
    if count_only:
        click.echo(f'{total} numbers on the do-not-call list')
    elif total == 0:
        click.echo('the do-not-call list is empty', err=True)


@dnc_group.command(name='import')
@click.argument('path', type=click.Path(path_type=Path))
@click.option('--region', default='US', show_default=True)
def dnc_import(path: Path, region: str) -> None:
    """Import a file of numbers (one per line, or a CSV with a phone column)."""
    settings = load_settings()

    async def go() -> dnc.ImportSummary:
        redis = redis_client(settings)
        try:
            return await dnc.import_file(redis, path, region)
        finally:
            await redis.aclose()

    summary = run(go())
    click.echo(
        f'{path}: {summary.added} added, {summary.already_listed} already listed, {summary.invalid_count} invalid'
    )
    for line, reason in summary.invalid:
        click.echo(f'  line {line}: {reason}')
    if summary.invalid_count:
        raise SystemExit(1)


@cli.command()
@click.option('--contacts', type=int, default=60, show_default=True, help='Sample contacts to dial.')
@click.option('--workers', 'worker_count', type=int, default=2, show_default=True)
@click.option(
    '--output-dir',
    type=click.Path(file_okay=False, path_type=Path),
    default=Path('dialer-demo'),
    show_default=True,
    help='Where the sample contacts, rejects and results are kept.',
)
@click.option(
    '--trunk-kind',
    type=click.Choice(['sip', 'twilio', 'telnyx', 'plivo']),
    default='sip',
    show_default=True,
    help='Dial over the bundled SIP trunk or a provider trunk (Ultravox places the provider call).',
)
def demo(contacts: int, worker_count: int, output_dir: Path, trunk_kind: str) -> None:
    """Run a whole sample campaign locally: embedded Redis, the simulator, workers, live progress."""
    from workers.demo import run_demo  # noqa: PLC0415

    run_demo(contacts=contacts, worker_count=worker_count, directory=output_dir, trunk_kind=trunk_kind)
