"""The fleet-wide exporter: what one scrape reports from crafted Redis state."""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING

import redis as redis_sync
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dialer import constants as k
from dialer import metrics as worker_metrics
from dialer.models import CampaignConfig
from dialer.settings import Settings
from workers.exporter import METRIC_NAMES, build_registry


if TYPE_CHECKING:
    from pathlib import Path

    from prometheus_client import CollectorRegistry


PHONES = ['+12125550001', '+12125550002', '+12125550003']
TRUNKS = (
    '[trunks.t1]\nhost = "sip.example.com"\nfrom = "+14155550100"\nmax_concurrent = 10\ncalls_per_second = 2.5\n'
    '[trunks.t2]\nhost = "sip2.example.com"\nfrom = "+14155550100"\nmax_concurrent = 4\ncalls_per_second = 1\n'
)


def now_ms(client: redis_sync.Redis) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000 + int(client.get(k.CLOCK_OFFSET) or 0)


def craft(client: redis_sync.Redis) -> None:
    now = now_ms(client)
    for name, trunk, state in (('spring', 't1', 'active'), ('autumn', 't1', 'paused'), ('winter', 't2', 'completed')):
        client.hset(
            k.campaign(name),
            mapping={
                'config': CampaignConfig(name=name, trunk=trunk, agent_id='a').model_dump_json(),
                'state': state,
            },
        )
        client.sadd(k.CAMPAIGNS, name)
    client.sadd(k.trunk_campaigns('t1'), 'spring')  # only active campaigns are in a trunk's rotation
    client.hset(
        k.campaign('spring'),
        mapping={
            'n:pending': 7,
            'n:dialing': 1,
            'n:in_call': 2,
            'n:retry_wait': 3,
            'n:done': 4,
            'o:answered': 3,
            'o:busy': 1,
            'e:answered': 3,
            'e:no_answer': 5,
            'calls': 9,
            'retries': 5,
            'sip_seconds': '123.5',
            'agent_seconds': '150',
        },
    )
    client.hset(k.campaign('winter'), mapping={'n:done': 2, 'o:no_answer': 2, 'calls': 4})
    contacts = {p: json.dumps({'i': f'c{i}', 'l': i + 2}) for i, p in enumerate(PHONES)}
    client.hset(k.campaign_contacts('spring'), mapping=contacts)
    client.zadd(k.campaign_due('spring'), {PHONES[0]: now - 1000, PHONES[1]: now - 10, PHONES[2]: now + 600_000})
    client.zadd(k.campaign_due('autumn'), {PHONES[0]: now - 1000})  # paused: not the trunk's waiting work
    client.zadd(k.trunk_slots('t1'), {f'spring:{PHONES[0]}:1': now + 60_000, f'spring:{PHONES[1]}:1': now - 5})
    client.zadd(k.ACCOUNT_SLOTS, {f'spring:{PHONES[0]}:1': now + 60_000})
    client.zadd(k.ACCOUNT_RATE_MINUTE, {f'spring:{PHONES[0]}:1@{now - 100}': now - 100})
    client.set(k.trunk_hold('t2'), 'breaker', px=30_000)
    client.zadd(k.QUEUE_NAME, {'job-1': now, 'job-2': now})
    client.zadd(k.TRACKING, {f'spring:{PHONES[0]}:1|call-1': now})


def registry_for(tmp_path: Path, client: redis_sync.Redis, **overrides: object) -> CollectorRegistry:
    trunks = tmp_path / 'trunks.toml'
    if not trunks.exists():
        trunks.write_text(TRUNKS, encoding='utf-8')
    settings = Settings(**{'trunks_file': trunks, 'account_plan': 'paygo', **overrides})
    return build_registry(settings, redis=client)


def test_a_scrape_reports_campaign_trunk_account_and_queue_state(tmp_path: Path, sync_redis) -> None:
    craft(sync_redis)
    registry = registry_for(tmp_path, sync_redis)
    value = registry.get_sample_value

    assert value('dialer_campaign_contacts', {'campaign': 'spring', 'status': 'pending'}) == 7
    assert value('dialer_campaign_contacts', {'campaign': 'spring', 'status': 'in_call'}) == 2
    assert value('dialer_campaign_contacts', {'campaign': 'autumn', 'status': 'pending'}) == 0
    assert value('dialer_campaign_outcomes', {'campaign': 'spring', 'outcome': 'answered'}) == 3
    assert value('dialer_campaign_outcomes', {'campaign': 'winter', 'outcome': 'no_answer'}) == 2
    assert value('dialer_campaign_outcomes', {'campaign': 'spring', 'outcome': 'dnc'}) == 0
    assert value('dialer_campaign_sip_billed_seconds', {'campaign': 'spring'}) == 123.5
    assert value('dialer_campaign_agent_billed_seconds', {'campaign': 'spring'}) == 150
    assert value('dialer_campaign_calls_created', {'campaign': 'spring'}) == 9
    assert value('dialer_campaign_state', {'campaign': 'spring', 'state': 'active'}) == 1
    assert value('dialer_campaign_state', {'campaign': 'spring', 'state': 'paused'}) == 0
    assert value('dialer_campaign_state', {'campaign': 'autumn', 'state': 'paused'}) == 1
    assert value('dialer_campaign_due_contacts', {'campaign': 'spring'}) == 2

    assert value('dialer_trunk_calls_in_flight', {'trunk': 't1'}) == 1  # the expired lease is not counted
    assert value('dialer_trunk_calls_in_flight', {'trunk': 't2'}) == 0
    assert value('dialer_trunk_max_concurrent', {'trunk': 't1'}) == 10
    assert value('dialer_trunk_calls_per_second_limit', {'trunk': 't1'}) == 2.5
    assert value('dialer_trunk_breaker_open', {'trunk': 't1'}) == 0
    assert value('dialer_trunk_breaker_open', {'trunk': 't2'}) == 1
    assert value('dialer_trunk_due_contacts', {'trunk': 't1'}) == 2
    assert value('dialer_trunk_due_contacts', {'trunk': 't2'}) == 0

    assert value('dialer_account_calls_in_flight') == 1
    assert value('dialer_account_max_concurrent') == 5  # the paygo plan's cap
    assert value('dialer_account_calls_last_minute') == 1
    assert value('dialer_account_hold') == 0
    assert value('dialer_queue_depth') == 2
    assert value('dialer_calls_tracked') == 1
    assert value('dialer_exporter_scrape_errors_total') == 0


def test_repeated_scrapes_report_the_same_values_never_accumulated(tmp_path: Path, sync_redis) -> None:
    craft(sync_redis)
    registry = registry_for(tmp_path, sync_redis)

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect()
            if family.name != 'dialer_exporter_scrape_duration_seconds'
            for s in family.samples
        }

    first = samples()
    assert samples() == first
    assert samples() == first


def test_an_account_without_a_concurrency_cap_exports_no_max(tmp_path: Path, sync_redis) -> None:
    craft(sync_redis)
    registry = registry_for(tmp_path, sync_redis, account_plan='pro')
    assert registry.get_sample_value('dialer_account_max_concurrent') is None
    assert registry.get_sample_value('dialer_account_calls_in_flight') == 1


def test_labels_never_carry_phone_numbers_or_call_ids(tmp_path: Path, sync_redis) -> None:
    craft(sync_redis)
    text = generate_latest(registry_for(tmp_path, sync_redis)).decode()
    for phone in PHONES:
        assert phone not in text
    assert 'call-1' not in text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label_value in sample.labels.values():
                assert not re.search(r'\d{7,}', label_value), (sample.name, label_value)


def test_every_exported_name_is_declared_and_distinct_from_worker_metrics(tmp_path: Path, sync_redis) -> None:
    craft(sync_redis)
    # with a result-webhook destination, so that the outbox's per-destination gauges are exported too
    hooks = [{'url': 'https://crm.example/hooks', 'secret': '0123456789abcdef', 'name': 'crm'}]
    registry = registry_for(tmp_path, sync_redis, result_webhooks=hooks)
    names = {s.name for family in registry.collect() for s in family.samples}
    assert names <= METRIC_NAMES
    assert names >= METRIC_NAMES - {'dialer_account_max_concurrent'}
    # dialer/metrics.py registers the workers' own metrics in the default registry
    worker_names = {s.name for family in REGISTRY.collect() for s in family.samples}
    assert worker_metrics.WORKER_UP._name in worker_names
    assert not (METRIC_NAMES & worker_names), 'fleet state must come from the exporter alone'


def test_a_redis_outage_counts_a_scrape_error_and_exports_no_stale_state(tmp_path: Path, sync_redis) -> None:
    dead = redis_sync.Redis(host='127.0.0.1', port=1, socket_connect_timeout=0.5, decode_responses=True)
    registry = registry_for(tmp_path, dead)
    assert registry.get_sample_value('dialer_exporter_scrape_errors_total') == 1
    assert registry.get_sample_value('dialer_exporter_scrape_errors_total') == 2
    assert registry.get_sample_value('dialer_queue_depth') is None


def test_trunk_limits_follow_edits_of_the_trunks_file_and_survive_a_broken_one(tmp_path: Path, sync_redis) -> None:
    craft(sync_redis)
    registry = registry_for(tmp_path, sync_redis)
    trunks = tmp_path / 'trunks.toml'
    trunks.write_text(TRUNKS.replace('max_concurrent = 10', 'max_concurrent = 12'), encoding='utf-8')
    os.utime(trunks, (1, 1))
    assert registry.get_sample_value('dialer_trunk_max_concurrent', {'trunk': 't1'}) == 12
    trunks.write_text('[trunks.t1]\nhost = ', encoding='utf-8')
    os.utime(trunks, (2, 2))
    assert registry.get_sample_value('dialer_trunk_max_concurrent', {'trunk': 't1'}) == 12
