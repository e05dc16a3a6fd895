"""``dialer campaign report`` opened in a real headless Chromium with no network, checked for what a
user sees: no console errors or failed requests, nothing fetched but the file, every chart drawn with
a real size and every series it plots visible in its pixels, the title and the funnel's numbers.

Chromium missing: skipped with the reason, except under ``CI=true`` where it fails (``.ci/run``
installs Debian's ``chromium``)."""

from __future__ import annotations

import asyncio
import io
import json
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import redis.asyncio as aredis
from click.testing import CliRunner
from PIL import Image

import workers.cli_results  # noqa: F401  registers `dialer campaign report`
from bench.report_bench import craft_campaign
from dialer import constants as k
from tests.headless_browser import Browser, chromium_binary
from tests.test_report import CHARTS
from workers.cli import cli


if TYPE_CHECKING:
    from pathlib import Path

    import pytest


#: Each chart's box, whether it is rendered, its visible text and the colours its series are drawn
#: in (matplotlib's SVG: bars are ``patch_*`` groups, lines and markers ``line2d_*``); axes, text
#: and backgrounds are greys and left out.
CHARTS_JS = """
[...document.querySelectorAll('section')].map(section => {
  const svg = section.querySelector('svg');
  const box = svg.getBoundingClientRect();
  const painted = [...svg.querySelectorAll('g[id^="patch_"] path, g[id^="line2d_"] path, g[id^="line2d_"] use')];
  const colours = new Set(painted.flatMap(e => [getComputedStyle(e).fill, getComputedStyle(e).stroke]));
  return {
    id: section.id,
    heading: section.querySelector('h2').innerText,
    x: box.left + window.scrollX, y: box.top + window.scrollY, width: box.width, height: box.height,
    visible: svg.checkVisibility({opacityProperty: true, visibilityProperty: true}),
    texts: [...svg.querySelectorAll('text')].filter(t => t.checkVisibility()).map(t => t.textContent.trim()),
    colours: [...colours].filter(c => /^rgb\\(/.test(c)),
  };
})
"""
#: A series counts as seen when this many pixels carry its colour (a 1.5 px line across a chart is
#: hundreds; legend swatches alone stay well under it).
SEEN_PIXELS = 150


def _rgb(css: str) -> tuple[int, int, int]:
    red, green, blue = (int(part) for part in css.removeprefix('rgb(').removesuffix(')').split(','))
    return red, green, blue


def _pixels_of(png: bytes, colour: tuple[int, int, int], tolerance: int = 6) -> int:
    image = Image.open(io.BytesIO(png)).convert('RGB')
    return sum(
        count
        for count, pixel in image.getcolors(maxcolors=image.width * image.height) or []
        if all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))
    )


async def _look_at(binary: str, path: Path, tmp_path: Path) -> dict[str, Any]:
    """Opens the file and gathers what the assertions look at, then closes the browser."""
    async with Browser(binary, tmp_path) as browser:
        await browser.open(path.as_uri())
        state = await browser.evaluate('document.readyState')
        title = await browser.evaluate('document.title')
        heading = await browser.evaluate("document.querySelector('h1').innerText")
        page_width = await browser.evaluate('document.documentElement.clientWidth')
        charts = await browser.evaluate(CHARTS_JS)
        seen: dict[str, dict[str, int]] = {}
        for chart in charts:
            png = await browser.screenshot(chart['x'], chart['y'], chart['width'], chart['height'])
            colours = {c: _pixels_of(png, _rgb(c)) for c in chart['colours'] if len(set(_rgb(c))) > 1}
            seen[chart['id']] = colours | {'white': _pixels_of(png, (255, 255, 255), tolerance=0)}
        return {
            'state': state,
            'title': title,
            'heading': heading,
            'page_width': page_width,
            'charts': charts,
            'seen': seen,
            'problems': browser.problems(),
            'requested': browser.requested(),
        }


def test_the_report_opens_in_a_headless_browser_with_every_chart_drawn_and_nothing_fetched(
    sync_redis: Any, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = chromium_binary()

    async def craft() -> None:
        client = aredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            await craft_campaign(client, 'spring', 300)
        finally:
            await client.aclose()

    asyncio.run(craft())
    monkeypatch.setenv('DIALER_REDIS_URL', redis_url)
    output = tmp_path / 'report.html'
    result = CliRunner().invoke(cli, ['campaign', 'report', 'spring', '--output', str(output)])
    assert result.exit_code == 0, result.output

    page = asyncio.run(_look_at(binary, output, tmp_path))

    assert page['problems'] == []
    assert page['requested'] == [output.as_uri()], 'the page is the only thing loaded'
    assert page['state'] == 'complete'
    assert page['title'] == page['heading'] == 'Campaign spring'
    charts = {chart['id']: chart for chart in page['charts']}
    assert set(charts) == CHARTS
    for chart in charts.values():
        assert chart['visible'], chart['id']
        assert chart['heading'], f'{chart["id"]} has no visible title'
        assert chart['width'] > 200, chart['id']
        assert chart['height'] > 100, chart['id']
        assert chart['x'] + chart['width'] <= page['page_width'], f'{chart["id"]} wider than the page'
        assert chart['colours'], f'{chart["id"]} draws no series'
        seen = page['seen'][chart['id']]
        assert seen.pop('white') < chart['width'] * chart['height'] * 0.97, f'{chart["id"]} is blank'
        hidden = {colour: n for colour, n in seen.items() if n < SEEN_PIXELS}
        assert not hidden, f'{chart["id"]}: series drawn but not seen (pixels per colour): {hidden}'
    funnel = _funnel_numbers(sync_redis)
    for stage, count in funnel.items():
        assert any(text.startswith(f'{count:,} (') for text in charts['funnel']['texts']), (stage, count)
    assert set(funnel) <= set(charts['funnel']['texts'])


def _funnel_numbers(sync_redis: Any) -> dict[str, int]:
    """The funnel as the records give it: loaded, dialled, answered, and each contact's last disposition."""
    progress = [json.loads(raw) for raw in sync_redis.hvals(k.campaign_progress('spring'))]
    by_contact: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for field, raw in sync_redis.hgetall(k.campaign_attempts('spring')).items():
        number, _, n = field.rpartition(':')
        by_contact[number].append((int(n), json.loads(raw)))
    dispositions = Counter(
        next(record['dsp'] for _, record in sorted(attempts, key=lambda a: -a[0]) if record.get('dsp'))
        for attempts in by_contact.values()
        if any(record.get('dsp') for _, record in attempts)
    )
    return {
        'loaded': sync_redis.hlen(k.campaign_contacts('spring')),
        'dialled': len(by_contact),
        'answered': sum(1 for p in progress if p['o'] in {'answered', 'voicemail'}),
        **dispositions,
    }


def test_the_browser_check_sees_an_external_fetch_and_a_console_error(tmp_path: Path) -> None:
    binary = chromium_binary()
    page = tmp_path / 'leaky.html'
    page.write_text(
        '<!DOCTYPE html><html><head><title>leaky</title>'
        '<script src="http://charts.example.invalid/plot.js"></script></head>'
        '<body><script>console.error("chart failed")</script></body></html>',
        encoding='utf-8',
    )

    async def look() -> tuple[list[str], list[str]]:
        async with Browser(binary, tmp_path) as browser:
            await browser.open(page.as_uri())
            return browser.problems(), browser.requested()

    problems, requested = asyncio.run(look())

    assert requested == [page.as_uri(), 'http://charts.example.invalid/plot.js']
    assert any(p.startswith('failed request:') for p in problems), problems
    assert "console.error: ['chart failed']" in problems
