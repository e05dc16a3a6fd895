"""``dialer campaign requeue``: put back contacts that ended for a reason since fixed."""

from __future__ import annotations

import click

from campaigns.requeue import requeue
from dialer.models import Outcome
from workers.cli import load_settings, run
from workers.cli_campaign import campaign
from workers.runtime import redis_client


@campaign.command(name='requeue')
@click.argument('name')
@click.option(
    '--outcome',
    required=True,
    type=click.Choice([o.value for o in Outcome]),
    help='Reopen contacts that ended with this outcome (e.g. failed).',
)
@click.option('--reason', default='', help="Only those whose last attempt's reason contains this text.")
def requeue_command(name: str, outcome: str, reason: str) -> None:
    """Reopen NAME's contacts that ended with --outcome, with their attempt budget restored.

    For contacts that failed for a reason you have since fixed (a wrong API key, a bad trunk
    setting). The do-not-call list, calling hours and the 24 h cap still apply when they are dialled.
    """
    settings = load_settings()

    async def go() -> int:
        redis = redis_client(settings)
        try:
            return await requeue(redis, name, Outcome(outcome), reason)
        finally:
            await redis.aclose()

    reopened = run(go())
    click.echo(f'{name}: {reopened} contact(s) with outcome {outcome} requeued')
