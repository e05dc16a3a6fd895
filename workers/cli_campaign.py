"""``dialer campaign ...``: load contacts, watch and steer campaigns, export results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.live import Live

from campaigns import lifecycle, reschedule, results
from campaigns.describe import describe_campaign, describe_lines
from campaigns.loader import LoadSummary, load_contacts
from dialer.models import NEVER_RETRIED, CampaignConfig, Outcome, RetryPolicy
from dialer.outbox import Outbox
from dialer.trunks import Trunk, TrunkConfigError, TrunkRegistry
from workers.cli import cli, load_settings, run
from workers.cli_load import load_options, report_load, settings_for_load
from workers.runtime import redis_client


if TYPE_CHECKING:
    from collections.abc import Callable

F = TypeVar('F', bound='Callable[..., Any]')


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


#: (flags, click keyword arguments, help, the default shown by ``load``): one list for both commands,
#: so ``update`` can show the same options without defaults it does not apply.
_CAMPAIGN_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any], str, str | None]] = [
    (('--agent-id',), {}, 'Ultravox agent to call with (POST /api/agents/{id}/calls).', None),
    (('--system-prompt',), {}, 'Ad-hoc prompt instead of an agent (POST /api/calls).', None),
    (('--trunk',), {}, 'Trunk (from the trunks file) the calls go out on.', None),
    (('--default-region',), {}, 'Region for numbers written without +country code.', 'US'),
    (('--default-timezone',), {}, 'IANA zone for contacts whose zone cannot be derived.', None),
    (
        ('--max-attempts',),
        {'type': click.IntRange(1, 100)},
        'Attempts per contact, all outcomes together; 1 means no retries.',
        '3',
    ),
    (('--retry-on',), {}, 'Outcomes redialled, comma-separated, or "none".', 'no_answer,busy,failed'),
    (
        ('--retry-delay',),
        {'metavar': 'OUTCOME=DURATION,...'},
        'Wait before redialling, by outcome, e.g. no_answer=1h,busy=10m (units s, m, h, d).',
        'no_answer=1h,busy=10m,failed=15m,rejected=1h',
    ),
    (('--max-per-24h',), {'type': click.IntRange(1, 100)}, 'Attempts per contact in any rolling 24 hours.', '3'),
    (('--hours',), {}, "Calling hours in each contact's local time, e.g. 09:00-20:00.", '09:00-20:00'),
    (('--days',), {}, 'Calling days, e.g. mon-fri or mon,wed,fri.', 'every day'),
    (('--legal-bound/--no-legal-bound',), {'default': None}, 'Keep hours inside 08:00-21:00.', 'on'),
    (('--max-duration',), {'type': float}, 'Longest call in seconds (Ultravox maxDuration).', None),
    (('--join-timeout',), {'type': float}, 'Ring time allowed in seconds (joinTimeout).', None),
    (
        ('--first-speaker',),
        {'type': click.Choice(['user', 'agent'])},
        'Who speaks first once the call is answered.',
        'user',
    ),
    (('--throttle',), {}, 'Ultravox call throttle name (?throttle=).', None),
    (
        ('--dispositions',),
        {'metavar': 'NAME,...'},
        "What the agent may report through the dialer's outcome tool, comma-separated.",
        'interested,not_interested,callback_requested,do_not_call,wrong_person',
    ),
    (
        ('--voicemail-message',),
        {'metavar': 'TEXT'},
        'With --system-prompt: the message the built-in leaveVoicemail tool leaves.',
        None,
    ),
]


def _options_decorator(*, with_defaults: bool) -> Callable[[F], F]:
    def decorate(command: F) -> F:
        for flags, kwargs, text, default in reversed(_CAMPAIGN_OPTIONS):
            shown = f'{text} [{default}]' if with_defaults and default else text
            command = click.option(*flags, help=shown, **kwargs)(command)
        return command

    return decorate


#: Options shared by ``load`` and ``update``; each is also a key of the campaign file.
campaign_options = _options_decorator(with_defaults=True)
#: The same options for ``update``, whose help shows no defaults: it changes only what is given.
update_options = _options_decorator(with_defaults=False)

_UNITS = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}
_DURATION = re.compile(r'(?:\d+(?:\.\d+)?[smhd])+|\d+(?:\.\d+)?')
_DURATION_PART = re.compile(r'(\d+(?:\.\d+)?)([smhd]?)')


def parse_duration(text: str, param_hint: str) -> float:
    """``90`` (seconds), ``90s``, ``10m``, ``1h30m``, ``2d``: seconds."""
    value = text.strip().lower()
    if not _DURATION.fullmatch(value):
        raise click.BadParameter(f'{text!r} is not a duration (e.g. 30s, 10m, 1h30m, 2d)', param_hint=param_hint)
    return sum(float(number) * _UNITS[unit or 's'] for number, unit in _DURATION_PART.findall(value))


def _retry_delays(value: str) -> dict[str, float]:
    """``no_answer=1h,busy=10m`` -> {outcome: seconds}; unknown or never-retried outcomes are refused."""
    retryable = [o.value for o in Outcome if o not in NEVER_RETRIED]
    delays: dict[str, float] = {}
    for part in _split(value) or []:
        outcome, sep, duration = (s.strip() for s in part.partition('='))
        if not sep or outcome not in retryable:
            raise click.BadParameter(
                f'{part!r}: expected OUTCOME=DURATION with OUTCOME one of {", ".join(retryable)}',
                param_hint='--retry-delay',
            )
        delays[outcome] = parse_duration(duration, '--retry-delay')
    return delays


def _retry_on(value: str) -> list[str]:
    return [] if value.strip().lower() == 'none' else _split(value) or []


def _cli_options(*, base_delays: dict[str, float] | None = None, **given: Any) -> dict[str, Any]:
    """The options given on the command line, as campaign settings (None means not given).

    Retry delays given are laid over ``base_delays`` (the campaign's, for an update), else the
    defaults. ``--max-attempts 1`` alone means no retries, so it clears the outcomes retried.
    """
    hours = _hours_options(given.pop('hours', None), given.pop('days', None), given.pop('legal_bound', None))
    retry: dict[str, Any] = {}
    retry_on = given.pop('retry_on', None)
    if retry_on is not None:
        retry['retry_on'] = _retry_on(retry_on)
    delays = given.pop('retry_delay', None)
    if delays is not None:
        base = base_delays if base_delays is not None else RetryPolicy().model_dump(mode='json')['delays']
        retry['delays'] = {**base, **_retry_delays(delays)}
    for key in ('max_attempts', 'max_per_24h'):
        value = given.pop(key, None)
        if value is not None:
            retry[key] = value
    if retry.get('max_attempts') == 1 and 'retry_on' not in retry:
        retry['retry_on'] = []
    dispositions = given.pop('dispositions', None)
    if dispositions is not None:
        given['dispositions'] = _split(dispositions) or []
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
@click.option(
    '--paused',
    is_flag=True,
    help='Create the campaign paused (or pause it) before adding contacts: nothing is dialled until '
    '`dialer campaign resume NAME`, so `plan`, `show` and `status` can be read first.',
)
@load_options
@campaign_options
def load(
    contacts: Path,
    name: str | None,
    campaign_file: Path | None,
    rejects: Path | None,
    progress: bool | None,
    start_at: str | None,
    number_types: str | None,
    *,
    paused: bool,
    **options: Any,
) -> None:
    """Load CONTACTS (CSV) into a campaign, creating it if needed; dialling starts at once unless
    --paused or --start-at says otherwise.

    Into an existing campaign, `--campaign NAME` alone is enough: it keeps its settings, and any
    option given must match them (the load is refused naming each difference). A refused load writes
    nothing.
    """
    settings = load_settings()
    rejects_path = rejects or contacts.with_name(contacts.name + '.rejects.csv')

    async def go() -> tuple[CampaignConfig, LoadSummary]:
        redis = redis_client(settings)
        try:
            config = await settings_for_load(
                redis,
                name=name,
                campaign_file=campaign_file,
                start_at=start_at,
                number_types=number_types,
                cli_options=lambda delays, extra: _cli_options(base_delays=delays, **extra, **options),
            )
            TrunkRegistry(settings.trunks_file).get(config.trunk)
            summary = await load_contacts(
                redis,
                config,
                contacts,
                rejects_path=rejects_path,
                progress=sys.stderr.isatty() if progress is None else progress,
                paused=paused,
                outbox=Outbox.from_settings(settings),
            )
        finally:
            await redis.aclose()
        return config, summary

    config, summary = run(go())
    report_load(contacts, config, summary, rejects_path, paused=paused)


@campaign.command()
@click.argument('name')
@update_options
def update(name: str, **options: Any) -> None:
    """Change a campaign's settings; waiting contacts are rescheduled, workers apply the rest within seconds.

    Only the options given change. A change of hours, days, retry delays, attempts or outcomes
    retried moves every contact waiting in the queue to the time the new settings give it, and closes
    those the new retry policy leaves without an attempt (their last outcome becomes final).
    """
    if all(value is None for value in options.values()):
        raise click.UsageError('nothing to change: give at least one option (see `dialer campaign update --help`)')
    settings = load_settings()

    async def go() -> tuple[list[str], reschedule.RescheduleSummary | None]:
        redis = redis_client(settings)
        try:
            current = await lifecycle.read_config(redis, name)
            base = json.loads(current.model_dump_json())
            changes = _cli_options(base_delays=base['retry']['delays'], **options)
            for key in ('hours', 'retry'):
                if key in changes:
                    changes[key] = {**base[key], **changes[key]}
            config = lifecycle.merge_update(current, changes)
            TrunkRegistry(settings.trunks_file).get(config.trunk)
            changed = lifecycle.differences(current, config)
            if changed:
                await lifecycle.save_config(redis, config, update=True, outbox=Outbox.from_settings(settings))
            moved = None
            if reschedule.SCHEDULE_FIELDS & set(changed):
                moved = await reschedule.reschedule_waiting(redis, config, Outbox.from_settings(settings))
            return changed, moved
        finally:
            await redis.aclose()

    changed, moved = run(go())
    if not changed:
        click.echo(f'campaign {name!r} unchanged: it already has these settings')
        return
    click.echo(f'campaign {name!r} updated: {", ".join(changed)}')
    if moved is not None:
        click.echo(
            f'  waiting contacts: {moved.moved} rescheduled, {moved.closed} closed (no attempt left), '
            f'{moved.unchanged + moved.skipped} unchanged'
        )


def _state_command(action: str, doc: str) -> None:
    @campaign.command(name=action, help=doc)
    @click.argument('name')
    def command(name: str) -> None:
        settings = load_settings()

        async def go() -> str:
            redis = redis_client(settings)
            try:
                return await lifecycle.change_state(redis, name, action, Outbox.from_settings(settings))
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

    campaigns = run(go())
    if not campaigns:
        click.echo('no campaigns yet (create one with `dialer campaign load CONTACTS.csv --campaign NAME ...`)')
    for name, state in campaigns:
        click.echo(f'{name}\t{state}')


@campaign.command()
@click.argument('name')
@click.option('--json', 'as_json', is_flag=True, help='Machine-readable output.')
def show(name: str, *, as_json: bool) -> None:
    """Everything a campaign is configured with: trunk, agent, calling hours, retry policy, limits."""
    settings = load_settings()

    async def go() -> dict[str, str]:
        redis = redis_client(settings)
        try:
            return await lifecycle.read_campaign(redis, name)
        finally:
            await redis.aclose()

    data = run(go())
    config = CampaignConfig.model_validate_json(data['config'])
    try:
        trunk: Trunk | None = TrunkRegistry(settings.trunks_file).get(config.trunk)
    except TrunkConfigError:
        trunk = None  # the campaign is still shown; its trunk is only named
    described = describe_campaign(config, data, trunk)
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    for label, value in describe_lines(described):
        click.echo(f'{label:<16} {value}' if label else value)


@campaign.command()
@click.argument('name')
@click.option('--json', 'as_json', is_flag=True, help='Machine-readable output (with --watch: one JSON object a line).')
@click.option('--watch', is_flag=True, help='Keep refreshing in place until Ctrl-C.')
@click.option(
    '--interval', type=click.FloatRange(min=0.1), default=2.0, show_default=True, help='Seconds between refreshes.'
)
def status(name: str, *, as_json: bool, watch: bool, interval: float) -> None:
    """Counts by state and outcome, calls in flight, attempts, SIP minutes."""
    settings = load_settings()
    if not watch:

        async def once() -> dict[str, Any]:
            redis = redis_client(settings)
            try:
                return await results.campaign_status(redis, name)
            finally:
                await redis.aclose()

        data = run(once())
        if as_json:
            click.echo(json.dumps(data, indent=2, default=str))
        else:
            Console().print(results.render_status(data))
        return

    async def follow() -> None:
        redis = redis_client(settings)
        try:
            data = await results.campaign_status(redis, name)  # an unknown campaign fails before any display
            if as_json:
                while True:
                    click.echo(json.dumps(data, default=str))
                    await asyncio.sleep(interval)
                    data = await results.campaign_status(redis, name)
            with Live(results.render_status(data), console=Console(), auto_refresh=False) as live:
                while True:
                    await asyncio.sleep(interval)
                    data = await results.campaign_status(redis, name)
                    live.update(results.render_status(data), refresh=True)
        finally:
            await redis.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        run(follow())


@campaign.command()
@click.argument('name')
@click.option(
    '--output', required=True, type=click.Path(path_type=Path, allow_dash=True), help='File to write, or - for stdout.'
)
@click.option(
    '--format',
    'fmt',
    type=click.Choice(['csv', 'jsonl', 'parquet']),
    default='csv',
    show_default=True,
    help="parquet: with --attempts, needs pip install 'dialer[parquet]'.",
)
@click.option('--attempts', is_flag=True, help='One row per attempt (trunk, call id, times, outcome, billing, ...).')
def export(name: str, output: Path, fmt: str, *, attempts: bool) -> None:
    """One row per contact: outcome, attempts, call ids, times, durations, billed SIP seconds.

    ``--attempts``: one row per attempt instead. ``--output -`` writes the rows to standard output
    (the count goes to standard error).
    """
    from campaigns.attempt_export import export_attempts  # noqa: PLC0415

    settings = load_settings()
    to_stdout = str(output) == '-'
    if fmt == 'parquet' and not attempts:
        raise click.BadParameter('parquet is for --attempts exports', param_hint='--format')

    async def go() -> int:
        redis = redis_client(settings)
        target = sys.stdout if to_stdout else output
        try:
            if attempts:
                written = await export_attempts(
                    redis, name, target, fmt, caller_ids=_caller_ids(settings.trunks_file),
                    ultravox_base_url=settings.ultravox_base_url,
                )  # fmt: skip
                return int(written)
            return int(await results.export_results(redis, name, target, fmt))
        finally:
            await redis.aclose()

    written = run(go())
    what = 'attempts' if attempts else 'contacts'
    click.echo(f'{written} {what} written to {"standard output" if to_stdout else output}', err=to_stdout)


def _caller_ids(trunks_file: Path) -> dict[str, str]:
    """Trunk name -> caller id, for the attempt export; none when the trunks file is not readable here."""
    try:
        registry = TrunkRegistry(trunks_file)
    except (TrunkConfigError, OSError):
        return {}
    return {name: str(getattr(trunk, 'caller_id', '') or '') for name, trunk in registry.trunks.items()}


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
