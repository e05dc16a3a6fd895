"""Calling hours, retries and back-pressure as the dial job applies them, with time controlled through
the dialer's clock (Redis TIME plus the test-only offset), never by sleeping."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from campaigns.loader import load_contacts
from dialer import constants as k
from dialer.models import CampaignConfig
from dialer.settings import Settings
from simulator.testing import running_simulator
from workers.calls import record_end, tracking_member
from workers.dial import dial_attempt
from workers.runtime import Runtime


NEW_YORK = ZoneInfo('America/New_York')
NUMBER = '+12125550123'


@pytest.fixture(scope='module')
def simulator():
    with running_simulator(
        time_scale=0.0005, ring_min=1, ring_max=2, talk_min=10, talk_max=20, billing_delay=0,
        forced_outcomes={NUMBER: ['busy', 'busy', 'busy', 'busy']},
    ) as sim:  # fmt: skip
        yield sim


@pytest.fixture
async def rt(redis, redis_url: str, tmp_path: Path, simulator):
    trunks = tmp_path / 'trunks.toml'
    trunks.write_text(
        '[trunks.t1]\nhost = "sip.t1.example"\nfrom = "+14155550100"\nmax_concurrent = 5\ncalls_per_second = 100\n'
    )
    settings = Settings(
        redis_url=redis_url,
        trunks_file=trunks,
        ultravox_base_url=simulator.base_url,
        ultravox_api_key=SecretStr('key'),
        account_calls_per_second=1000,
        account_calls_per_minute=100_000,
        ambiguous_create_delay=0,
    )
    runtime = Runtime.create(settings)
    yield runtime
    await runtime.close()


async def travel_to(rt: Runtime, when: datetime) -> None:
    """Move the dialer's clock (every Lua script and every policy decision) to ``when``."""
    await rt.redis.delete(k.CLOCK_OFFSET)
    real = await rt.scripts.now_ms()
    await rt.redis.set(k.CLOCK_OFFSET, int(when.timestamp() * 1000) - real)


async def load(rt: Runtime, tmp_path: Path, **config: object) -> CampaignConfig:
    campaign = CampaignConfig(name='hours', trunk='t1', agent_id='6f9a1c3e-8a39-4bb6-9a55-0f3d5d8e2a10', **config)
    csv = tmp_path / 'contacts.csv'
    csv.write_text(f'phone,name,timezone\n{NUMBER},Ann,America/New_York\n')
    await load_contacts(rt.redis, campaign, csv, rejects_path=tmp_path / 'rejects.csv')
    return campaign


async def claim(rt: Runtime) -> list[str]:
    trunk = rt.trunks.get('t1')
    claimed = await rt.scripts.claim(
        't1', ['hours'], rt.slot_limits(trunk), unsent_cap=10, batch=10, claim_lease_ms=rt.claim_lease_ms
    )
    return claimed.job_refs


async def run_attempt(rt: Runtime, job_ref: str) -> str:
    """Dial, then follow the call to its end the way the tracker does."""
    result = await dial_attempt({'runtime': rt}, job_ref)
    if result != 'created':
        return result
    attempt_id = job_ref.split('#', maxsplit=1)[0]
    name, number, attempt = k.parse_attempt_id(attempt_id)
    record = json.loads(await rt.redis.hget(k.campaign_attempts(name), f'{number}:{attempt}'))
    for _ in range(200):
        call = await rt.ultravox.get_call(record['call'])
        if call['ended']:
            await record_end(rt, attempt_id, call, tracking_member(attempt_id, record['call']))
            return 'ended'
        await asyncio.sleep(0.02)
    raise AssertionError('call never ended')


async def progress(rt: Runtime) -> dict:
    return json.loads(await rt.redis.hget(k.campaign_progress('hours'), NUMBER) or '{}')


async def test_a_contact_outside_its_hours_is_not_dialled_until_its_window_opens(rt, tmp_path, simulator) -> None:
    await travel_to(rt, datetime(2026, 11, 23, 7, 30, tzinfo=NEW_YORK))  # a Monday, 07:30 in New York
    await load(rt, tmp_path, hours={'start': '09:00', 'end': '17:00'})
    assert await claim(rt) == []
    await travel_to(rt, datetime(2026, 11, 23, 8, 59, 59, tzinfo=NEW_YORK))
    assert await claim(rt) == []
    await travel_to(rt, datetime(2026, 11, 23, 9, 0, 1, tzinfo=NEW_YORK))
    refs = await claim(rt)
    assert len(refs) == 1
    assert await dial_attempt({'runtime': rt}, refs[0]) == 'created'


async def test_a_contact_whose_window_closes_while_queued_waits_for_the_next_window(rt, tmp_path) -> None:
    await travel_to(rt, datetime(2026, 11, 23, 16, 59, 59, tzinfo=NEW_YORK))
    await load(rt, tmp_path, hours={'start': '09:00', 'end': '17:00', 'days': ['mon', 'tue']})
    refs = await claim(rt)
    await travel_to(rt, datetime(2026, 11, 23, 17, 0, 1, tzinfo=NEW_YORK))
    assert await dial_attempt({'runtime': rt}, refs[0]) == 'outside_hours'
    due = await rt.redis.zscore(k.campaign_due('hours'), NUMBER)
    assert datetime.fromtimestamp(due / 1000, UTC) == datetime(2026, 11, 24, 9, 0, tzinfo=NEW_YORK)
    assert (await progress(rt))['a'] == 0, 'no attempt was spent'
    assert await rt.redis.zcard(k.trunk_slots('t1')) == 0


async def test_busy_is_retried_after_its_delay_and_stops_at_max_attempts(rt, tmp_path, simulator) -> None:
    start = datetime(2026, 11, 23, 10, 0, tzinfo=NEW_YORK)
    await travel_to(rt, start)
    retry = {'retry_on': ['busy'], 'delays': {'busy': 600}, 'max_attempts': 3, 'max_per_24h': 5}
    await load(rt, tmp_path, retry=retry)
    for attempt in (1, 2, 3):
        refs = await claim(rt)
        assert [r.split('#')[0] for r in refs] == [f'hours:{NUMBER}:{attempt}']
        assert await run_attempt(rt, refs[0]) == 'ended'
        assert await claim(rt) == [], 'not before the busy delay'
        due = await rt.redis.zscore(k.campaign_due('hours'), NUMBER)
        if attempt < 3:
            assert due - await rt.scripts.now_ms() > 599_000
            await travel_to(rt, datetime.fromtimestamp(due / 1000 + 1, UTC))
    final = await progress(rt)
    assert (final['s'], final['o'], final['a']) == ('done', 'busy', 3)
    assert await claim(rt) == []
    creates = [r for r in simulator.records() if r['metadata']['campaign'] == 'hours']
    assert len([r for r in creates if r['metadata']['attempt_id'].startswith('hours:')]) >= 3


async def test_a_429_from_ultravox_holds_the_account_and_spends_no_attempt(rt, tmp_path, simulator) -> None:
    await travel_to(rt, datetime(2026, 11, 23, 10, 0, tzinfo=NEW_YORK))
    await load(rt, tmp_path)
    refs = await claim(rt)
    simulator.configure(creates_per_minute=1)
    try:
        filler = {'systemPrompt': 'x', 'medium': {'sip': {'outgoing': {'to': 'sip:+12125550999@h', 'from': '+1'}}}}
        simulator.client.post('/api/calls', json=filler, headers={'X-API-Key': 'k'})  # uses up the minute
        assert await dial_attempt({'runtime': rt}, refs[0]) == 'rate_limited'
    finally:
        simulator.configure(creates_per_minute=None)
    assert (await progress(rt))['a'] == 0
    assert (await progress(rt))['s'] == 'pending'
    assert await rt.redis.pttl(k.ACCOUNT_HOLD) > 0
    assert await claim(rt) == [], 'the whole account waits for Retry-After'
