"""``dialer campaign report``: one self-contained HTML file whose charts and embedded data match the
campaign's records (validated by parsing the HTML; ``test_report_browser.py`` opens it in Chromium)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

import redis.asyncio as aredis
from click.testing import CliRunner

import workers.cli_results  # noqa: F401  registers `dialer campaign report`
from bench.report_bench import craft_campaign
from dialer import constants as k
from workers.cli import cli


if TYPE_CHECKING:
    from pathlib import Path

    import pytest


VOID = {'meta', 'br', 'img', 'input', 'link', 'hr'}
CHARTS = {
    'funnel',
    'answer_rate_by_hour',
    'answer_rate_by_weekday',
    'attempts_per_contact',
    'outcomes_by_trunk',
    'minutes_and_cost',
}


class Page(HTMLParser):
    """Checks nesting and collects what the tests look at."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.references: list[str] = []
        self.sections: dict[str, int] = {}
        self.section: str | None = None
        self.data_script = False
        self.data = ''

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, value in attrs:
            if name in {'src', 'href', 'xlink:href'} and value and not value.startswith('#'):
                self.references.append(value)
        if tag == 'section':
            self.section = values.get('id')
        if tag == 'svg' and self.section:
            self.sections[self.section] = self.sections.get(self.section, 0) + 1
        self.data_script = tag == 'script' and values.get('id') == 'report-data'
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f'</{tag}> closes {self.stack[-1:] or "nothing"}')
            return
        self.stack.pop()
        if tag == 'section':
            self.section = None

    def handle_data(self, data: str) -> None:
        if self.data_script:
            self.data += data


def test_the_report_is_one_self_contained_page_whose_charts_match_the_records(
    sync_redis: Any, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def craft() -> None:
        client = aredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            await craft_campaign(client, 'spring', 300)
        finally:
            await client.aclose()

    asyncio.run(craft())
    attempts = [json.loads(raw) for raw in sync_redis.hvals(k.campaign_attempts('spring'))]
    progress = [json.loads(raw) for raw in sync_redis.hvals(k.campaign_progress('spring'))]
    monkeypatch.setenv('DIALER_REDIS_URL', redis_url)
    output = tmp_path / 'report.html'

    result = CliRunner().invoke(cli, ['campaign', 'report', 'spring', '--output', str(output)])

    assert result.exit_code == 0, result.output
    page = Page()
    page.feed(output.read_text(encoding='utf-8'))
    page.close()
    assert not page.errors
    assert page.stack == []
    assert page.references == [], 'nothing is fetched when the file opens'
    assert page.sections == dict.fromkeys(CHARTS, 1)
    assert output.stat().st_size < 200_000
    data: dict[str, Any] = json.loads(page.data)
    answered_contacts = sum(1 for p in progress if p['o'] in {'answered', 'voicemail'})
    assert data['funnel']['loaded'] == data['funnel']['dialled'] == 300
    assert data['funnel']['answered'] == answered_contacts
    assert sum(data['attempts_per_contact'].values()) == 300
    assert sum(int(n) * c for n, c in data['attempts_per_contact'].items()) == len(attempts)
    by_trunk = Counter(a['trunk'] for a in attempts)
    assert {t: sum(c.values()) for t, c in data['outcomes_by_trunk'].items()} == dict(by_trunk)
    assert sum(data['attempts_by_hour']) == len(attempts)
    assert round(sum(data['minutes_by_day']['sip_minutes']), 1) == round(sum(a['sip'] for a in attempts) / 60, 1)
    assert len(data['minutes_by_day']['cost']) == len(data['minutes_by_day']['days'])


def test_a_report_of_an_unknown_campaign_is_refused_and_writes_nothing(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync_redis: Any
) -> None:
    monkeypatch.setenv('DIALER_REDIS_URL', redis_url)
    result = CliRunner().invoke(cli, ['campaign', 'report', 'nope', '--output', str(tmp_path / 'r.html')])
    assert result.exit_code == 1
    assert 'nope' in result.output
    assert list(tmp_path.iterdir()) == []
