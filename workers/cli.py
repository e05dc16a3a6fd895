"""The ``dialer`` command: one console script with subcommands for every role in the fleet."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any, TypeVar

import click
import redis.exceptions
from pydantic import ValidationError
from pydantic_settings import SettingsError

from campaigns.lifecycle import CampaignConflictError, UnknownCampaignError
from dialer.logs import configure_logging
from dialer.settings import Settings
from dialer.trunks import TrunkConfigError
from simulator.cli import simulator_command


if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine


T = TypeVar('T')

#: Errors that mean "your input is wrong": shown as one clear line, exit code 1, no traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    ValueError,  # CsvError, CampaignFileError, InvalidNumber, TrunkConfigError, ... are ValueErrors
    LookupError,
    OSError,
    TrunkConfigError,
    CampaignConflictError,
    UnknownCampaignError,
)


def load_settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        fields = '; '.join(f'DIALER_{".".join(map(str, e["loc"])).upper()}: {e["msg"]}' for e in exc.errors())
        raise click.ClickException(f'bad settings: {fields}') from None
    except SettingsError as exc:
        # a list setting that is not JSON (``DIALER_RESULT_WEBHOOKS=oops``): name it, no traceback
        raise click.ClickException(f'bad settings: {exc} (DIALER_* list settings are JSON)') from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, turning input and connection problems into clean exits."""
    try:
        return asyncio.run(coro)
    except redis.exceptions.ConnectionError as exc:
        raise click.ClickException(f'cannot reach Redis: {exc} (set DIALER_REDIS_URL)') from None
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None


def user_errors(command: Callable[..., T]) -> Callable[..., T]:
    """For synchronous commands: the same clean exit as :func:`run`."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


@click.group()
@click.version_option(package_name='dialer')
def cli() -> None:
    """Outbound campaign dialer for Ultravox voice-AI agents over your own SIP trunks."""


@cli.command()
@click.option('--burst', is_flag=True, help='Stop when the queue is empty (for tests and batch runs).')
def worker(*, burst: bool) -> None:
    """Run a dial worker (arq): places calls, follows them, enforces limits fleet-wide."""
    from workers.arq_worker import install_uvloop  # noqa: PLC0415
    from workers.serving import PortInUseError  # noqa: PLC0415
    from workers.worker import run_worker  # noqa: PLC0415  arq is only imported by the roles that run it

    settings = load_settings()
    # before arq makes its event loop: the worker runs on uvloop where it is installed
    install_uvloop()
    try:
        run_worker(settings, burst=burst)
    except (TrunkConfigError, PortInUseError) as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.option('--host', default='127.0.0.1', show_default=True)
@click.option('--port', default=8080, show_default=True, type=int)
def webhooks(*, host: str, port: int) -> None:
    """Receive Ultravox webhooks (call.ended; call.billed optional); optional, polling alone suffices."""
    from dialer.provider_trunks import ProviderTrunk  # noqa: PLC0415
    from workers.runtime import Runtime  # noqa: PLC0415
    from workers.serving import PortInUseError, start_metrics_server  # noqa: PLC0415
    from workers.webhooks import build_webhook_app, serve_webhooks  # noqa: PLC0415

    settings = load_settings()
    try:
        rt = Runtime.create(settings)
    except TrunkConfigError as exc:
        raise click.ClickException(str(exc)) from None
    # every route checks its own secret and refuses everything without one; with none at all there
    # is nothing this server could accept (provider trunks verify their providers' webhooks themselves)
    providers = any(isinstance(trunk, ProviderTrunk) for trunk in rt.trunks.trunks.values())
    if not (settings.webhook_secrets or settings.sip_fallback_secrets or settings.tool_secret or providers):
        raise click.ClickException(
            'nothing to serve: set DIALER_WEBHOOK_SECRETS (Ultravox webhooks), DIALER_SIP_FALLBACK_SECRETS '
            '(call-backs) or DIALER_TOOL_SECRET (the agent tool), or add a provider trunk; unsigned requests '
            'are never accepted'
        )
    try:
        if settings.metrics_port:
            start_metrics_server(settings.metrics_host, settings.metrics_port)
    except PortInUseError as exc:
        raise click.ClickException(str(exc)) from None
    serve_webhooks(build_webhook_app(rt), settings, host, port)


@cli.command()
@click.option('--host', default='127.0.0.1', show_default=True)
@click.option('--port', type=int, help='Default: DIALER_EXPORTER_PORT (9101).')
def exporter(*, host: str, port: int | None) -> None:
    """Export fleet-wide state from Redis (contacts, slots, queue) to Prometheus, once for all workers."""
    from workers.exporter import run_exporter  # noqa: PLC0415

    settings = load_settings()
    try:
        run_exporter(settings, host, port or settings.exporter_port)
    except TrunkConfigError as exc:
        raise click.ClickException(str(exc)) from None


cli.add_command(simulator_command)


def main() -> None:
    from workers import cli_campaign, cli_outbox, cli_recover, cli_results, cli_sip, cli_tools  # noqa: PLC0415, F401  registers the subcommands

    cli(prog_name='dialer')


if __name__ == '__main__':  # pragma: no cover
    main()
