"""A real headless Chromium with networking disabled, driven over the DevTools protocol, for tests.

What it relies on:
- ``--remote-debugging-port=0`` makes Chromium pick a free port and write it, with the browser's
  websocket path, to ``DevToolsActivePort`` in its ``--user-data-dir`` (line 1 the port, line 2 the
  path): no port race with other tests.
- The DevTools protocol (https://chromedevtools.github.io/devtools-protocol/): JSON messages with an
  ``id`` answered by a message with the same ``id``; events carry ``method``. ``Target.attachToTarget``
  with ``flatten: true`` gives a ``sessionId`` that page commands and events carry. Used domains:
  ``Runtime`` (``consoleAPICalled``, ``exceptionThrown``, ``evaluate``), ``Log`` (``entryAdded``: the
  browser's own errors such as a blocked resource), ``Network`` (``requestWillBeSent``,
  ``loadingFailed``), ``Page`` (``navigate``, ``loadEventFired``, ``captureScreenshot``) and
  ``Emulation.setDeviceMetricsOverride`` (a fixed 1280 px wide viewport at scale 1).
- ``--host-resolver-rules="MAP * ~NOTFOUND"`` fails every name lookup and ``--proxy-server`` points at
  a closed loopback port, so a page that reaches for the network gets a failed request, never a
  public host.
- The ``websockets`` client (``websockets.asyncio.client.connect``; installed with
  ``uvicorn[standard]``): ``proxy=None`` so a proxy from the environment is not used for loopback,
  ``max_size=None`` for screenshots.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any, Self

import pytest
from websockets.asyncio.client import ClientConnection, connect


if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType


NAMES = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')
#: Hang guards only: every wait below ends as soon as its condition holds.
START_DEADLINE = 60.0
COMMAND_DEADLINE = 60.0


def chromium_binary() -> str:
    """The browser's path: CI must have it, elsewhere the test is skipped with the reason."""
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get('CI') == 'true':
        pytest.fail("chromium is required in CI (install Debian's chromium package)")
    pytest.skip('no headless browser installed (apt-get install chromium)')


def _start(binary: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Starts Chromium; returns the process and the browser's DevTools websocket URL."""
    profile = tmp_path / 'chromium-profile'
    profile.mkdir()
    log = (tmp_path / 'chromium.log').open('wb')
    process = subprocess.Popen(
        [
            binary,
            '--headless=new',
            '--no-sandbox',  # tests run as root in containers, where the sandbox cannot start
            '--disable-gpu',
            '--disable-dev-shm-usage',
            '--no-first-run',
            '--no-default-browser-check',
            '--disable-extensions',
            '--disable-background-networking',
            '--disable-component-update',
            '--disable-sync',
            '--host-resolver-rules=MAP * ~NOTFOUND',
            '--proxy-server=http://127.0.0.1:9',  # the discard port: nothing listens
            f'--user-data-dir={profile}',
            '--remote-debugging-port=0',
            'about:blank',
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its renderer and helpers share the group, stopped together
    )
    log.close()
    active = profile / 'DevToolsActivePort'
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        lines = active.read_text(encoding='utf-8').split('\n') if active.exists() else []
        if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].strip():
            return process, f'ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}'
        time.sleep(0.05)
    _stop(process)
    tail = (tmp_path / 'chromium.log').read_text(encoding='utf-8', errors='replace')[-2000:]
    pytest.fail(f'chromium did not open its DevTools port (exit {process.returncode}):\n{tail}')


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Browser:
    """One headless Chromium and one page (tab), with every event the page raised kept in ``events``.

    ``binary`` comes from ``chromium_binary()``, called first thing in a test so that a missing
    browser skips (or fails in CI) before any other set-up."""

    def __init__(self, binary: str, tmp_path: Path) -> None:
        self.binary, self.tmp_path = binary, tmp_path
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._arrived = asyncio.Event()
        self._session = ''

    async def __aenter__(self) -> Self:
        self._process, url = _start(self.binary, self.tmp_path)
        try:
            self._ws: ClientConnection = await connect(url, proxy=None, max_size=None, compression=None)
            self._reader = asyncio.create_task(self._read())
            target = await self.send('Target.createTarget', {'url': 'about:blank'}, session=False)
            attached = await self.send(
                'Target.attachToTarget', {'targetId': target['targetId'], 'flatten': True}, session=False
            )
            self._session = attached['sessionId']
            for domain in ('Runtime', 'Log', 'Network', 'Page'):
                await self.send(f'{domain}.enable')
            await self.send(
                'Emulation.setDeviceMetricsOverride',
                {'width': 1280, 'height': 900, 'deviceScaleFactor': 1, 'mobile': False},
            )
        except BaseException:
            _stop(self._process)
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._reader.cancel()
        with contextlib.suppress(Exception):
            await self._ws.close()
        _stop(self._process)

    async def _read(self) -> None:
        async for raw in self._ws:
            message = json.loads(raw)
            future = self._pending.pop(message['id'], None) if 'id' in message else None
            if future is not None and not future.done():
                future.set_result(message)
            elif 'method' in message and message.get('sessionId') == self._session:
                self.events.append(message)
                self._arrived.set()
        for future in self._pending.values():  # the browser went away: fail the waiters at once
            future.set_exception(ConnectionError('chromium closed its DevTools connection'))

    async def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> Any:
        """One DevTools command; its ``result`` (an error answer fails the test with the message)."""
        ident = next(self._ids)
        message: dict[str, Any] = {'id': ident, 'method': method, 'params': params or {}}
        if session:
            message['sessionId'] = self._session
        self._pending[ident] = asyncio.get_running_loop().create_future()
        await self._ws.send(json.dumps(message))
        answer = await asyncio.wait_for(self._pending[ident], COMMAND_DEADLINE)
        if 'error' in answer:
            pytest.fail(f'{method}: {answer["error"]}')
        return answer['result']

    async def wait_for_event(self, method: str, since: int = 0) -> dict[str, Any]:
        """The first ``method`` event at index ``since`` or later, waiting for it to arrive."""
        async with asyncio.timeout(COMMAND_DEADLINE):
            while True:
                self._arrived.clear()
                found = next((e for e in self.events[since:] if e['method'] == method), None)
                if found is not None:
                    return found
                await self._arrived.wait()

    async def open(self, url: str) -> None:
        """Navigates the page to ``url`` and waits for its load event (every resource settled)."""
        since = len(self.events)
        navigated = await self.send('Page.navigate', {'url': url})
        if navigated.get('errorText'):
            pytest.fail(f'{url}: {navigated["errorText"]}')
        await self.wait_for_event('Page.loadEventFired', since)

    async def evaluate(self, expression: str) -> Any:
        """A JavaScript expression's value (returned by value, so it must be JSON-able)."""
        answer = await self.send('Runtime.evaluate', {'expression': expression, 'returnByValue': True})
        if 'exceptionDetails' in answer:
            pytest.fail(f'{expression[:80]}…: {answer["exceptionDetails"]}')
        return answer['result'].get('value')

    async def screenshot(self, x: float, y: float, width: float, height: float) -> bytes:
        """A PNG of that rectangle of the page (page coordinates, even below the viewport)."""
        clip = {'x': x, 'y': y, 'width': width, 'height': height, 'scale': 1}
        shot = await self.send('Page.captureScreenshot', {'format': 'png', 'clip': clip, 'captureBeyondViewport': True})
        return base64.b64decode(shot['data'])

    def problems(self) -> list[str]:
        """What a user's DevTools console would show in red: console errors, uncaught exceptions,
        browser log errors and warnings (a blocked or missing resource), failed requests."""
        found: list[str] = []
        for event in self.events:
            method, params = event['method'], event.get('params', {})
            if method == 'Runtime.consoleAPICalled' and params.get('type') in {'error', 'warning', 'assert'}:
                found.append(f'console.{params["type"]}: {[a.get("value") for a in params.get("args", [])]}')
            elif method == 'Runtime.exceptionThrown':
                found.append(f'exception: {params["exceptionDetails"].get("text")}')
            elif method == 'Log.entryAdded' and params['entry'].get('level') in {'error', 'warning'}:
                entry = params['entry']
                found.append(f'log {entry["level"]}: {entry.get("text")} {entry.get("url", "")}'.rstrip())
            elif method == 'Network.loadingFailed':
                found.append(f'failed request: {params.get("errorText")} ({params.get("type")})')
        return found

    def requested(self) -> list[str]:
        """Every URL the page asked for, in order (the page itself included)."""
        return [e['params']['request']['url'] for e in self.events if e['method'] == 'Network.requestWillBeSent']
