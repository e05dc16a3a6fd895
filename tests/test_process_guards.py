"""What protects a process from its surroundings: its health endpoint, secrets masked across live
reloads, a simulator that never shows its secrets, a webhook receiver that slow clients cannot hold."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pydantic import SecretStr

from dialer.logs import _mask_secrets
from dialer.settings import Settings
from simulator.testing import free_port, running_simulator
from tests.fleet_helpers import wait_for, write_trunks
from workers.fleet import DIALER, LocalFleet
from workers.runtime import Runtime
from workers.serving import Health, PortInUseError, start_metrics_server


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_healthz_reports_redis_and_fails_only_when_the_loop_stops_turning() -> None:
    health = Health(stall_after=60)
    port = free_port()
    server = start_metrics_server('127.0.0.1', port, health=health)
    try:
        health.loop_turned(redis_up=True)
        status, body = get(f'http://127.0.0.1:{port}/healthz')
        assert (status, body['status'], body['redis']) == (200, 'ok', True)
        health.loop_turned(redis_up=False)
        status, body = get(f'http://127.0.0.1:{port}/healthz')
        assert (status, body['status'], body['redis']) == (200, 'degraded', False), 'reconnecting is progress'
        health.stall_after = 0.0  # any time since the last turn is now too long
        status, body = get(f'http://127.0.0.1:{port}/healthz')
        assert (status, body['status']) == (503, 'stalled')
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=5) as response:
            assert b'dialer_worker_redis_up 0.0' in response.read()
    finally:
        server.shutdown()


def test_a_taken_port_is_an_error_naming_the_setting_and_the_port() -> None:
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f'DIALER_METRICS_PORT={port}: 127.0.0.1:{port} is already in use'):
            start_metrics_server('127.0.0.1', port)


async def test_a_new_trunk_password_is_masked_in_logs_as_soon_as_the_trunks_file_is_reloaded(
    tmp_path: Path, redis_url: str
) -> None:
    trunks = tmp_path / 'trunks.toml'
    trunks.write_text('[trunks.t]\nhost = "sip.t.example"\nfrom = "+14155550100"\npassword = "old-secret-1"\n'
                      'max_concurrent = 1\ncalls_per_second = 1\n')  # fmt: skip
    rt = Runtime.create(Settings(redis_url=redis_url, trunks_file=trunks, ultravox_api_key=SecretStr('k-123456')))
    try:
        trunks.write_text(trunks.read_text().replace('old-secret-1', 'brand-new-secret-2'))
        wait_for(rt.reload_trunks, 10, 'the reload (the file mtime must change)')
        # the masking processor every log line goes through (dialer.logs.configure_logging)
        event = _mask_secrets(None, 'warning', {'event': 'oops', 'detail': 'carrier said brand-new-secret-2'})
        assert event['detail'] == 'carrier said **redacted**'
    finally:
        await rt.close()


def test_the_simulator_config_endpoint_never_shows_the_api_key_or_webhook_secrets() -> None:
    with running_simulator(api_key='sim-key-s3cret', webhook_secret=['hook-s3cret']) as sim:
        shown = json.dumps(sim.client.get('/_sim/config').json())
        changed = json.dumps(sim.configure(seed=3))
    for text in (shown, changed):
        assert 'sim-key-s3cret' not in text
        assert 'hook-s3cret' not in text


@pytest.fixture
def receiver(tmp_path: Path, redis_url: str):
    port = free_port()
    trunks = write_trunks(tmp_path / 'trunks.toml', 'sip.r.example', {'r': (1, 1.0)})
    fleet = LocalFleet(redis_url, 'http://127.0.0.1:9', trunks)
    env = {
        **fleet.env,
        'DIALER_WEBHOOK_SECRETS': '["whsec-guard-0123456789"]',
        'DIALER_WEBHOOK_HEADER_TIMEOUT': '0.5',
        'DIALER_WEBHOOK_BODY_TIMEOUT': '0.5',
        'DIALER_METRICS_PORT': '0',
    }
    log = (tmp_path / 'webhooks.log').open('wb')
    process = subprocess.Popen([*DIALER, 'webhooks', '--port', str(port)], env=env, stderr=log)

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=2):
                return True
        except OSError:
            return False

    try:
        wait_for(lambda: answers() or process.poll() is not None, 60, 'the receiver')
        assert process.poll() is None, (tmp_path / 'webhooks.log').read_text()
        assert process.poll() is None, (tmp_path / 'webhooks.log').read_text()
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def closed_by_server(sock: socket.socket, trickle: bytes = b'') -> bool:
    """Send ``trickle`` a byte at a time until the server closes the connection; True when it did."""
    sock.settimeout(0.1)
    for i in range(600):  # bounded by the test timeout, not by a margin: the server closes it first
        if trickle:
            try:
                sock.send(trickle[i % len(trickle) : i % len(trickle) + 1])
            except OSError:
                return True
        try:
            if sock.recv(1024) == b'':
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def test_an_idle_connection_is_closed_after_the_header_deadline(receiver: int) -> None:
    with socket.create_connection(('127.0.0.1', receiver)) as sock:
        assert closed_by_server(sock)


def test_headers_trickled_a_byte_at_a_time_are_cut_off(receiver: int) -> None:
    with socket.create_connection(('127.0.0.1', receiver)) as sock:
        assert closed_by_server(sock, b'POST /webhooks/ultravox HTTP/1.1\r\nX-Padding: ' + b'a' * 10_000)


def test_a_body_that_never_finishes_gets_a_408(receiver: int) -> None:
    with socket.create_connection(('127.0.0.1', receiver)) as sock:
        sock.sendall(
            b'POST /webhooks/ultravox HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
            b'Content-Length: 1000\r\n\r\n{"event": '
        )
        sock.settimeout(30)
        answer = sock.recv(1024)
    assert answer.startswith(b'HTTP/1.1 408')


def test_a_process_keeps_its_startup_objects_out_of_later_garbage_collections() -> None:
    # in a process of its own: freezing is process-wide and would reach the whole test session
    script = (
        'import gc, workers.worker, workers.webhooks\n'
        'from workers.serving import freeze_startup_objects\n'
        'before = gc.get_freeze_count()\n'
        'freeze_startup_objects()\n'
        'print(before, gc.get_freeze_count(), len(gc.get_objects(generation=2)))\n'
    )
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=True, timeout=60)
    before, frozen, still_collected = map(int, result.stdout.split())
    assert before == 0
    assert frozen > 20_000  # every module, class and function imported so far
    assert still_collected < frozen / 10
