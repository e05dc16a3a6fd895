"""Running the ``dialer`` CLI in-process against the test Redis, and setting the dialer's clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from click.testing import CliRunner

from dialer import constants as k
from workers.cli import cli


if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import redis as redis_sync


#: A Monday, 07:00 in New York (EST): before a 09:00 opening, so first calls are due later that day.
MONDAY_0700_NEW_YORK = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ALL_DAY = ['--hours', '00:00-24:00', '--no-legal-bound']


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def cli_invoker(tmp_path: Path, redis_url: str, trunks: str, log_level: str = 'warning') -> Callable[..., Any]:
    """``invoke(*args, expect=0, **env)``: the CLI against ``redis_url`` and a trunks file holding ``trunks``;
    the exit code must be ``expect`` and no traceback may show."""
    path = tmp_path / 'trunks.toml'
    path.write_text(trunks, encoding='utf-8')
    env = {'DIALER_REDIS_URL': redis_url, 'DIALER_TRUNKS_FILE': str(path), 'DIALER_LOG_LEVEL': log_level}

    def invoke(*args: str, expect: int = 0, **extra_env: str) -> Any:
        result = CliRunner().invoke(cli, list(args), env={**env, **extra_env})
        assert result.exit_code == expect, result.output
        assert 'Traceback' not in result.output
        return result

    return invoke


def set_clock(sync_redis: redis_sync.Redis, moment: datetime) -> None:
    """Make every dialer script (and so every command) see ``moment`` as now, give or take the test's run time."""
    seconds, micros = sync_redis.time()
    sync_redis.set(k.CLOCK_OFFSET, ms(moment) - (seconds * 1000 + micros // 1000))
