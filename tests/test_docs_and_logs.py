"""The README documents every setting, and the processes log what matters once, without noise."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dialer.settings import Settings
from simulator.testing import free_port
from workers.cli import load_settings


README = Path(__file__).resolve().parent.parent / 'README.md'


def readme_settings_table() -> set[str]:
    """The ``DIALER_*`` names in the first column of the README's Configuration table."""
    text = README.read_text(encoding='utf-8')
    section = text.split('## Configuration', 1)[1].split('\n## ', 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith('| `DIALER_'):
            names.update(re.findall(r'`(DIALER_[A-Z0-9_]+)`', line.split('|')[1]))
    return names


def test_the_readme_settings_table_lists_every_setting_and_no_other() -> None:
    settings = {f'DIALER_{name.upper()}' for name in Settings.model_fields}
    documented = readme_settings_table()
    missing = sorted(settings - documented)
    unknown = sorted(documented - settings)
    assert not missing, (
        'README.md, section Configuration: add a row for each of these settings '
        f'(| `NAME` | default | what it does |): {", ".join(missing)}'
    )
    assert not unknown, f'README.md, section Configuration: these settings no longer exist: {", ".join(unknown)}'


@pytest.mark.parametrize(('level', 'shown'), [('info', False), ('warning', False), ('debug', True)])
def test_http_client_request_lines_appear_only_at_debug(monkeypatch, level: str, *, shown: bool) -> None:
    monkeypatch.setenv('DIALER_LOG_LEVEL', level)
    load_settings()  # what every command runs first
    for name in ('httpx', 'httpcore'):
        assert logging.getLogger(name).isEnabledFor(logging.INFO) is shown


def test_the_simulator_says_where_it_listens_on_start(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, '-m', 'workers', 'simulator', '--port', str(port)]
    log = (tmp_path / 'sim.log').open('w+b')
    process = subprocess.Popen(command, stderr=log, stdout=subprocess.DEVNULL)
    try:
        expected = f'listening on http://127.0.0.1:{port}'.encode()
        while expected not in (tmp_path / 'sim.log').read_bytes():
            assert process.poll() is None, (tmp_path / 'sim.log').read_text()
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_the_demo_points_only_to_files_that_exist_after_it(tmp_path: Path, redis_url: str, sync_redis) -> None:
    out = tmp_path / 'out'
    command = [sys.executable, '-m', 'workers', 'demo', '--contacts', '12', '--workers', '1', '--output-dir', str(out)]
    env = {**os.environ, 'DIALER_REDIS_URL': redis_url, 'COLUMNS': '250'}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    named = re.findall(rf'({re.escape(str(out))}/[\w.-]+)', done.stdout)
    assert {Path(p).name for p in named} >= {'contacts.csv', 'contacts.rejects.csv', 'results.csv'}
    for path in named:
        assert Path(path).is_file(), f'the demo names {path}, which does not exist'
