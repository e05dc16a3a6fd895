"""``dialer sip show`` and ``dialer sip fallback set URL``: the account's incoming SIP configuration.

Call-backs reach the dialer through Ultravox's SIP fallback handler (``PATCH /api/sip``
``fallbackHandler {url, secrets}``), served by ``dialer webhooks`` at ``/sip/fallback``. The handler's
secrets are secrets: never printed (``show`` masks them), registered for masking in logs.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import click

from dialer.logs import register_secrets
from dialer.ultravox import UltravoxClient
from workers.cli import cli, load_settings, run, user_errors
from workers.sip_fallback import PATH


#: FallbackHandler in Ultravox's schema: 1-10 secrets of at most 120 characters.
MAX_SECRETS = 10
MAX_SECRET_LENGTH = 120
#: A secret this short could be guessed; Ultravox generates 64 hex characters.
MIN_SECRET_LENGTH = 16


@cli.group()
def sip() -> None:
    """Incoming SIP: the fallback handler that routes call-backs to campaigns."""


def masked(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration with the fallback handler's secrets replaced by how many there are."""
    shown = dict(config)
    handler = shown.get('fallbackHandler')
    if isinstance(handler, dict):
        count = len(handler.get('secrets') or [])
        shown['fallbackHandler'] = {**handler, 'secrets': [f'**secret {i + 1}**' for i in range(count)]}
    return shown


@sip.command(name='show')
@click.option('--json', 'as_json', is_flag=True, help='Print the configuration as JSON.')
@user_errors
def sip_show(*, as_json: bool) -> None:
    """Show the account's SIP configuration (GET /api/sip); secrets are masked."""
    settings = load_settings()

    async def go() -> dict[str, Any]:
        async with UltravoxClient.from_settings(settings) as client:
            return await client.sip_config()

    config = masked(run(go()))
    if as_json:
        click.echo(json.dumps(config, indent=2))
        return
    handler = config.get('fallbackHandler')
    click.echo(f'domain: {config.get("domain")}')
    click.echo(f'allowed CIDR ranges: {", ".join(config.get("allowedCidrRanges") or []) or "none"}')
    click.echo(f'all agents allowed: {"yes" if config.get("allowAllAgents") else "no"}')
    click.echo(f'agent allowances: {len(config.get("allowedAgents") or [])}')
    if isinstance(handler, dict):
        click.echo(f'fallback handler: {handler.get("url")} ({len(handler.get("secrets") or [])} secrets)')
    else:
        click.echo('fallback handler: none (call-backs are not routed; see `dialer sip fallback set`)')


@sip.group(name='fallback')
def fallback() -> None:
    """The fallback handler webhook (call-back routing)."""


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {'http', 'https'} or not parts.netloc or any(ch.isspace() for ch in url):
        raise click.BadParameter(f'{url!r} is not an http(s) URL', param_hint='URL')
    if parts.path in {'', '/'}:
        url = url.rstrip('/') + PATH  # the base URL of `dialer webhooks` was given
    return url


def _check_secrets(secrets: list[str]) -> list[str]:
    if not secrets:
        raise click.UsageError(
            'no secret: give --secret (repeat it to rotate) or set DIALER_SIP_FALLBACK_SECRETS, which '
            '`dialer webhooks` verifies the handler requests with'
        )
    if len(secrets) > MAX_SECRETS:
        raise click.BadParameter(f'at most {MAX_SECRETS} secrets (given {len(secrets)})', param_hint='--secret')
    for index, secret in enumerate(secrets, start=1):
        if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
            raise click.BadParameter(
                f'secret {index} must be {MIN_SECRET_LENGTH}-{MAX_SECRET_LENGTH} characters', param_hint='--secret'
            )
    return secrets


@fallback.command(name='set')
@click.argument('url')
@click.option(
    '--secret',
    'secrets',
    multiple=True,
    help='Secret signing the requests (repeat to rotate); default: DIALER_SIP_FALLBACK_SECRETS.',
)
@user_errors
def fallback_set(url: str, secrets: tuple[str, ...]) -> None:
    """Point the account's SIP fallback handler at URL (PATCH /api/sip); a bare base URL gets /sip/fallback."""
    settings = load_settings()
    register_secrets(secrets)
    chosen = _check_secrets(list(secrets) or [s.get_secret_value() for s in settings.sip_fallback_secrets])
    body = {'fallbackHandler': {'url': _check_url(url), 'secrets': chosen}}

    async def go() -> dict[str, Any]:
        async with UltravoxClient.from_settings(settings) as client:
            return await client.patch_sip_config(body)

    config = masked(run(go()))
    handler = config.get('fallbackHandler') or {}
    click.echo(f'fallback handler set: {handler.get("url")} ({len(handler.get("secrets") or [])} secrets)')
    if secrets and {s.get_secret_value() for s in settings.sip_fallback_secrets} != set(secrets):
        click.echo('set DIALER_SIP_FALLBACK_SECRETS to the same secrets for `dialer webhooks`', err=True)
