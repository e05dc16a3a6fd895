"""Putting campaigns and attempts into Redis the way the loader and the scripts do, for tests."""

from __future__ import annotations

from pydantic import SecretStr

from campaigns.lifecycle import save_config
from dialer import constants as k
from dialer.models import CampaignConfig, ContactRecord
from dialer.scripts import Scripts, SlotLimits
from dialer.settings import Settings
from tests.fleet_helpers import write_trunks
from workers.runtime import Runtime


LIMITS = SlotLimits(trunk=2, account=0)


def runtime_on_t1(
    redis_url: str,
    tmp_path,
    concurrent: int,
    cps: float,
    more: dict[str, tuple[int, float]] | None = None,
    **settings: object,
) -> Runtime:
    """A worker's runtime whose trunks file holds trunk ``t1`` (and ``more``); Ultravox unreachable unless given."""
    trunks = write_trunks(tmp_path / 'trunks.toml', 'sip.t1.example', {'t1': (concurrent, cps), **(more or {})})
    defaults: dict[str, object] = {'ultravox_base_url': 'http://127.0.0.1:9', 'ultravox_api_key': SecretStr('key')}
    return Runtime.create(Settings(redis_url=redis_url, trunks_file=trunks, **{**defaults, **settings}))


async def make_campaign(redis, name: str = 'c1', trunk: str = 't1', numbers: int = 5) -> list[str]:
    config = CampaignConfig(
        name=name, trunk=trunk, agent_id='a', hours={'start': '00:00', 'end': '24:00', 'legal_bound': False}
    )
    await save_config(redis, config)
    now = await Scripts(redis).now_ms()
    phones = [f'+1212555{i:04d}' for i in range(numbers)]
    for line, phone in enumerate(phones, start=2):
        await redis.hset(k.campaign_contacts(name), phone, ContactRecord(i=f'id{line}', l=line).dump())
        await redis.zadd(k.campaign_due(name), {phone: now})
    await redis.hincrby(k.campaign(name), 'n:pending', numbers)
    return phones


async def claim(scripts: Scripts, campaigns=('c1',), limits: SlotLimits = LIMITS, trunk: str = 't1'):
    return await scripts.claim(trunk, list(campaigns), limits, unsent_cap=100, batch=50, claim_lease_ms=60_000)


async def begin_first(scripts: Scripts) -> str:
    job_ref = (await claim(scripts)).job_refs[0]
    begun = await scripts.begin(job_ref, 't1', LIMITS, 60_000)
    assert begun.verdict == 'go'
    return job_ref


async def live_call(redis, call_id: str = 'call-1') -> str:
    """A campaign with one contact whose call is live; returns the attempt id."""
    await make_campaign(redis, numbers=1)
    scripts = Scripts(redis)
    attempt_id = (await begin_first(scripts)).split('#')[0]
    assert await scripts.created(attempt_id, 't1', call_id, LIMITS, lease_ms=100_000, first_poll_ms=60_000)
    return attempt_id
