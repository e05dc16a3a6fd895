"""``dialer outbox ...``: the result-webhook outbox for operators (status, replay)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from dialer.outbox import Outbox
from dialer.scripts import Scripts
from workers.cli import cli, load_settings, run
from workers.outbox_status import read_status
from workers.runtime import redis_client


#: Events re-queued per script call by ``replay``.
REPLAY_PAGE = 500

_DURATION = re.compile(r'^(\d+(?:\.\d+)?)\s*([smhd])$')
_UNIT_SECONDS = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}


def parse_since(value: str, now: datetime) -> datetime:
    """``2h`` / ``30m`` / ``1d`` / ``90s`` ago, or an ISO 8601 date-time with an offset."""
    match = _DURATION.match(value.strip().lower())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f'{value!r}: expected a duration (90s, 30m, 2h, 1d) or an ISO 8601 time with an offset',
            param_hint='--since',
        ) from None
    if moment.tzinfo is None:
        raise click.BadParameter(f'{value!r}: give the offset (…Z or …+01:00)', param_hint='--since')
    return moment


@cli.group()
def outbox() -> None:
    """Result webhooks: what is waiting for each destination, and sending events again."""


@outbox.command()
@click.option('--json', 'as_json', is_flag=True, help='Print JSON (for scripts).')
def status(*, as_json: bool) -> None:
    """Per destination: events waiting, the oldest one's age, failing, given up, dropped by the cap."""
    from workers.exporter import sync_redis_client  # noqa: PLC0415

    settings = load_settings()
    box = Outbox.from_settings(settings)
    if not box.enabled:
        raise click.ClickException('DIALER_RESULT_WEBHOOKS is empty: no destination, no events')
    client = sync_redis_client(settings)
    try:
        data = run_sync(lambda: read_status(client, box))
    finally:
        client.close()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(title=f'Outbox ({data["retained_events"]} of at most {data["max_events"]} events retained)')
    for column in ('Destination', 'Waiting', 'Oldest waiting', 'Failing', 'Given up', 'Dropped'):
        table.add_column(column, justify='left' if column == 'Destination' else 'right')
    for row in data['destinations']:
        table.add_row(
            row['destination'],
            str(row['pending']),
            f'{row["oldest_pending_seconds"]:.0f} s' if row['pending'] else '-',
            str(row['failing']),
            str(row['dead']),
            str(row['dropped']),
        )
    Console().print(table)


def run_sync(read: Any) -> Any:
    """Synchronous Redis reads with the CLI's clean errors."""

    async def go() -> Any:
        return read()

    return run(go())


@outbox.command()
@click.option('--since', required=True, help='Events appended since: 90s, 30m, 2h, 1d, or an ISO 8601 time.')
@click.option('--destination', 'names', multiple=True, help='Only this destination (its name); default: all.')
def replay(*, since: str, names: tuple[str, ...]) -> None:
    """Send retained events again (delivered, given up or dropped): same ids, same order per contact."""
    settings = load_settings()
    box = Outbox.from_settings(settings)
    if not box.enabled:
        raise click.ClickException('DIALER_RESULT_WEBHOOKS is empty: no destination to replay to')
    unknown = sorted(set(names) - set(box.destination_ids))
    if unknown:
        raise click.BadParameter(
            f'unknown destination {", ".join(unknown)}; configured: {", ".join(box.destination_ids)}',
            param_hint='--destination',
        )
    targets = list(names) or box.destination_ids

    async def go() -> dict[str, int]:
        redis = redis_client(settings)
        try:
            scripts = Scripts(redis)
            now = datetime.fromtimestamp(await scripts.now_ms() / 1000, UTC)
            since_ms = int(parse_since(since, now).timestamp() * 1000)
            queued: dict[str, int] = {}
            for dest in targets:
                offset, total = 0, 0
                while True:
                    added, read = await scripts.outbox_replay(dest, since_ms, offset, REPLAY_PAGE)
                    total, offset = total + added, offset + read
                    if read < REPLAY_PAGE:
                        break
                queued[dest] = total
            return queued
        finally:
            await redis.aclose()

    for dest, count in run(go()).items():
        click.echo(f'{dest}: {count} events queued again')
