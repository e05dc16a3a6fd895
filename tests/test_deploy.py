"""The deployment files: they parse, reference only metrics that exist, and pass promtool's checks."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

from dialer import metrics as worker_metrics
from dialer.settings import Settings
from dialer.trunks import parse_trunks
from simulator.testing import free_port
from tests.prometheus_server import Prometheus, prometheus_tool
from tests.test_exporter import TRUNKS, craft
from workers.exporter import METRIC_NAMES, build_registry


DEPLOY = Path(__file__).resolve().parent.parent / 'deploy'
DASHBOARD = DEPLOY / 'grafana' / 'dashboards' / 'dialer.json'
ALERTS = DEPLOY / 'prometheus' / 'alerts.yml'
#: Series Prometheus itself attaches to every scrape target.
BUILTIN_SERIES = {'up', 'scrape_duration_seconds', 'scrape_samples_scraped'}
PROMQL_WORDS = {
    'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset',
    'inf', 'nan',
}  # fmt: skip

#: Grafana's variables, replaced by values PromQL accepts, so the dashboard's queries can be checked.
GRAFANA_VARIABLES = {
    '$__range': '1h',
    '$__rate_interval': '1m',
    '$__interval': '15s',
    '$trunk': '.*',
    '$campaign': '.*',
    '$sip_price_per_minute': '0.01',
    '$agent_price_per_minute': '0.05',
}


def yaml_documents(path: Path) -> list[Any]:
    with path.open(encoding='utf-8') as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding='utf-8'))


def dashboard_exprs() -> list[str]:
    exprs = []
    for panel in dashboard()['panels']:
        exprs += [target['expr'] for target in panel.get('targets', [])]
    return exprs


def alert_exprs() -> list[str]:
    (doc,) = yaml_documents(ALERTS)
    return [rule['expr'] for group in doc['groups'] for rule in group['rules']]


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (not functions, labels, keywords or variables)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and strings
    text = re.sub(r'\{[^}]*\}', ' ', text)  # label matchers
    text = re.sub(r'\[[^\]]*\]', ' ', text)  # ranges
    text = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', ' ', text)  # label lists
    text = re.sub(r'\$\w+', ' ', text)  # Grafana variables
    names = set()
    for match in re.finditer(r'(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?', text):
        name, call = match.groups()
        if call or name.lower() in PROMQL_WORDS:
            continue
        names.add(name)
    return names


def known_series() -> set[str]:
    """Every series name the workers (``dialer/metrics.py``) and the exporter can produce."""
    names = set(METRIC_NAMES) | BUILTIN_SERIES
    for value in vars(worker_metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        base = value._name
        if isinstance(value, Counter):
            names.add(f'{base}_total')
        elif isinstance(value, Histogram):
            names |= {f'{base}_bucket', f'{base}_sum', f'{base}_count'}
        elif isinstance(value, Gauge):
            names.add(base)
    return names


def test_metric_name_extraction_skips_functions_labels_and_variables() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, trunk) (rate(dialer_call_setup_seconds_bucket{trunk=~"$trunk"}[5m])))'
        ' / on (trunk) group_left max(up{job="x"}) > bool 0 unless absent(dialer_queue_depth) * $sip_price_per_minute'
    )
    assert metric_names(expr) == {'dialer_call_setup_seconds_bucket', 'up', 'dialer_queue_depth'}


@pytest.mark.parametrize('source', ['dashboard', 'alerts'])
def test_every_metric_referenced_exists(source: str) -> None:
    exprs = dashboard_exprs() if source == 'dashboard' else alert_exprs()
    assert exprs
    referenced = set().union(*map(metric_names, exprs))
    unknown = referenced - known_series()
    assert not unknown, f'{source} references metrics nobody exports: {sorted(unknown)}'
    assert any(name.startswith('dialer_') for name in referenced)


def test_the_dashboard_has_a_fixed_uid_its_variables_and_the_provisioned_datasource() -> None:
    board = dashboard()
    assert board['uid'] == 'dialer-overview'
    assert board['title'] == 'Dialer'
    variables = {v['name']: v for v in board['templating']['list']}
    assert {'trunk', 'campaign', 'sip_price_per_minute', 'agent_price_per_minute'} <= set(variables)
    assert variables['sip_price_per_minute']['query'] == '0.01'
    assert variables['agent_price_per_minute']['query'] == '0.05'
    assert 'label_values' in variables['trunk']['definition']
    datasources = {json.dumps(p['datasource'], sort_keys=True) for p in board['panels'] if 'datasource' in p}
    assert datasources == {json.dumps({'type': 'prometheus', 'uid': 'prometheus-dialer'}, sort_keys=True)}
    ids = [p['id'] for p in board['panels']]
    assert len(ids) == len(set(ids))
    exprs = ' '.join(dashboard_exprs())
    for needle in (
        'dialer_trunk_calls_per_second_limit',
        'dialer_call_setup_seconds_bucket',
        'up{job="dialer-worker"}',
    ):
        assert needle in exprs

    (provisioned,) = yaml_documents(DEPLOY / 'grafana' / 'provisioning' / 'datasources' / 'prometheus.yaml')
    (source,) = provisioned['datasources']
    assert (source['uid'], source['url']) == ('prometheus-dialer', 'http://prometheus:9090')
    (provider_file,) = yaml_documents(DEPLOY / 'grafana' / 'provisioning' / 'dashboards' / 'dialer.yaml')
    assert provider_file['providers'][0]['options']['path'] == '/var/lib/grafana/dashboards'


def test_compose_runs_every_role_with_its_ports_and_mounts() -> None:
    (compose,) = yaml_documents(DEPLOY / 'docker-compose.yml')
    services = compose['services']
    assert {'redis', 'simulator', 'worker', 'webhooks', 'exporter', 'prometheus', 'grafana'} <= set(services)
    assert '--appendonly' in services['redis']['command']
    worker = services['worker']
    assert worker['deploy']['replicas'] == 2
    assert worker['stop_grace_period'] == '30s'
    env = worker['environment']
    assert env['DIALER_REDIS_URL'] == 'redis://redis:6379/0'
    assert env['DIALER_ULTRAVOX_BASE_URL'] == 'http://simulator:8900'
    assert env['DIALER_TRUNKS_FILE'] == '/config/trunks.toml'
    assert env['DIALER_METRICS_HOST'] == '0.0.0.0'
    assert services['webhooks']['environment']['DIALER_METRICS_PORT'] == '9102'
    assert services['exporter']['command'][:1] == ['exporter']
    assert './prometheus:/etc/prometheus:ro' in services['prometheus']['volumes']

    (prometheus,) = yaml_documents(DEPLOY / 'prometheus' / 'prometheus.yml')
    jobs = {job['job_name']: job for job in prometheus['scrape_configs']}
    assert set(jobs) == {'dialer-worker', 'dialer-exporter', 'dialer-webhooks'}
    assert jobs['dialer-worker']['dns_sd_configs'][0]['port'] == 9100
    assert jobs['dialer-exporter']['static_configs'][0]['targets'] == ['exporter:9101']
    assert jobs['dialer-webhooks']['static_configs'][0]['targets'] == ['webhooks:9102']
    assert prometheus['rule_files'] == ['alerts.yml']


def test_the_dockerfile_installs_the_package_as_a_non_root_user() -> None:
    text = (DEPLOY / 'Dockerfile').read_text(encoding='utf-8')
    assert 'FROM python:3.11-slim' in text
    assert 'pip install .' in text
    assert re.search(r'^USER (?!root|0\b)', text, re.MULTILINE)
    assert 'ENTRYPOINT ["dialer"]' in text


def test_the_example_trunks_files_are_valid_and_hold_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('TRUNK_CARRIER_A_PASSWORD', 'from-the-environment')
    compose_trunks = (DEPLOY / 'config' / 'trunks.toml').read_text(encoding='utf-8')
    (config_map,) = [d for d in yaml_documents(DEPLOY / 'k8s' / 'configmap.yaml') if d['kind'] == 'ConfigMap']
    for text in (compose_trunks, config_map['data']['trunks.toml']):
        trunks = parse_trunks(tomllib.loads(text))
        assert all(t.password_env and t.password is None for t in trunks.values())


def test_kubernetes_manifests_parse_and_wire_workers_exporter_and_webhooks() -> None:
    docs = [doc for path in sorted((DEPLOY / 'k8s').glob('*.yaml')) for doc in yaml_documents(path)]
    assert all('namespace' not in doc['metadata'] for doc in docs), 'manifests are namespace-free'
    by_kind: dict[tuple[str, str], dict[str, Any]] = {(d['kind'], d['metadata']['name']): d for d in docs}
    assert ('Service', 'dialer-exporter') in by_kind
    assert ('Service', 'dialer-webhooks') in by_kind
    assert ('Secret', 'dialer-secrets') in by_kind
    assert ('ConfigMap', 'dialer-config') in by_kind

    worker = by_kind['Deployment', 'dialer-worker']['spec']
    assert worker['replicas'] == 3
    pod = worker['template']
    assert pod['spec']['terminationGracePeriodSeconds'] == 60
    assert pod['metadata']['annotations']['prometheus.io/scrape'] == 'true'
    assert pod['metadata']['annotations']['prometheus.io/port'] == '9100'
    (container,) = pod['spec']['containers']
    assert container['args'] == ['worker']
    assert container['ports'] == [{'name': 'metrics', 'containerPort': 9100}]
    assert container['readinessProbe']['tcpSocket']['port'] == 'metrics'
    refs = {next(iter(ref.values()))['name'] for ref in container['envFrom']}
    assert refs == {'dialer-config', 'dialer-secrets'}
    assert by_kind['Deployment', 'dialer-exporter']['spec']['replicas'] == 1

    for name in ('dialer-worker', 'dialer-exporter', 'dialer-webhooks'):
        spec = by_kind['Deployment', name]['spec']
        assert spec['selector']['matchLabels'].items() <= spec['template']['metadata']['labels'].items()
    for name in ('dialer-exporter', 'dialer-webhooks'):
        selector = by_kind['Service', name]['spec']['selector']
        assert selector.items() <= by_kind['Deployment', name]['spec']['template']['metadata']['labels'].items()
    assert 'Cluster' in (DEPLOY / 'k8s' / 'README.md').read_text(encoding='utf-8')


# ---------------------------------------------------------------------------------------------- promtool


def run_promtool(*args: str, cwd: Path) -> None:
    command = [prometheus_tool('promtool'), *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.prometheus
@pytest.mark.parametrize(
    'args',
    [
        ('check', 'config', 'prometheus.yml'),
        ('check', 'rules', 'alerts.yml'),
        ('test', 'rules', 'alerts_test.yml'),
    ],
    ids=['config', 'rules', 'rule-tests'],
)
def test_promtool_accepts_the_prometheus_files(args: tuple[str, ...]) -> None:
    run_promtool(*args, cwd=DEPLOY / 'prometheus')


@pytest.mark.prometheus
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
            expr = expr.replace(variable, GRAFANA_VARIABLES[variable])  # noqa: PLW2901
        assert '$' not in expr, f'unknown Grafana variable in {expr}'
        rules.append({'record': f'dashboard:query_{i}', 'expr': expr})
    (tmp_path / 'dashboard.yml').write_text(yaml.safe_dump({'groups': [{'name': 'dashboard', 'rules': rules}]}))
    run_promtool('check', 'rules', 'dashboard.yml', cwd=tmp_path)


@pytest.mark.prometheus
def test_check_script_runs_the_three_checks() -> None:
    prometheus_tool('promtool')
    result = subprocess.run(
        ['/bin/sh', str(DEPLOY / 'check.sh')], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'SUCCESS' in result.stdout


@pytest.mark.prometheus
def test_a_real_prometheus_scrapes_the_exporter_and_answers_every_dashboard_query(tmp_path: Path, sync_redis) -> None:
    craft(sync_redis)
    trunks = tmp_path / 'trunks.toml'
    trunks.write_text(TRUNKS, encoding='utf-8')
    registry = build_registry(Settings(trunks_file=trunks, account_plan='paygo'), redis=sync_redis)
    exporter_port = free_port()
    server, thread = start_http_server(exporter_port, addr='127.0.0.1', registry=registry)
    prometheus = Prometheus(tmp_path, {'dialer-exporter': [exporter_port]})
    try:
        prometheus.wait_for('dialer_trunk_calls_in_flight{trunk="t1"}', bool, timeout=60)
        assert prometheus.scalar('dialer_trunk_calls_in_flight{trunk="t1"}') == 1
        assert prometheus.scalar('sum(dialer_campaign_contacts{campaign="spring"})') == 17
        assert prometheus.scalar('dialer_trunk_due_contacts{trunk="t1"}') == 2
        assert prometheus.scalar('up{job="dialer-exporter"}') == 1
        for expr in dashboard_exprs():
            for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
                expr = expr.replace(variable, GRAFANA_VARIABLES[variable])  # noqa: PLW2901
            prometheus.query(expr)  # every panel's query is accepted by a real Prometheus
    finally:
        prometheus.stop()
        server.shutdown()
        thread.join(timeout=5)
