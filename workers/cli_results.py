"""``dialer campaign transcripts`` and ``dialer campaign report``: results to files people use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from campaigns.report import AGENT_PRICE_PER_MINUTE, SIP_PRICE_PER_MINUTE, gather, render
from campaigns.transcripts import fetch_transcripts
from dialer.ultravox import UltravoxClient
from workers.cli import load_settings, run
from workers.cli_campaign import campaign
from workers.runtime import redis_client


console = Console(stderr=True)


@campaign.command()
@click.argument('name')
@click.option(
    '--output',
    required=True,
    type=click.Path(path_type=Path),
    help='A directory (one <call id>.jsonl per call) or a FILE.jsonl (one line per call).',
)
@click.option('--concurrency', default=8, show_default=True, type=click.IntRange(1, 64), help='Calls fetched at once.')
def transcripts(name: str, output: Path, concurrency: int) -> None:
    """Fetch every answered call's messages (all pages); a re-run fetches only what is missing.

    Transcripts are personal data: written only to OUTPUT (mode 0600), never to Redis or the logs.
    Keep them only as long as your retention policy allows.
    """
    settings = load_settings()

    async def go() -> tuple[int, int, int, int]:
        redis = redis_client(settings)
        ultravox = UltravoxClient.from_settings(settings)
        columns = (TextColumn('transcripts'), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        try:
            with Progress(*columns, console=console, transient=True) as progress:
                task = progress.add_task('fetch', total=None)
                result = await fetch_transcripts(
                    redis,
                    ultravox,
                    name,
                    output,
                    concurrency=concurrency,
                    on_total=lambda total: progress.update(task, total=total),
                    on_done=lambda: progress.advance(task),
                )
        finally:
            await ultravox.aclose()
            await redis.aclose()
        return result.answered, result.already_there, result.fetched, result.failed

    answered, already, fetched, failed = run(go())
    click.echo(f'{answered} answered calls: {fetched} transcripts fetched, {already} already there, {failed} failed')
    if failed:
        raise click.ClickException(f'{failed} transcripts could not be fetched; run the command again to fetch them')


@campaign.command()
@click.argument('name')
@click.option('--output', required=True, type=click.Path(path_type=Path), help='The HTML file to write.')
@click.option(
    '--sip-price', default=SIP_PRICE_PER_MINUTE, show_default=True, type=click.FloatRange(0), help='Per SIP minute.'
)
@click.option(
    '--agent-price',
    default=AGENT_PRICE_PER_MINUTE,
    show_default=True,
    type=click.FloatRange(0),
    help='Per agent minute.',
)
def report(name: str, output: Path, sip_price: float, agent_price: float) -> None:
    """One self-contained HTML file with the campaign's charts (opens without a network)."""
    try:
        import matplotlib as mpl  # noqa: F401, PLC0415  only checked here: the report's one extra dependency
    except ImportError:
        raise click.ClickException("the report needs matplotlib: pip install 'dialer[report]'") from None
    settings = load_settings()

    async def go() -> dict[str, Any]:
        redis = redis_client(settings)
        try:
            return await gather(redis, name)
        finally:
            await redis.aclose()

    page = render(run(go()), sip_price=sip_price, agent_price=agent_price)
    tmp = output.with_name(f'.{output.name}.tmp')
    tmp.write_text(page, encoding='utf-8')
    tmp.replace(output)
    click.echo(f'report written to {output} ({len(page.encode()) // 1024} KiB)')
