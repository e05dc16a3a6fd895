"""Steering a campaign from the command line: ``update`` reschedules what it changes, ``show`` tells
what is configured, and the option parsing shared by ``load`` and ``update``.

Every test drives the real ``dialer`` command (click's runner) against a real Redis. Time is set
with the dialer's clock offset, so every due instant is exact, not a margin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aredis

import workers.cli_campaign
import workers.cli_tools  # noqa: F401  registers `dialer trunks` and `dialer dnc`
from dialer import constants as k
from dialer.models import ContactStatus
from dialer.scripts import Scripts, SlotLimits
from tests.cli_helpers import ALL_DAY, MONDAY_0700_NEW_YORK, cli_invoker, ms, set_clock


if TYPE_CHECKING:
    from pathlib import Path

    import redis as redis_sync


TRUNKS = (
    '[trunks.carrier-a]\nhost = "sip.a.example"\nfrom = "+14155550100"\nmax_concurrent = 50\ncalls_per_second = 5\n'
)


@pytest.fixture
def dialer(tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis):
    """``dialer(*args)``: run the CLI against the test Redis and a one-trunk trunks file."""
    return cli_invoker(tmp_path, redis_url, TRUNKS)


def write_contacts(path: Path, count: int, first: int = 0) -> Path:
    # +1 212: New York numbers, so each contact has exactly one zone
    rows = [f'+1212{2000000 + i:07d},Person {i}' for i in range(first, first + count)]
    path.write_text('phone,name\n' + '\n'.join(rows) + '\n', encoding='utf-8')
    return path


def load(dialer, tmp_path: Path, count: int, *options: str) -> None:
    csv = write_contacts(tmp_path / 'contacts.csv', count)
    args = ['--campaign', 'spring', '--agent-id', 'agent-1', '--trunk', 'carrier-a', *options]
    dialer('campaign', 'load', str(csv), *args)


def due_scores(sync_redis: redis_sync.Redis) -> dict[str, int]:
    return {number: int(score) for number, score in sync_redis.zrange(k.campaign_due('spring'), 0, -1, withscores=True)}


def progress(sync_redis: redis_sync.Redis, number: str) -> dict[str, Any]:
    return json.loads(sync_redis.hget(k.campaign_progress('spring'), number) or '{}')


def end_attempts(redis_url: str, count: int, outcome: str, retry_in_ms: int) -> list[str]:
    """Claim ``count`` contacts and end their first attempt with ``outcome``, the way workers do."""

    async def go() -> list[str]:
        client = aredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            scripts = Scripts(client)
            limits = SlotLimits(trunk=50, account=0)
            claimed = await scripts.claim(
                'carrier-a', ['spring'], limits, unsent_cap=1000, batch=count, claim_lease_ms=60_000
            )
            numbers = []
            for job_ref in claimed.job_refs:
                begun = await scripts.begin(job_ref, 'carrier-a', limits, 60_000)
                assert begun.verdict == 'go'
                attempt_id = job_ref.split('#', 1)[0]
                await scripts.finish(
                    attempt_id,
                    'carrier-a',
                    outcome,
                    {'r': 'test'},
                    retry_at_ms=begun.now_ms + retry_in_ms,
                    billing_final=True,
                    billing_poll_ms=0,
                    job_ref=job_ref,
                )
                numbers.append(k.parse_attempt_id(attempt_id)[1])
            return numbers
        finally:
            await client.aclose()

    return asyncio.run(go())


def claim_one(redis_url: str) -> str:
    """Claim one contact and leave it being dialled."""

    async def go() -> str:
        client = aredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            limits = SlotLimits(trunk=50, account=0)
            claimed = await Scripts(client).claim(
                'carrier-a', ['spring'], limits, unsent_cap=1000, batch=1, claim_lease_ms=60_000
            )
            return k.parse_attempt_id(claimed.job_refs[0].split('#', 1)[0])[1]
        finally:
            await client.aclose()

    return asyncio.run(go())


# ------------------------------------------------------------------------------------------- update


@pytest.mark.parametrize(
    ('hours', 'opens'),
    [
        ('08:00-20:00', MONDAY_0700_NEW_YORK + timedelta(hours=1)),  # widened: earlier
        ('10:00-20:00', MONDAY_0700_NEW_YORK + timedelta(hours=3)),  # narrowed: later
        ('07:00-20:00', MONDAY_0700_NEW_YORK),  # now open: due at once
    ],
)
def test_update_hours_moves_every_waiting_contact_to_the_new_opening(
    dialer, tmp_path: Path, sync_redis, hours: str, opens: datetime
) -> None:
    set_clock(sync_redis, MONDAY_0700_NEW_YORK)
    load(dialer, tmp_path, 30, '--hours', '09:00-20:00', '--legal-bound')
    assert set(due_scores(sync_redis).values()) == {ms(MONDAY_0700_NEW_YORK + timedelta(hours=2))}

    result = dialer('campaign', 'update', 'spring', '--hours', hours, *(['--no-legal-bound'] if hours < '08' else []))

    assert 'updated: hours' in result.output
    scores = set(due_scores(sync_redis).values())
    if opens == MONDAY_0700_NEW_YORK:
        # "now" moved on by the test's own run time: due at the update's instant, at or after 12:00
        assert len(scores) == 1
        assert ms(opens) <= scores.pop() < ms(opens + timedelta(minutes=5))
    else:
        assert scores == {ms(opens)}
    assert len(due_scores(sync_redis)) == 30, 'nobody lost, nobody added'


def test_update_days_moves_contacts_to_the_next_allowed_day(dialer, tmp_path: Path, sync_redis) -> None:
    set_clock(sync_redis, MONDAY_0700_NEW_YORK)
    load(dialer, tmp_path, 5, '--hours', '09:00-20:00')
    dialer('campaign', 'update', 'spring', '--days', 'wed-fri')
    wednesday_0900 = MONDAY_0700_NEW_YORK + timedelta(days=2, hours=2)
    assert set(due_scores(sync_redis).values()) == {ms(wednesday_0900)}


def test_update_retry_delay_moves_retries_to_end_plus_the_new_delay(
    dialer, tmp_path: Path, sync_redis, redis_url: str
) -> None:
    load(dialer, tmp_path, 10, *ALL_DAY, '--max-attempts', '3')
    retrying = end_attempts(redis_url, 4, 'no_answer', retry_in_ms=3_600_000)
    pending_before = {n: s for n, s in due_scores(sync_redis).items() if n not in retrying}

    result = dialer('campaign', 'update', 'spring', '--retry-delay', 'no_answer=10m')

    assert '4 rescheduled' in result.output
    scores = due_scores(sync_redis)
    for number in retrying:
        ended = json.loads(sync_redis.hget(k.campaign_attempts('spring'), f'{number}:1'))['eo']
        assert scores[number] == ended + 600_000
    assert {n: s for n, s in scores.items() if n not in retrying} == pending_before
    config = json.loads(sync_redis.hget(k.campaign('spring'), 'config'))
    assert config['retry']['delays'] == {
        'no_answer': 600.0, 'busy': 600.0, 'failed': 900.0, 'rejected': 3600.0, 'voicemail': 10800.0
    }  # fmt: skip


def test_lowering_max_attempts_closes_waiting_retries_with_their_last_outcome(
    dialer, tmp_path: Path, sync_redis, redis_url: str
) -> None:
    load(dialer, tmp_path, 10, *ALL_DAY, '--max-attempts', '3')
    retrying = end_attempts(redis_url, 4, 'busy', retry_in_ms=3_600_000)
    dialling = claim_one(redis_url)

    result = dialer('campaign', 'update', 'spring', '--max-attempts', '1')

    assert '4 closed' in result.output
    campaign = sync_redis.hgetall(k.campaign('spring'))
    assert int(campaign['o:busy']) == 4
    assert int(campaign['n:done']) == 4
    assert int(campaign.get('n:retry_wait', 0)) == 0
    for number in retrying:
        assert progress(sync_redis, number)['s'] == ContactStatus.DONE
        assert progress(sync_redis, number)['o'] == 'busy'
    assert progress(sync_redis, dialling)['s'] == ContactStatus.DIALING, 'a contact being dialled is not touched'
    assert len(due_scores(sync_redis)) == 10 - 4 - 1
    config = json.loads(campaign['config'])
    assert config['retry']['max_attempts'] == 1
    assert config['retry']['retry_on'] == [], 'one attempt means no retries'


def test_an_outcome_no_longer_retried_closes_its_waiting_contacts(
    dialer, tmp_path: Path, sync_redis, redis_url: str
) -> None:
    load(dialer, tmp_path, 10, *ALL_DAY)
    end_attempts(redis_url, 3, 'no_answer', retry_in_ms=3_600_000)
    result = dialer('campaign', 'update', 'spring', '--retry-on', 'busy,failed')
    assert '3 closed' in result.output
    assert int(sync_redis.hget(k.campaign('spring'), 'o:no_answer')) == 3


def test_update_without_an_option_is_an_error_not_updated(dialer, tmp_path: Path, sync_redis) -> None:
    load(dialer, tmp_path, 3, *ALL_DAY)
    before = sync_redis.hget(k.campaign('spring'), 'config')
    result = dialer('campaign', 'update', 'spring', expect=2)
    assert 'updated' not in result.output
    assert 'nothing to change' in result.output
    assert sync_redis.hget(k.campaign('spring'), 'config') == before


def test_update_help_shows_no_defaults_it_would_not_apply(dialer) -> None:
    update_help = dialer('campaign', 'update', '--help').output
    load_help = dialer('campaign', 'load', '--help').output
    for default in ('[3]', '[US]', '[09:00-20:00]', '[every day]', '[on]', '[user]', '[no_answer,busy,failed]'):
        assert default not in ' '.join(update_help.split()), default
        assert default in ' '.join(load_help.split()), default


def test_campaign_options_are_all_settable_on_the_command_line(dialer, tmp_path: Path, sync_redis) -> None:
    load(
        dialer, tmp_path, 3, *ALL_DAY,
        '--retry-delay', 'no_answer=1h30m,busy=10m', '--first-speaker', 'agent', '--max-per-24h', '2',
        '--dispositions', 'sold, not_interested,do_not_call',
    )  # fmt: skip
    config = json.loads(sync_redis.hget(k.campaign('spring'), 'config'))
    assert config['dispositions'] == ['sold', 'not_interested', 'do_not_call']
    assert config['first_speaker'] == 'agent'
    assert config['retry']['max_per_24h'] == 2
    assert config['retry']['delays']['no_answer'] == 5400
    assert config['retry']['delays']['busy'] == 600

    update = ['--first-speaker', 'user', '--max-per-24h', '3', '--retry-delay', 'failed=2d']
    dialer('campaign', 'update', 'spring', *update)
    config = json.loads(sync_redis.hget(k.campaign('spring'), 'config'))
    assert config['first_speaker'] == 'user'
    assert config['retry']['max_per_24h'] == 3
    assert config['retry']['delays'] == {
        'no_answer': 5400, 'busy': 600, 'failed': 172800, 'rejected': 3600, 'voicemail': 10800
    }  # fmt: skip


@pytest.mark.parametrize('options', [['--max-attempts', '1'], ['--retry-on', 'none'], ['--retry-on', 'NONE']])
def test_a_campaign_without_retries_needs_no_emptied_retry_list(dialer, tmp_path: Path, sync_redis, options) -> None:
    load(dialer, tmp_path, 3, *ALL_DAY, *options)
    config = json.loads(sync_redis.hget(k.campaign('spring'), 'config'))
    assert config['retry']['retry_on'] == []


@pytest.mark.parametrize(
    ('value', 'named'),
    [
        ('no_answer', "'no_answer'"),
        ('no_answer=soon', "'soon'"),
        ('answered=1h', "'answered=1h'"),
        ('dnc=1h', "'dnc=1h'"),
        ('busy=10x', "'10x'"),
        ('busy=-5m', "'-5m'"),
    ],
)
def test_a_bad_retry_delay_is_refused_naming_it(dialer, tmp_path: Path, sync_redis, value: str, named: str) -> None:
    csv = write_contacts(tmp_path / 'c.csv', 2)
    args = ['--campaign', 'spring', '--agent-id', 'a', '--trunk', 'carrier-a', '--retry-delay', value]
    result = dialer('campaign', 'load', str(csv), *args, expect=2)
    assert '--retry-delay' in result.output
    assert named in result.output
    assert sync_redis.dbsize() == 0


# --------------------------------------------------------------------------------- counters agree


def plan_columns(output: str) -> tuple[int, int]:
    """(callable now, waiting) summed over the rows of ``campaign plan``'s table."""
    now = waiting = 0
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip('│┃|').split('│')]
        if len(cells) >= 3 and cells[1].isdigit() and cells[2].isdigit():
            now, waiting = now + int(cells[1]), waiting + int(cells[2])
    return now, waiting


def test_status_plan_and_trunks_status_count_the_same_contacts(
    dialer, tmp_path: Path, sync_redis, redis_url: str
) -> None:
    set_clock(sync_redis, MONDAY_0700_NEW_YORK)  # 12:00 in London, 07:00 in New York
    london = [f'+44207946{i:04d}' for i in range(10)]
    csv = tmp_path / 'mixed.csv'
    rows = [f'+1212{2000000 + i:07d}' for i in range(6)] + london
    csv.write_text('phone\n' + '\n'.join(rows) + '\n', encoding='utf-8')
    dialer('campaign', 'load', str(csv), '--campaign', 'spring', '--agent-id', 'a', '--trunk', 'carrier-a',
           '--hours', '09:00-20:00')  # fmt: skip
    end_attempts(redis_url, 3, 'no_answer', retry_in_ms=3_600_000)  # three London retries, an hour away
    claim_one(redis_url)  # one London contact being dialled
    claim_one(redis_url)

    status = json.loads(dialer('campaign', 'status', 'spring', '--json').output)
    trunks = json.loads(dialer('trunks', 'status', '--json').output)
    plan = plan_columns(dialer('campaign', 'plan', 'spring').output)

    # London: 10 - 3 retrying - 2 dialling = 5 due now; waiting: 6 New York + 3 retries
    assert (status['due_now'], status['waiting'], status['in_flight']) == (5, 9, 2)
    assert plan == (5, 9)
    trunk, account = trunks[0], trunks[-1]
    assert (trunk['name'], trunk['due_now'], trunk['waiting'], trunk['in_flight']) == ('carrier-a', 5, 9, 2)
    assert account['in_flight'] == 2, 'the account counts the calls of every trunk, with or without a limit'


def test_the_eta_promises_no_time_while_nothing_is_callable(dialer, tmp_path: Path, sync_redis) -> None:
    set_clock(sync_redis, MONDAY_0700_NEW_YORK)
    load(dialer, tmp_path, 5, '--hours', '09:00-20:00')
    # calls were made in the last minute (e.g. in another window), yet nothing can be dialled before 09:00
    now = int(sync_redis.get(k.CLOCK_OFFSET)) + int(sync_redis.time()[0]) * 1000
    sync_redis.zadd(k.ACCOUNT_RATE_MINUTE, {f'spring:+12122000000:1@{now}': now})
    status = json.loads(dialer('campaign', 'status', 'spring', '--json').output)
    assert status['due_now'] == 0
    assert status['calls_last_minute'] == 1
    assert status['eta_seconds'] is None
    assert status['eta_at'] is None
    text = dialer('campaign', 'status', 'spring').output
    assert 'nothing callable until' in text


def test_status_watch_refreshes_until_interrupted(tmp_path: Path, redis_url: str, sync_redis, dialer) -> None:

    load(dialer, tmp_path, 3, *ALL_DAY)
    env = {**os.environ, 'DIALER_REDIS_URL': redis_url, 'DIALER_LOG_LEVEL': 'warning'}
    out = tmp_path / 'watch.out'
    with out.open('wb') as handle:
        process = subprocess.Popen(
            [sys.executable, '-m', 'workers', 'campaign', 'status', 'spring', '--watch', '--json', '--interval', '0.1'],
            env=env, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            while out.read_bytes().count(b'\n') < 3:  # three refreshes seen
                assert process.poll() is None, out.read_text()
                time.sleep(0.05)
            sync_redis.hset(k.campaign('spring'), 'state', 'paused')
            while b'"paused"' not in out.read_bytes():  # a change shows in a later refresh
                assert process.poll() is None, out.read_text()
                time.sleep(0.05)
        finally:
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=30)
    assert code == 0, out.read_text()
    lines = out.read_text().splitlines()
    assert all(json.loads(line)['name'] == 'spring' for line in lines)
    assert 'Traceback' not in out.read_text()


def test_status_watch_on_a_terminal_redraws_in_place(dialer, tmp_path: Path, redis_url: str, sync_redis) -> None:

    load(dialer, tmp_path, 3, *ALL_DAY)
    env = {**os.environ, 'DIALER_REDIS_URL': redis_url, 'DIALER_LOG_LEVEL': 'warning', 'TERM': 'xterm',
           'COLUMNS': '100', 'LINES': '40'}  # fmt: skip
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, '-m', 'workers', 'campaign', 'status', 'spring', '--watch', '--interval', '0.1'],
        env=env, stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True,
    )  # fmt: skip
    os.close(terminal)
    seen = b''
    try:
        while seen.count(b'Campaign spring') < 3:
            seen += os.read(controller, 65536)
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
        with contextlib.suppress(OSError):
            while chunk := os.read(controller, 65536):
                seen += chunk
        os.close(controller)
    assert code == 0, seen.decode(errors='replace')
    assert b'\x1b[' in seen, 'cursor movement: the table is redrawn in place, not appended'
    assert b'Traceback' not in seen
