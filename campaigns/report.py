"""``dialer campaign report``: one self-contained HTML file with a campaign's charts.

The numbers are gathered in one streaming pass over the campaign's records (as the exports do); the
charts are matplotlib SVGs inlined in the page (text kept as text, so the file stays small and
searchable), and the numbers behind every chart are embedded as JSON (``<script id="report-data">``)
for anyone who wants to re-plot them. Nothing is fetched when the file is opened.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from campaigns.lifecycle import UnknownCampaignError
from campaigns.policy import NeverCallable, NoTimezone, contact_zones
from campaigns.results import BATCH, to_float, to_int
from dialer import constants as k
from dialer.models import CampaignConfig, check_name


if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.asyncio import Redis


WEEKDAYS = ('Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun')
#: Default prices per minute (the Grafana dashboard's constants); the command line overrides them.
SIP_PRICE_PER_MINUTE = 0.01
AGENT_PRICE_PER_MINUTE = 0.05


@lru_cache(maxsize=4096)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=65536)
def _zone_of(number: str, timezone: str | None, default: str | None) -> str:
    try:
        return contact_zones(number, timezone, default)[0]
    except (NoTimezone, NeverCallable, ValueError, KeyError):
        return 'UTC'


class _Tally:
    """The report's numbers, added up one contact at a time."""

    def __init__(self, name: str, config: CampaignConfig) -> None:
        self.name, self.config = name, config
        self.loaded = self.dialled = self.answered = 0
        self.dispositions: Counter[str] = Counter()
        self.per_contact: Counter[int] = Counter()
        self.hour = [[0, 0] for _ in range(24)]  # [attempts with a call, answered]
        self.weekday = [[0, 0] for _ in range(7)]
        self.by_trunk: dict[str, Counter[str]] = defaultdict(Counter)
        self.by_day: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # sip seconds, agent seconds

    def add(self, number: str, contact: dict[str, Any], attempts: list[dict[str, Any]]) -> None:
        self.loaded += 1
        called = [a for a in attempts if a.get('call')]
        self.per_contact[len(called)] += 1
        self.dialled += bool(called)
        self.answered += any(a.get('jn') for a in called)
        disposition = next((a['dsp'] for a in reversed(attempts) if a.get('dsp')), None)
        if disposition:
            self.dispositions[disposition] += 1
        zone = _zone(_zone_of(number, contact.get('z'), self.config.default_timezone))
        for record in attempts:
            if record.get('st') == 'ended':
                self.by_trunk[str(record.get('trunk') or self.config.trunk)][str(record.get('o') or 'unknown')] += 1
            at = record.get('cr') or record.get('t0')
            if record.get('call') and at:
                self._add_call(record, float(at) / 1000, zone)

    def _add_call(self, record: dict[str, Any], at: float, zone: ZoneInfo) -> None:
        local = datetime.fromtimestamp(at, zone)
        joined = 1 if record.get('jn') else 0
        self.hour[local.hour][0] += 1
        self.hour[local.hour][1] += joined
        self.weekday[local.weekday()][0] += 1
        self.weekday[local.weekday()][1] += joined
        day = self.by_day[datetime.fromtimestamp(at, UTC).date().isoformat()]
        day[0] += to_float(record.get('sip'))
        day[1] += to_float(record.get('agent'))

    def result(self) -> dict[str, Any]:
        days = sorted(self.by_day)
        funnel = {'loaded': self.loaded, 'dialled': self.dialled, 'answered': self.answered}
        return {
            'campaign': self.name,
            'funnel': {**funnel, **dict(self.dispositions.most_common())},
            'answer_rate_by_hour': [round(a / n, 4) if n else None for n, a in self.hour],
            'attempts_by_hour': [n for n, _ in self.hour],
            'answer_rate_by_weekday': {
                WEEKDAYS[i]: round(a / n, 4) if n else None for i, (n, a) in enumerate(self.weekday)
            },
            'attempts_per_contact': {str(n): self.per_contact[n] for n in sorted(self.per_contact)},
            'outcomes_by_trunk': {trunk: dict(counts) for trunk, counts in sorted(self.by_trunk.items())},
            'minutes_by_day': {
                'days': days,
                'sip_minutes': [round(self.by_day[d][0] / 60, 2) for d in days],
                'agent_minutes': [round(self.by_day[d][1] / 60, 2) for d in days],
            },
        }


async def _consume(redis: Redis, name: str, batch: list[tuple[str, str]], tally: _Tally) -> None:
    numbers = [number for number, _ in batch]
    progresses = [json.loads(r) if r else {} for r in await redis.hmget(k.campaign_progress(name), numbers)]
    lasts = [max(to_int(p.get('a')), to_int(p.get('c'))) for p in progresses]
    fields = [f'{number}:{n}' for number, last in zip(numbers, lasts, strict=True) for n in range(1, last + 1)]
    records: dict[str, dict[str, Any]] = {}
    for start in range(0, len(fields), 2000):
        chunk = fields[start : start + 2000]
        for field, raw in zip(chunk, await redis.hmget(k.campaign_attempts(name), chunk), strict=True):
            if raw:
                records[field] = json.loads(raw)
    for (number, raw_contact), last in zip(batch, lasts, strict=True):
        attempts = [records[f] for f in (f'{number}:{n}' for n in range(1, last + 1)) if f in records]
        tally.add(number, json.loads(raw_contact), attempts)


async def gather(redis: Redis, name: str) -> dict[str, Any]:
    """Every number the report shows, from one pass over the campaign's contacts and attempts."""
    check_name('campaign', name)
    raw_config = await redis.hget(k.campaign(name), 'config')
    if not raw_config:
        raise UnknownCampaignError(name)
    tally = _Tally(name, CampaignConfig.model_validate_json(raw_config))
    batch: list[tuple[str, str]] = []
    async for number, raw in redis.hscan_iter(k.campaign_contacts(name), count=BATCH):
        batch.append((number, raw))
        if len(batch) >= BATCH:
            await _consume(redis, name, batch, tally)
            batch = []
    if batch:
        await _consume(redis, name, batch, tally)
    return tally.result()


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format='svg', bbox_inches='tight')
    text = buffer.getvalue()
    # inline: drop the XML prolog and doctype, and the metadata block (dates, tool versions)
    text = text[text.index('<svg') :]
    return re.sub(r'<metadata>.*?</metadata>', '', text, flags=re.DOTALL)


def _bars(ax: Any, labels: list[str], values: list[float], color: str, xlabel: str, ylabel: str) -> None:
    ax.bar(labels, values, color=color)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def _outcomes_by_trunk(ax: Any, trunks: dict[str, dict[str, int]]) -> None:
    outcomes = sorted({o for counts in trunks.values() for o in counts})
    left = [0] * len(trunks)
    for outcome in outcomes:
        values = [trunks[t].get(outcome, 0) for t in trunks]
        ax.barh(list(trunks), values, left=left, label=outcome)
        left = [a + b for a, b in zip(left, values, strict=True)]
    if outcomes:
        ax.legend(fontsize=7, ncols=min(4, len(outcomes)), loc='upper center', bbox_to_anchor=(0.5, -0.2))
    ax.set_xlabel('attempts')


def _funnel(ax: Any, funnel: dict[str, int]) -> None:
    # each bar says its count and its share of the loaded contacts: the axis alone gives neither
    loaded = funnel['loaded'] or 1
    bars = ax.barh(list(funnel)[::-1], list(funnel.values())[::-1], color='#3b6fb6')
    ax.bar_label(bars, labels=[f'{n:,} ({n / loaded:.0%})' for n in list(funnel.values())[::-1]], padding=3)
    ax.set_xlabel('contacts')


def _minutes_and_cost(ax: Any, minutes: dict[str, Any], sip_price: float, agent_price: float) -> list[float]:
    pairs = zip(minutes['sip_minutes'], minutes['agent_minutes'], strict=True)
    cost = [round(sip * sip_price + agent * agent_price, 2) for sip, agent in pairs]
    # bars under a line: cost follows the minutes, so two lines on their own scales lay one over
    # the other and the minutes disappeared under the cost in a browser
    ax.bar(minutes['days'], minutes['sip_minutes'], color='#8fb3de', label='SIP minutes')
    ax.set_ylabel('SIP minutes')
    twin = ax.twinx()
    twin.plot(minutes['days'], cost, marker='s', color='#b8563b', label='cost')
    twin.set_ylabel('cost (SIP + agent minutes)')
    twin.set_ylim(bottom=0)
    ax.tick_params(axis='x', labelrotation=30)
    if minutes['days']:
        ax.legend(
            [*ax.get_legend_handles_labels()[0], *twin.get_legend_handles_labels()[0]],
            ['SIP minutes', 'cost'],
            fontsize=7,
            ncols=2,
            frameon=False,
            loc='lower center',
            bbox_to_anchor=(0.5, 1.0),  # above the plot: inside, it covered the last day's bar
        )
    return cost


def charts(data: dict[str, Any], sip_price: float, agent_price: float) -> dict[str, str]:
    """Chart id -> inline SVG; adds the cost series it plots to ``data['minutes_by_day']``."""
    import matplotlib as mpl  # noqa: PLC0415  only the report needs it

    mpl.use('Agg')
    import matplotlib.pyplot as plt  # noqa: PLC0415

    mpl.rcParams.update({'svg.fonttype': 'none', 'font.size': 9, 'axes.spines.top': False, 'axes.spines.right': False})
    funnel, weekdays, per_contact = data['funnel'], data['answer_rate_by_weekday'], data['attempts_per_contact']
    hourly = [r or 0 for r in data['answer_rate_by_hour']]
    draw: dict[str, Callable[[Any], object]] = {
        'funnel': lambda ax: _funnel(ax, funnel),
        'answer_rate_by_hour': lambda ax: _bars(
            ax, [str(h) for h in range(24)], hourly, '#3b8f5a', "contact's local hour", 'answer rate'
        ),
        'answer_rate_by_weekday': lambda ax: _bars(
            ax, list(weekdays), [r or 0 for r in weekdays.values()], '#3b8f5a', '', 'answer rate'
        ),
        'attempts_per_contact': lambda ax: _bars(
            ax, list(per_contact), list(per_contact.values()), '#7a5ab8', 'calls per contact', 'contacts'
        ),
        'outcomes_by_trunk': lambda ax: _outcomes_by_trunk(ax, data['outcomes_by_trunk']),
        'minutes_and_cost': lambda ax: data['minutes_by_day'].update(
            cost=_minutes_and_cost(ax, data['minutes_by_day'], sip_price, agent_price)
        ),
    }
    out: dict[str, str] = {}
    for chart, plot in draw.items():
        fig, ax = plt.subplots(figsize=(6.4, 2.8))
        plot(ax)
        out[chart] = _svg(fig)
        plt.close(fig)
    return out


_TITLES = {
    'funnel': 'Funnel: loaded, dialled, answered, dispositions',
    'answer_rate_by_hour': "Answer rate by the contact's local hour",
    'answer_rate_by_weekday': "Answer rate by the contact's local weekday",
    'attempts_per_contact': 'Calls per contact',
    'outcomes_by_trunk': 'Outcome mix per trunk',
    'minutes_and_cost': 'SIP minutes and cost per day (UTC)',
}


def render(
    data: dict[str, Any], *, sip_price: float = SIP_PRICE_PER_MINUTE, agent_price: float = AGENT_PRICE_PER_MINUTE
) -> str:
    """The whole page: inline CSS, inline SVG charts, the data as JSON; no external reference."""
    svgs = charts(data, sip_price, agent_price)
    data = {**data, 'prices_per_minute': {'sip': sip_price, 'agent': agent_price}}
    sections = '\n'.join(
        f'<section id="{chart}"><h2>{html.escape(_TITLES[chart])}</h2>\n{svg}</section>' for chart, svg in svgs.items()
    )
    payload = json.dumps(data, separators=(',', ':')).replace('</', '<\\/')
    title = html.escape(f'Campaign {data["campaign"]}')
    generated = datetime.now(UTC).isoformat(timespec='seconds')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<title>{title}</title>'
        '<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}'
        'section{margin:2rem 0}h2{font-size:1.1rem}svg{max-width:100%;height:auto}</style></head>\n'
        f'<body><h1>{title}</h1><p>Generated {generated}. Prices per minute: SIP {sip_price}, agent '
        f'{agent_price}.</p>\n{sections}\n'
        f'<script type="application/json" id="report-data">{payload}</script>\n</body></html>\n'
    )
