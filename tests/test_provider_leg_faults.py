"""Direct-mode phone legs under faults: workers SIGKILLed between the two creates, status callbacks lost
or forged, the provider's 429. Real processes (CLI, workers, ``dialer webhooks``), the simulator over HTTP."""

from __future__ import annotations

import contextlib
import json
import signal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
import pytest

from dialer import constants as k
from simulator.testing import free_port, running_simulator
from tests.direct_providers import (
    DIRECT_PROVIDERS,
    SETUPS,
    answer_urls_served,
    provider_records,
    wait_for_answers,
)
from tests.fleet_helpers import (
    FAST_ENV,
    FAST_SIMULATOR,
    creates_per_attempt,
    read_export,
    wait_for,
    write_campaign_file,
    write_contacts,
)
from tests.test_provider_trunks_end_to_end import write_provider_trunk
from workers.fleet import LocalFleet


if TYPE_CHECKING:
    from pathlib import Path

    import redis as redis_sync


pytestmark = pytest.mark.slow


def direct_trunk(tmp_path: Path, kind: str, concurrent: int, cps: float, **fields: str) -> Path:
    return write_provider_trunk(
        tmp_path / 'trunks.toml', kind, concurrent, cps, mode='"direct"', **SETUPS[kind].trunk_fields, **fields
    )


def direct_fleet(tmp_path: Path, kind: str, redis_url: str, sim_url: str, trunks: Path, **env: str) -> LocalFleet:
    full = {**FAST_ENV, **SETUPS[kind].env(sim_url), **env}
    return LocalFleet(redis_url, sim_url, trunks, full, log_dir=tmp_path)


def accounts(kind: str) -> dict[str, dict[str, str]]:
    return {kind: SETUPS[kind].account}


def assert_one_call_and_one_leg_per_attempt(
    kind: str, records: list[dict[str, Any]], legs: list[dict[str, Any]], rows: list[dict[str, str]]
) -> None:
    """One Ultravox call and one phone leg per attempt, and every contact ends as its last leg went."""
    assert max(creates_per_attempt(records).values()) == 1, 'one Ultravox call per attempt'
    per_attempt = creates_per_attempt([{'metadata': {'attempt_id': leg['attempt_id']}} for leg in legs])
    assert max(per_attempt.values()) == 1, 'one phone leg per attempt'
    assert set(per_attempt) == set(creates_per_attempt(records)), 'every Ultravox call got its phone leg'
    last: dict[str, dict[str, Any]] = {}
    for leg in sorted(legs, key=lambda leg: int(leg['attempt_id'].rsplit(':', 1)[1])):
        last[leg['to']] = leg
    for row in rows:
        assert row['final_outcome'] == SETUPS[kind].outcomes[last[row['phone']]['outcome']], (row, last[row['phone']])
        assert int(row['attempts']) == sum(1 for leg in legs if leg['to'] == row['phone'])


@pytest.mark.parametrize('kind', DIRECT_PROVIDERS)
def test_workers_sigkilled_while_the_provider_create_is_in_flight_never_place_a_second_leg(
    tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis, kind: str
) -> None:
    contacts = 6
    write_contacts(tmp_path / 'contacts.csv', contacts)
    hook_port = free_port()
    trunks = direct_trunk(tmp_path, kind, contacts, 20, **SETUPS[kind].hook_fields(hook_port))
    # every provider create answers 60 s late: the leg exists at the provider, the worker never hears of it
    with running_simulator(**FAST_SIMULATOR, provider_accounts=accounts(kind), provider_create_delay=60) as sim:
        # the trackers look a "placing" leg up only after 20 s: every leg is still "placing" (in flight)
        # when the workers die, however slowly the busy machine gets all six creates to the provider
        fleet = direct_fleet(tmp_path, kind, redis_url, sim.base_url, trunks, DIALER_AMBIGUOUS_CREATE_DELAY='20')
        campaign = write_campaign_file(tmp_path / 'campaign.toml', 'crash', f'{kind}-numbers')
        wait_for_answers(SETUPS[kind], campaign)
        fleet.cli('campaign', 'load', str(tmp_path / 'contacts.csv'), '--campaign-file', str(campaign))
        served = contextlib.ExitStack()  # `dialer webhooks` outlives the SIGKILLed workers
        served.enter_context(answer_urls_served(fleet, SETUPS[kind], hook_port))
        first = [fleet.start_worker(), fleet.start_worker()]
        try:
            wait_for(lambda: sim.stats()['faults'].get('provider_slow', 0) >= contacts, 60, 'every leg in flight')
            for worker in first:
                fleet.stop(worker, signal.SIGKILL)
            placing = [json.loads(raw) for raw in sync_redis.hvals(k.campaign_attempts('crash'))]
            assert sum(1 for record in placing if (record.get('leg') or {}).get('st') == 'placing') == contacts
            sim.configure(provider_create_delay=0)
            fleet.start_worker()
            fleet.start_worker()
            fleet.wait_until_finished('crash', timeout=120)
        finally:
            fleet.stop_all()
            served.close()
        records, legs = sim.records(), provider_records(sim, kind)

    fleet.cli('campaign', 'export', 'crash', '--output', str(tmp_path / 'results.csv'))
    rows = read_export(tmp_path / 'results.csv')
    assert len(rows) == contacts
    assert_one_call_and_one_leg_per_attempt(kind, records, legs, rows)
    first_legs = {leg['to']: leg['sid'] for leg in legs if leg['attempt_id'].endswith(':1')}
    for row in rows:  # the lookup found and recorded each leg that was in flight when its worker died
        assert row['provider_call_ids'].split(';')[0] == first_legs[row['phone']]


def post_callback(
    kind: str, url: str, leg_id: str, *, good: bool, signed: bool = True, signed_for: str | None = None
) -> httpx.Response:
    """A status callback about ``leg_id`` posted to ``url`` (signed as the provider would for ``signed_for``)."""
    headers, body = SETUPS[kind].callback(signed_for or url, leg_id, good)
    if not signed:
        headers = {key: value for key, value in headers.items() if key.lower() == 'content-type'}
    return httpx.post(url, content=body, headers=headers, timeout=10)


@pytest.mark.parametrize('kind', DIRECT_PROVIDERS)
def test_signed_status_callbacks_are_followed_a_lost_one_is_caught_by_polling_and_a_forged_one_is_refused(
    tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis, kind: str
) -> None:
    contacts = 12
    write_contacts(tmp_path / 'contacts.csv', contacts)
    hook_port = free_port()
    trunks = direct_trunk(tmp_path, kind, 4, 20, callback_url=f'"http://127.0.0.1:{hook_port}"')
    long_call = '+12122000000'
    simulator = {
        **FAST_SIMULATOR,
        'provider_accounts': accounts(kind),
        'provider_callback_loss_rate': 0.5,
        'forced_outcomes': {long_call: ['answered']},
    }
    # polling is the slow fallback here (1 s), the callbacks the fast path
    with running_simulator(**simulator) as sim:
        fleet = direct_fleet(
            tmp_path, kind, redis_url, sim.base_url, trunks, DIALER_POLL_INTERVAL='1',
            DIALER_WEBHOOK_SECRETS=json.dumps(['whsec-provider-0123456789']),
        )  # fmt: skip
        hooks = fleet.start_webhooks(hook_port)
        campaign = wait_for_answers(
            SETUPS[kind], write_campaign_file(tmp_path / 'campaign.toml', 'hooks', f'{kind}-numbers')
        )
        fleet.cli('campaign', 'load', str(tmp_path / 'contacts.csv'), '--campaign-file', str(campaign))
        try:
            fleet.start_worker()
            fleet.start_worker()
            fleet.wait_until_finished('hooks', timeout=180)
        finally:
            fleet.stop_all()
        stats, records, legs = sim.stats(), sim.records(), provider_records(sim, kind)

        # A forged callback about a followed leg: set one up (its tracking entry is far off, no worker runs).
        attempt_id, call_id = f'hooks:{long_call}:9', '00000000-1111-2222-3333-444444444444'
        member = f'{attempt_id}|{call_id}|leg'
        leg_id = legs[0]['sid']
        record = {'st': 'live', 'call': call_id, 'leg': {'p': kind, 'st': 'placed', 'id': leg_id}}
        sync_redis.hset(k.campaign_attempts('hooks'), f'{long_call}:9', json.dumps(record))
        later = 10**13  # not due for centuries: only a callback taken makes it due
        sync_redis.zadd(k.TRACKING, {member: later})
        url = f'http://127.0.0.1:{hook_port}/webhooks/{kind}?' + urlencode({'a': attempt_id, 'c': call_id})
        other = f'http://127.0.0.1:{hook_port}/webhooks/{kind}?' + urlencode(
            {'a': f'hooks:{long_call}:8', 'c': call_id}
        )
        try:
            assert post_callback(kind, url, leg_id, good=False).status_code == 401
            assert post_callback(kind, url, leg_id, good=True, signed=False).status_code == 401
            # a callback signed for another attempt, replayed to this attempt's URL
            assert post_callback(kind, url, leg_id, good=True, signed_for=other).status_code == 401
            assert sync_redis.zscore(k.TRACKING, member) == later, 'a refused callback moves nothing'
            assert json.loads(sync_redis.hget(k.campaign_attempts('hooks'), f'{long_call}:9')) == record
            # the same callback signed with the account's credential is taken (the leg is polled now)
            assert post_callback(kind, url, leg_id, good=True).status_code == 200
            now_ms = int(sync_redis.time()[0]) * 1000 + 1000
            assert sync_redis.zscore(k.TRACKING, member) <= now_ms, 'due now'
        finally:
            hooks.terminate()
            hooks.wait(timeout=30)

    assert stats['webhooks'].get(f'{kind}_callbacks_200', 0) >= 1, 'callbacks arrived and were taken'
    assert stats['webhooks'].get(f'{kind}_callbacks_401', 0) == 0, 'every callback of the simulator verified'
    assert stats['faults'].get(f'{kind}_callback_lost', 0) >= 1, 'some callbacks were lost'
    fleet.cli('campaign', 'export', 'hooks', '--output', str(tmp_path / 'results.csv'))
    rows = read_export(tmp_path / 'results.csv')
    assert len(rows) == contacts
    assert_one_call_and_one_leg_per_attempt(kind, records, legs, rows)


@pytest.mark.parametrize('kind', DIRECT_PROVIDERS)
def test_a_provider_429_holds_the_trunk_and_places_the_leg_again_without_spending_the_attempt(
    tmp_path: Path, redis_url: str, sync_redis: redis_sync.Redis, kind: str
) -> None:
    contacts = 8
    write_contacts(tmp_path / 'contacts.csv', contacts)
    # the trunk claims 10 calls/s, the provider account takes 1: second tries are refused with 429 (two
    # at a time, so a held leg waits a few seconds at most, well inside its Ultravox call's joinTimeout)
    hook_port = free_port()
    trunks = direct_trunk(tmp_path, kind, 2, 10, **SETUPS[kind].hook_fields(hook_port))
    # slower simulated time, so the Ultravox calls keep waiting (joinTimeout 600 s) through the holds
    simulator = {**FAST_SIMULATOR, 'time_scale': 0.01, 'talk_min': 10, 'talk_max': 60}
    with running_simulator(**simulator, provider_accounts=accounts(kind), provider_calls_per_second=1) as sim:
        fleet = direct_fleet(tmp_path, kind, redis_url, sim.base_url, trunks)
        campaign = write_campaign_file(tmp_path / 'campaign.toml', 'busy', f'{kind}-numbers', max_attempts=1)
        campaign.write_text(campaign.read_text().replace('join_timeout = 30', 'join_timeout = 600'))
        fleet.cli('campaign', 'load', str(tmp_path / 'contacts.csv'), '--campaign-file', str(campaign))
        with answer_urls_served(fleet, SETUPS[kind], hook_port):
            fleet.start_worker()
            fleet.start_worker()
            try:
                fleet.wait_until_finished('busy', timeout=180)
            finally:
                fleet.stop_all()
        stats, records, legs = sim.stats(), sim.records(), provider_records(sim, kind)

    assert stats['rejected'].get(f'{kind}_429', 0) >= 1, 'the 429 path was exercised'
    fleet.cli('campaign', 'export', 'busy', '--output', str(tmp_path / 'results.csv'))
    rows = read_export(tmp_path / 'results.csv')
    assert len(rows) == contacts
    assert all(row['attempts'] == '1' for row in rows), 'a 429 spent no attempt'
    assert_one_call_and_one_leg_per_attempt(kind, records, legs, rows)
