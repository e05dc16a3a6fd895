"""The deployment files: they parse, reference only metrics that exist, and pass promtool's checks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

from dialer import metrics as worker_metrics
from dialer.settings import Settings
from dialer.trunks import parse_trunks
from simulator.app import build_app as build_simulator_app
from simulator.testing import free_port
from tests.prometheus_server import Prometheus, prometheus_tool
from tests.test_exporter import TRUNKS, craft
from workers.exporter import METRIC_NAMES, build_registry
from workers.serving import Health, start_metrics_server


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


def k8s_applied_files() -> list[Path]:
    """What ``kubectl apply -f deploy/k8s/`` reads: the directory's own .json/.yaml/.yml files, not subfolders."""
    return sorted(p for p in (DEPLOY / 'k8s').iterdir() if p.is_file() and p.suffix in {'.json', '.yaml', '.yml'})


def k8s_applied_documents() -> list[dict[str, Any]]:
    docs = []
    for path in k8s_applied_files():
        for doc in yaml_documents(path):  # JSON is YAML too
            docs += doc.get('items', []) if doc.get('kind', '').endswith('List') else [doc]
    return docs


def k8s_deployments() -> dict[str, dict[str, Any]]:
    return {d['metadata']['name']: d for d in k8s_applied_documents() if d['kind'] == 'Deployment'}


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
        'dialer_worker_up == 1',
        'dialer_account_fault',
        'dialer_campaign_blocked',
        'dialer_ambiguous_oldest_seconds',
        'dialer_worker_redis_up',
    ):
        assert needle in exprs
    assert 'job=' not in exprs, 'panels must not depend on how the targets are discovered'

    (provisioned,) = yaml_documents(DEPLOY / 'grafana' / 'provisioning' / 'datasources' / 'prometheus.yaml')
    (source,) = provisioned['datasources']
    assert (source['uid'], source['url']) == ('prometheus-dialer', 'http://prometheus:9090')
    (provider_file,) = yaml_documents(DEPLOY / 'grafana' / 'provisioning' / 'dashboards' / 'dialer.yaml')
    assert provider_file['providers'][0]['options']['path'] == '/var/lib/grafana/dashboards'


def test_compose_runs_every_role_with_its_ports_and_mounts() -> None:
    services = compose(full_env())['services']
    assert {'redis', 'simulator', 'worker', 'webhooks', 'exporter', 'prometheus', 'grafana'} <= set(services)
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
    docs = k8s_applied_documents()
    assert all('namespace' not in doc['metadata'] for doc in docs), 'manifests are namespace-free'
    by_kind: dict[tuple[str, str], dict[str, Any]] = {(d['kind'], d['metadata']['name']): d for d in docs}
    assert ('Service', 'dialer-exporter') in by_kind
    assert ('Service', 'dialer-webhooks') in by_kind
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
    for probe in ('readinessProbe', 'livenessProbe'):
        assert container[probe]['httpGet'] == {'path': '/healthz', 'port': 'metrics'}
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


def test_applying_the_k8s_directory_never_applies_a_secret_or_example_credentials() -> None:
    placeholder = re.compile(
        r'replace|example|changeme|change-me|placeholder|your[-_ ]|xxx|<[^>]*>|todo', re.IGNORECASE
    )
    for doc in k8s_applied_documents():
        if doc['kind'] != 'Secret':
            continue
        values = {**doc.get('stringData', {}), **doc.get('data', {})}
        fake = sorted(key for key, value in values.items() if placeholder.search(str(value)))
        assert not fake, f'kubectl apply -f deploy/k8s/ would apply placeholder credentials: {fake}'
        pytest.fail(f'kubectl apply -f deploy/k8s/ would apply Secret {doc["metadata"]["name"]}: create it instead')


def documented_secret_commands(text: str) -> list[str]:
    """Every ``kubectl ... create secret generic`` command in a Markdown text, continuation lines joined."""
    joined = text.replace('\\\n', ' ')
    return [line for line in joined.splitlines() if re.search(r'kubectl .*create secret generic', line)]


def test_the_docs_create_the_secret_the_manifests_need_before_applying_them() -> None:
    """Both READMEs create ``dialer-secrets`` with every key the pods read, before ``kubectl apply``."""
    secret_refs = {
        ref['secretRef']['name']
        for deployment in k8s_deployments().values()
        for container in deployment['spec']['template']['spec']['containers']
        for ref in container.get('envFrom', [])
        if 'secretRef' in ref
    }
    assert secret_refs == {'dialer-secrets'}
    (config_map,) = [d for d in k8s_applied_documents() if d['kind'] == 'ConfigMap']
    trunks = tomllib.loads(config_map['data']['trunks.toml'])['trunks']
    needed = {'DIALER_ULTRAVOX_API_KEY', 'DIALER_WEBHOOK_SECRETS'} | {t['password_env'] for t in trunks.values()}
    for readme in (DEPLOY / 'k8s' / 'README.md', DEPLOY.parent / 'README.md'):
        text = readme.read_text(encoding='utf-8')
        assert not re.search(r'kubectl[^\n]*apply[^\n]*secret', text, re.IGNORECASE), f'{readme} applies a secret file'
        commands = documented_secret_commands(text)
        assert commands, f'{readme} does not say how to create the secret'
        for command in commands:
            assert 'create secret generic dialer-secrets' in command
            keys = set(re.findall(r'--from-literal=([A-Z0-9_]+)=', command))
            assert keys == needed, f'{readme}: the secret must hold {sorted(needed)}, not {sorted(keys)}'
        assert text.index('create secret generic') < text.index('apply -f deploy/k8s/'), readme


def probe_paths(deployment: dict[str, Any]) -> dict[str, tuple[str, int]]:
    (container,) = deployment['spec']['template']['spec']['containers']
    ports = {port['name']: port['containerPort'] for port in container['ports']}
    found = {}
    for kind in ('readinessProbe', 'livenessProbe'):
        probe = container[kind]
        assert set(probe) & {'tcpSocket', 'exec', 'grpc'} == set(), f'{kind} must ask the process over HTTP'
        found[kind] = (probe['httpGet']['path'], ports[probe['httpGet']['port']])
    return found


def test_every_deployment_probes_an_http_endpoint_its_process_serves() -> None:
    deployments = k8s_deployments()
    assert set(deployments) == {'dialer-worker', 'dialer-exporter', 'dialer-webhooks'}
    (config_map,) = [d for d in k8s_applied_documents() if d['kind'] == 'ConfigMap']
    metrics_port = int(config_map['data']['DIALER_METRICS_PORT'])
    exporter_port = int(config_map['data']['DIALER_EXPORTER_PORT'])
    expected = {
        'dialer-worker': ('/healthz', metrics_port),
        'dialer-exporter': ('/metrics', exporter_port),
        'dialer-webhooks': ('/health', 8080),
    }
    for name, deployment in deployments.items():
        assert set(probe_paths(deployment).values()) == {expected[name]}, name
    worker_annotations = deployments['dialer-worker']['spec']['template']['metadata']['annotations']
    assert worker_annotations['prometheus.io/port'] == str(metrics_port)


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_worker_probe_path_is_served_by_the_worker_metrics_server() -> None:
    path, _ = probe_paths(k8s_deployments()['dialer-worker'])['livenessProbe']
    for health, expected in ((Health(), 200), (Health(stall_after=-1.0), 503)):
        port = free_port()
        server = start_metrics_server('127.0.0.1', port, CollectorRegistry(), health=health)
        try:
            assert get_status(f'http://127.0.0.1:{port}{path}') == expected
        finally:
            server.shutdown()
            server.server_close()


# ------------------------------------------------------------------------------------------- compose


class MissingVariableError(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == '$$':
            return '$'
        name = match.group('braced') or match.group('bare')
        operator, argument = match.group('op'), match.group('arg') or ''
        value = env.get(name)
        unset_or_empty = value is None or (value == '' and operator in {':-', ':?'})
        if operator in {':-', '-'} and unset_or_empty:
            return interpolate(argument, env)
        if operator in {':?', '?'} and unset_or_empty:
            raise MissingVariableError(f'{name}: {argument}')
        return value or ''

    pattern = r'\$\$|\$\{(?P<braced>\w+)(?:(?P<op>:-|-|:\?|\?)(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)'
    return re.sub(pattern, substitute, text)


COMPOSE = DEPLOY / 'docker-compose.yml'
SECRET_NAME = re.compile(r'SECRET|PASSWORD|PASSWD|API_KEY|TOKEN|--api-key|--webhook-secret', re.IGNORECASE)


def compose(env: dict[str, str]) -> dict[str, Any]:
    return yaml.safe_load(interpolate(COMPOSE.read_text(encoding='utf-8'), env))


def required_compose_variables() -> set[str]:
    return set(re.findall(r'\$\{(\w+):\?[^}]+\}', COMPOSE.read_text(encoding='utf-8')))


def full_env() -> dict[str, str]:
    return {name: f'value-of-{name.lower()}' for name in required_compose_variables()}


def secret_fields(services: dict[str, Any]) -> list[tuple[str, str]]:
    """Every environment value and command argument of every service that carries a secret."""
    fields = []
    for name, service in services.items():
        environment = service.get('environment') or {}
        if isinstance(environment, list):
            environment = dict(item.split('=', 1) for item in environment)
        fields += [(f'{name}.{key}', str(value)) for key, value in environment.items() if SECRET_NAME.search(key)]
        command = service.get('command') or []
        fields += [(f'{name} {arg}', arg) for arg in command if SECRET_NAME.search(arg.split('=', 1)[0])]
    return fields


def test_compose_has_no_default_secret_and_refuses_to_start_without_each_one() -> None:
    raw = yaml_documents(COMPOSE)[0]['services']
    fields = secret_fields(raw)
    assert {'worker.DIALER_WEBHOOK_SECRETS', 'grafana.GF_SECURITY_ADMIN_PASSWORD'} <= {name for name, _ in fields}
    for name, value in fields:
        with pytest.raises(MissingVariableError):
            interpolate(value, {})  # built from required variables only: no default to fall back on
        assert ':-' not in value, f'{name} has a default'
    required = required_compose_variables()
    assert {'WEBHOOK_SECRET', 'GRAFANA_ADMIN_PASSWORD', 'DIALER_ULTRAVOX_API_KEY'} <= required
    for missing in sorted(required):
        env = {k: v for k, v in full_env().items() if k != missing}
        with pytest.raises(MissingVariableError, match=rf'^{missing}: \S'):  # names it, says what to do
            compose(env)
    services = compose(full_env())['services']
    assert services['worker']['environment']['DIALER_WEBHOOK_SECRETS'] == '["value-of-webhook_secret"]'
    assert '--webhook-secret=value-of-webhook_secret' in services['simulator']['command']
    assert services['grafana']['environment']['GF_SECURITY_ADMIN_PASSWORD'] == 'value-of-grafana_admin_password'


def published(port: str | dict[str, Any]) -> tuple[str | None, str]:
    """(host address, container port) of a ports entry; no address means every interface."""
    if isinstance(port, dict):
        return port.get('host_ip'), str(port['target'])
    parts = str(port).rsplit(':', 2)
    return (parts[0] if len(parts) == 3 else None), parts[-1]


def test_compose_publishes_every_port_on_loopback_only_by_default() -> None:
    services = compose(full_env())['services']
    ports = {name: [published(p) for p in service.get('ports', [])] for name, service in services.items()}
    assert {name for name, entries in ports.items() if entries} >= {'simulator', 'webhooks', 'prometheus', 'grafana'}
    for name, entries in ports.items():
        for address, target in entries:
            assert address == '127.0.0.1', f'{name} publishes {target} on {address or "every interface"}'
    moved = compose({**full_env(), 'PUBLISH_ADDRESS': '10.0.0.5'})['services']
    assert published(moved['grafana']['ports'][0]) == ('10.0.0.5', '3000')


def test_redis_persistence_is_one_policy_every_write_synced_as_the_readme_says() -> None:
    command = compose(full_env())['services']['redis']['command']
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options['--appendonly'] == 'yes'
    assert options['--appendfsync'] == 'always'
    readme = (DEPLOY.parent / 'README.md').read_text(encoding='utf-8')
    assert 'appendfsync always' in readme
    for text in (readme, COMPOSE.read_text(encoding='utf-8'), (DEPLOY / 'k8s' / 'README.md').read_text('utf-8')):
        assert 'everysec' not in text


def run_healthcheck(test: list[str], env: dict[str, str]) -> int:
    assert test[:3] == ['CMD', 'python', '-c'], 'the image has Python, not curl'
    result = subprocess.run([sys.executable, '-c', test[3]], env=env, capture_output=True, timeout=60, check=False)
    return result.returncode


def test_compose_healthchecks_ask_each_process_and_fail_when_it_stalls() -> None:
    services = compose(full_env())['services']
    expected_urls = {
        'worker': '/healthz',
        'webhooks': 'http://127.0.0.1:8080/health',
        'exporter': 'http://127.0.0.1:9101/metrics',
        'simulator': 'http://127.0.0.1:8900/_sim/health',
    }
    for name, url in expected_urls.items():
        assert url in services[name]['healthcheck']['test'][3], name
    assert '--port=8080' in services['webhooks']['command']
    assert '--port=9101' in services['exporter']['command']
    assert '/_sim/health' in {route.path for route in build_simulator_app().routes}  # type: ignore[attr-defined]
    assert services['worker']['depends_on']['simulator']['condition'] == 'service_healthy'

    # the worker's check against the worker's real metrics server, on the port its settings name
    test = services['worker']['healthcheck']['test']
    for health, expected in ((Health(), 0), (Health(stall_after=-1.0), 1)):
        port = free_port()
        server = start_metrics_server('127.0.0.1', port, CollectorRegistry(), health=health)
        try:
            assert run_healthcheck(test, {'DIALER_METRICS_PORT': str(port)}) == expected
        finally:
            server.shutdown()
            server.server_close()
    assert run_healthcheck(test, {'DIALER_METRICS_PORT': str(free_port())}) == 1  # nothing listening


# ---------------------------------------------------------------------------------------------- alerts


def alert_unit_tests() -> list[dict[str, Any]]:
    (doc,) = yaml_documents(DEPLOY / 'prometheus' / 'alerts_test.yml')
    return doc['tests']


def test_alerts_do_not_depend_on_job_names() -> None:
    for expr in alert_exprs():
        assert 'job=' not in expr.replace(' ', ''), f'{expr} depends on how targets are discovered'


def test_every_alert_has_unit_tests_that_fire_it_and_keep_it_quiet() -> None:
    (doc,) = yaml_documents(ALERTS)
    alerts = {rule['alert'] for group in doc['groups'] for rule in group['rules']}
    fired, quiet = set(), set()
    for case in alert_unit_tests():
        for check in case['alert_rule_test']:
            (fired if check['exp_alerts'] else quiet).add(check['alertname'])
    assert alerts - fired == set(), 'alerts never tested firing'
    assert alerts - quiet == set(), 'alerts never tested staying quiet'
    assert {
        'DialerAccountFault',
        'DialerCampaignBlocked',
        'DialerAmbiguousCreatesStuck',
        'DialerWorkerRedisDown',
    } <= alerts


@pytest.mark.parametrize('alert', ['DialerWorkerDown', 'DialerExporterDown', 'DialerWorkerRedisDown'])
def test_target_alerts_are_tested_with_compose_and_kubernetes_job_names(alert: str) -> None:
    jobs = set()
    for case in alert_unit_tests():
        if any(check['alertname'] == alert and check['exp_alerts'] for check in case['alert_rule_test']):
            jobs |= set(re.findall(r'job="([^"]+)"', ' '.join(s['series'] for s in case['input_series'])))
    assert {'dialer-worker', 'kubernetes-pods'} <= jobs or {'dialer-exporter', 'kubernetes-pods'} <= jobs, jobs


# ---------------------------------------------------------------------------------------------- docs


def test_hacking_md_matches_the_code() -> None:
    root = DEPLOY.parent
    text = (root / 'HACKING.md').read_text(encoding='utf-8')
    config = tomllib.loads((root / 'pyproject.toml').read_text(encoding='utf-8'))
    assert re.findall(r'line length (\d+)', text) == [str(config['tool']['ruff']['line-length'])]
    paths = {p for p in re.findall(r'`([\w./*-]+)`', text) if '/' in p or re.search(r'\.(py|toml|lua|md)$', p)}
    assert 'dialer/lua/*.lua' in paths
    for path in paths:
        assert list(root.glob(path)), f'HACKING.md names {path}, which does not exist'
    constants = (root / 'dialer' / 'constants.py').read_text(encoding='utf-8')
    for key in re.findall(r'`(dialer:[\w:]+)`', text):
        assert f"'{key}'" in constants, f'HACKING.md names the key {key}, which dialer/constants.py does not define'


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


def panels_of_row(title: str) -> list[dict[str, Any]]:
    """The panels laid out under the (expanded) row ``title``, up to the next row."""
    panels, inside = [], False
    for panel in dashboard()['panels']:
        if panel['type'] == 'row':
            inside = panel['title'] == title
        elif inside:
            panels.append(panel)
    return panels


#: Two workers' counters over two hours, rising linearly (so ``increase`` over 1 h is exact): seconds
#: per minute by kind and meter, and provider prices per minute by kind and currency.
PER_KIND_SERIES = {
    'dialer_billed_seconds_by_kind_total{kind="sip", meter="sip", instance="w1"}': 60,
    'dialer_billed_seconds_by_kind_total{kind="sip", meter="sip", instance="w2"}': 30,
    'dialer_billed_seconds_by_kind_total{kind="sip", meter="agent", instance="w1"}': 60,
    'dialer_billed_seconds_by_kind_total{kind="twilio", meter="agent", instance="w1"}': 120,
    'dialer_billed_seconds_by_kind_total{kind="twilio", meter="sip", instance="w1"}': 0,
    'dialer_billed_seconds_by_kind_total{kind="twilio", meter="provider", instance="w1"}': 120,
    'dialer_provider_price_total{kind="twilio", currency="USD", instance="w1"}': 0.5,
    'dialer_provider_price_total{kind="twilio", currency="EUR", instance="w2"}': 0.25,
    'dialer_provider_price_total{kind="telnyx", currency="USD", instance="w2"}': 0.25,
}
#: What each panel of the row shows after those two hours (prices: SIP 0.5, agent 0.25 per minute).
PER_KIND_EXPECTED = {
    'Billed minutes by kind and meter (time range)': {
        '{kind="sip", meter="sip"}': 90,
        '{kind="sip", meter="agent"}': 60,
        '{kind="twilio", meter="agent"}': 120,
        '{kind="twilio", meter="sip"}': 0,
        '{kind="twilio", meter="provider"}': 120,
    },
    'Billed minutes per hour, by kind and meter': {
        '{kind="sip", meter="sip"}': 90,
        '{kind="sip", meter="agent"}': 60,
        '{kind="twilio", meter="agent"}': 120,
        '{kind="twilio", meter="sip"}': 0,
        '{kind="twilio", meter="provider"}': 120,
    },
    'Estimated Ultravox cost by kind (time range)': {
        '{kind="sip"}': 90 * 0.5 + 60 * 0.25,
        '{kind="twilio"}': 0 * 0.5 + 120 * 0.25,
    },
    'Provider cost by kind and currency (time range)': {
        '{kind="twilio", currency="USD"}': 30,
        '{kind="twilio", currency="EUR"}': 15,
        '{kind="telnyx", currency="USD"}': 15,
    },
}


@pytest.mark.prometheus
def test_the_dashboard_shows_minutes_and_cost_per_trunk_kind(tmp_path: Path) -> None:
    """promtool evaluates every panel of the per-kind row over known counters and checks the figures."""
    panels = panels_of_row('Minutes and cost per trunk kind')
    assert sorted(p['title'] for p in panels) == sorted(PER_KIND_EXPECTED)
    prices = {**GRAFANA_VARIABLES, '$sip_price_per_minute': '0.5', '$agent_price_per_minute': '0.25'}
    tests = []
    for panel in panels:
        (target,) = panel['targets']
        expr = target['expr']
        for variable in sorted(prices, key=len, reverse=True):
            expr = expr.replace(variable, prices[variable])
        assert '$' not in expr, f'unknown Grafana variable in {expr}'
        samples = [{'labels': labels, 'value': value} for labels, value in PER_KIND_EXPECTED[panel['title']].items()]
        tests.append({'expr': expr, 'eval_time': '2h', 'exp_samples': samples})
    series = [{'series': name, 'values': f'0+{per_minute}x120'} for name, per_minute in PER_KIND_SERIES.items()]
    (tmp_path / 'empty.yml').write_text(yaml.safe_dump({'groups': []}))
    unit = {
        'rule_files': ['empty.yml'],
        'tests': [{'interval': '1m', 'input_series': series, 'promql_expr_test': tests}],
    }
    (tmp_path / 'per_kind_test.yml').write_text(yaml.safe_dump(unit, sort_keys=False))
    run_promtool('test', 'rules', 'per_kind_test.yml', cwd=tmp_path)


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
