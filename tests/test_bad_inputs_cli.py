"""The same corpus of bad inputs through the ``dialer`` command: one clear line, exit code 1, Redis unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis as redis_sync
from bad_inputs import BAD_INPUTS, BadInput, materialise
from click.testing import CliRunner

import workers.cli_campaign
import workers.cli_tools  # noqa: F401  registers `dialer trunks`
from workers.cli import cli


TRUNKS = '[trunks.carrier-a]\nhost = "sip.a.example"\nfrom = "+14155550100"\nmax_concurrent = 2\ncalls_per_second = 1\n'


def _command(case: BadInput, path: Path, tmp_path: Path) -> list[str]:
    if case.kind == 'trunks':
        return ['trunks', 'check']
    if case.kind == 'campaign':
        good = tmp_path / 'good.csv'
        good.write_text('phone\n+14155552671\n', encoding='utf-8')
        return ['campaign', 'load', str(good), '--campaign-file', str(path)]
    return ['campaign', 'load', str(path), '--campaign', 'spring', '--agent-id', 'agent-1', '--trunk', 'carrier-a']


def snapshot(redis_url: str) -> list[tuple[bytes, bytes | None, int]]:
    """Every key with its serialized value and TTL (the CLI runs its own event loop, so this is sync)."""
    with redis_sync.Redis.from_url(redis_url) as raw:
        return [(key, raw.dump(key), raw.pttl(key)) for key in sorted(raw.scan_iter(count=1000))]


@pytest.mark.parametrize('case', BAD_INPUTS, ids=lambda case: case.id)
def test_the_cli_refuses_bad_input_with_exit_code_1_and_leaves_redis_unchanged(
    case: BadInput, sync_redis, redis_url: str, tmp_path: Path
) -> None:
    path = materialise(case, tmp_path)
    trunks = tmp_path / 'trunks.toml'
    trunks.write_text(TRUNKS, encoding='utf-8')
    env = {'DIALER_REDIS_URL': redis_url, 'DIALER_TRUNKS_FILE': str(path if case.kind == 'trunks' else trunks)}
    before = snapshot(redis_url)

    result = CliRunner().invoke(cli, _command(case, path, tmp_path), env=env)

    assert result.exit_code == 1, result.output
    assert f'Error: {path}' in result.output, result.output
    assert case.expected in result.output
    assert 'Traceback' not in result.output
    assert snapshot(redis_url) == before


def test_an_unknown_campaign_name_is_an_error_naming_it(sync_redis, redis_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ['campaign', 'status', 'nope'], env={'DIALER_REDIS_URL': redis_url})
    assert result.exit_code == 1
    assert "unknown campaign 'nope'" in result.output


def test_a_campaign_naming_an_unknown_trunk_fails_before_loading(sync_redis, redis_url: str, tmp_path: Path) -> None:
    (tmp_path / 'trunks.toml').write_text(TRUNKS, encoding='utf-8')
    (tmp_path / 'c.csv').write_text('phone\n+14155552671\n', encoding='utf-8')
    env = {'DIALER_REDIS_URL': redis_url, 'DIALER_TRUNKS_FILE': str(tmp_path / 'trunks.toml')}
    args = ['campaign', 'load', str(tmp_path / 'c.csv'), '--campaign', 'x', '--agent-id', 'a', '--trunk', 'carrier-z']
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 1
    assert "unknown trunk 'carrier-z'" in result.output
    assert sync_redis.dbsize() == 0
