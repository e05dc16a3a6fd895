"""``dialer demo``: a whole campaign on one machine with nothing installed but this package.

Embedded Valkey (unless DIALER_REDIS_URL is set), the Ultravox simulator at 100x speed, a bundled
trunk and campaign, a few hundred generated contacts (with some invalid and duplicate rows), two
worker processes, a live progress bar, and the final results table.
"""

from __future__ import annotations

import csv
import random
import time
from contextlib import ExitStack
from importlib.resources import files
from pathlib import Path

import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dialer import constants as k
from simulator.testing import running_simulator
from workers.embedded import redis_url_or_embedded
from workers.fleet import LocalFleet


console = Console()
SIMULATOR = {
    'time_scale': 0.01,
    'ring_min': 2,
    'ring_max': 25,
    'talk_min': 20,
    'talk_max': 150,
    'billing_delay': 10,
    'seed': 7,
}


def write_contacts(path: Path, count: int) -> None:
    """Fictional 555-01xx numbers in mixed formats, plus rows the loader must reject."""
    rng = random.Random(42)  # noqa: S311  sample data, not security
    names = ['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Ken', 'Margaret', 'Dennis', 'Frances', 'Linus']
    areas = ['212', '415', '312', '206', '305', '617', '702', '808', '907', '503']
    lines = ['phone,name,customer_ref,order_total']
    for i in range(count):
        area, sub = areas[i % len(areas)], 100 + i // len(areas)
        number = f'+1{area}555{sub:04d}' if i % 3 else f'({area}) 555-{sub:04d}'
        lines.append(f'{number},{rng.choice(names)},C{1000 + i},{rng.randint(10, 500)}.00')
    lines += ['555-NOPE,Mallory,C9998,1.00', ',Nobody,C9999,0.00', lines[1].replace('C1000', 'C1000-again')]
    path.write_text('\r\n'.join(lines) + '\r\n', encoding='utf-8')


def _trunks_file(directory: Path, trunk_kind: str) -> Path:
    """The bundled SIP trunk, or the same limits on a provider trunk (ultravox mode: the simulated
    account has that provider configured, so Ultravox places the calls)."""
    if trunk_kind == 'sip':
        return Path(str(files('workers') / 'demo_data' / 'trunks.toml'))
    path = directory / 'trunks.toml'
    path.write_text(
        f'[trunks.demo-trunk]\nkind = "{trunk_kind}"\nfrom = "+14155550100"\n'
        'max_concurrent = 8\ncalls_per_second = 4\n',
        encoding='utf-8',
    )
    return path


def run_demo(
    *, contacts: int = 60, worker_count: int = 2, directory: Path = Path('dialer-demo'), trunk_kind: str = 'sip'
) -> None:
    """Run the sample campaign; its contacts, rejects and results stay in ``directory`` afterwards."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_url_or_embedded())
        providers = [] if trunk_kind == 'sip' else [trunk_kind]
        sim = stack.enter_context(running_simulator(**SIMULATOR, telephony_providers=providers))
        fleet = LocalFleet(
            redis_url,
            sim.base_url,
            _trunks_file(directory, trunk_kind),
            {
                'DEMO_TRUNK_PASSWORD': 'demo-password',
                'DIALER_POLL_INITIAL': '0.2',
                'DIALER_POLL_INTERVAL': '0.2',
                'DIALER_BILLING_WAIT': '2',
            },
        )
        console.print(f'[bold]dialer demo[/]: Redis {redis_url}, Ultravox simulator {sim.base_url}')
        csv_path = directory / 'contacts.csv'
        rejects = directory / 'contacts.rejects.csv'
        write_contacts(csv_path, contacts)
        campaign_file = str(files('workers') / 'demo_data' / 'campaign.toml')
        loaded = fleet.cli(
            'campaign', 'load', str(csv_path), '--campaign-file', campaign_file, '--rejects', str(rejects),
            '--no-progress',
        )  # fmt: skip
        console.print(loaded.stdout)
        for _ in range(worker_count):
            fleet.start_worker()
        try:
            _follow(redis.Redis.from_url(redis_url, decode_responses=True))
        finally:
            fleet.stop_all()
        output = directory / 'results.csv'
        fleet.cli('campaign', 'export', 'demo', '--output', str(output))
        console.print(fleet.cli('campaign', 'status', 'demo').stdout)
        _print_calls(output)
        stats = sim.stats()
        duplicates = stats.get('duplicate_attempts', 0)
        console.print(f'simulator saw {stats["calls"]} creates, {duplicates} duplicate attempts')
    # printed once everything above is closed, so every file named here is there to open
    console.print('files kept:', highlight=False)
    for path, what in ((csv_path, 'the sample contacts'), (rejects, 'rejected rows'), (output, 'one row per contact')):
        if path.exists():
            console.print(f'  {path}  ({what})', highlight=False, soft_wrap=True)


def _follow(client: redis.Redis) -> None:
    """A live progress bar until the campaign completes."""
    columns = (TextColumn('[bold]{task.description}'), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, TextColumn('{task.fields[detail]}'), console=console) as progress:
        task = progress.add_task('dialling', total=None, detail='')
        while True:
            data = client.hgetall(k.campaign('demo'))
            total = int(data.get('contacts', 0))
            done = int(data.get('n:done', 0))
            detail = (
                f'in call {data.get("n:in_call", 0)}, dialling {data.get("n:dialing", 0)}, '
                f'waiting to retry {data.get("n:retry_wait", 0)}, calls {data.get("calls", 0)}'
            )
            progress.update(task, total=total, completed=done, detail=detail)
            if data.get('state') in {'completed', 'cancelled'}:
                return
            time.sleep(0.25)


def _print_calls(path: Path) -> None:
    table = Table(title='first contacts')
    columns = [
        'contact_id',
        'phone',
        'name',
        'final_outcome',
        'attempts',
        'answered_seconds',
        'sip_billed_seconds',
    ]
    for column in columns:
        table.add_column(column)
    with path.open(encoding='utf-8') as handle:
        for i, row in enumerate(csv.DictReader(handle)):
            if i == 12:
                break
            table.add_row(*(str(row.get(c, '')) for c in columns))
    console.print(table)
