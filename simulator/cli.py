"""``python -m simulator``: run the Ultravox API simulator on a local port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import uvicorn
from pydantic import ValidationError

from simulator.app import build_app
from simulator.config import SimulatorConfig, load_config_file


@click.command(name='simulator')
@click.option('--host', default='127.0.0.1', show_default=True, help='Interface to bind.')
@click.option('--port', default=8900, show_default=True, type=int, help='Port to listen on.')
@click.option('--config', 'config_file', type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help='TOML or JSON file of SimulatorConfig fields.')  # fmt: skip
@click.option('--time-scale', type=float, help='Real seconds per simulated second (0.001: 2 min call = 0.12 s).')
@click.option('--answer-rate', type=float, help='Share of calls answered (rates are normalised).')
@click.option('--webhook-url', help='Where call.* webhooks are POSTed.')
@click.option('--webhook-secret', multiple=True, help='Webhook signing secret (repeat for rotation).')
@click.option('--seed', type=int, help='Seed for outcomes, timings and faults.')
@click.option('--api-key', help='Require exactly this X-API-Key (default: any non-empty key).')
@click.option('--log-level', default='warning', show_default=True)
@click.option('--access-log/--no-access-log', default=False, show_default=True)
def simulator_command(
    *,
    host: str,
    port: int,
    config_file: Path | None,
    time_scale: float | None,
    answer_rate: float | None,
    webhook_url: str | None,
    webhook_secret: tuple[str, ...],
    seed: int | None,
    api_key: str | None,
    log_level: str,
    access_log: bool,
) -> None:
    """Serve an imitation of the Ultravox call API (never a public host: bind locally)."""
    fields: dict[str, Any] = {}
    try:
        if config_file is not None:
            fields.update(load_config_file(config_file))
    except (ValueError, TypeError) as error:
        raise click.BadParameter(str(error), param_hint='--config') from error
    overrides = {
        'time_scale': time_scale,
        'answer_rate': answer_rate,
        'webhook_url': webhook_url,
        'webhook_secret': list(webhook_secret) or None,
        'seed': seed,
        'api_key': api_key,
    }
    fields.update({key: value for key, value in overrides.items() if value is not None})
    try:
        config = SimulatorConfig.model_validate(fields)
    except ValidationError as error:
        source = str(config_file) if config_file else 'options'
        raise click.UsageError(f'invalid simulator config ({source}):\n{error}') from error
    # uvicorn's own "running on" line is an INFO record, hidden at the default log level
    shown = f'[{host}]' if ':' in host else host
    click.echo(f'Ultravox simulator listening on http://{shown}:{port} (Ctrl-C to stop)', err=True)
    uvicorn.run(build_app(config), host=host, port=port, log_level=log_level, access_log=access_log)
