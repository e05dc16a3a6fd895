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


async def gather(redis: Redis, name: str) -> dict[str, Any]:
    """Every number the report shows, from one pass over the campaign's contacts and attempts."""
    check_name('campaign', name)
    raw_config = await redis.hget(k.campaign(name), 'config')
    if not raw_config:
        raise UnknownCampaignError(name)
    config = CampaignConfig.model_validate_json(raw_config)
    loaded = dialled = answered = 0
    dispositions: Counter[str] = Counter()
    per_contact: Counter[int] = Counter()
    hour = [[0, 0] for _ in range(24)]  # [attempts with a call, answered]
    weekday = [[0, 0] for _ in range(7)]
    by_trunk: dict[str, Counter[str]] = defaultdict(Counter)
    by_day: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # sip seconds, agent seconds
    batch: list[tuple[str, str]] = []

    async def consume(batch: list[tuple[str, str]]) -> None:
        nonlocal loaded, dialled, answered
        numbers = [number for number, _ in batch]
        progresses = [json.loads(r) if r else {} for r in await redis.hmget(k.campaign_progress(name), numbers)]
        fields = []
        for number, progress in zip(numbers, progresses, strict=True):
            last = max(to_int(progress.get('a')), to_int(progress.get('c')))
            fields += [f'{number}:{n}' for n in range(1, last + 1)]
        records: dict[str, dict[str, Any]] = {}
        for start in range(0, len(fields), 2000):
            chunk = fields[start : start + 2000]
            for field, raw in zip(chunk, await redis.hmget(k.campaign_attempts(name), chunk), strict=True):
                if raw:
                    records[field] = json.loads(raw)
        for (number, raw_contact), progress in zip(batch, progresses, strict=True):
            loaded += 1
            contact = json.loads(raw_contact)
            zone = _zone(_zone_of(number, contact.get('z'), config.default_timezone))
            last = max(to_int(progress.get('a')), to_int(progress.get('c')))
            attempts = [records[f] for f in (f'{number}:{n}' for n in range(1, last + 1)) if f in records]
            called = [a for a in attempts if a.get('call')]
            per_contact[len(called)] += 1
            dialled += bool(called)
            answered += any(a.get('jn') for a in called)
            disposition = next((a['dsp'] for a in reversed(attempts) if a.get('dsp')), None)
            if disposition:
                dispositions[disposition] += 1
            for record in attempts:
                if record.get('st') == 'ended':
                    by_trunk[str(record.get('trunk') or config.trunk)][str(record.get('o') or 'unknown')] += 1
                at = record.get('cr') or record.get('t0')
                if not record.get('call') or not at:
                    continue
                local = datetime.fromtimestamp(float(at) / 1000, zone)
                joined = 1 if record.get('jn') else 0
                hour[local.hour][0] += 1
                hour[local.hour][1] += joined
                weekday[local.weekday()][0] += 1
                weekday[local.weekday()][1] += joined
                day = datetime.fromtimestamp(float(at) / 1000, UTC).date().isoformat()
                by_day[day][0] += to_float(record.get('sip'))
                by_day[day][1] += to_float(record.get('agent'))

    async for number, raw in redis.hscan_iter(k.campaign_contacts(name), count=BATCH):
        batch.append((number, raw))
        if len(batch) >= BATCH:
            await consume(batch)
            batch = []
    if batch:
        await consume(batch)
    days = sorted(by_day)
    return {
        'campaign': name,
        'funnel': {'loaded': loaded, 'dialled': dialled, 'answered': answered, **dict(dispositions.most_common())},
        'answer_rate_by_hour': [round(a / n, 4) if n else None for n, a in hour],
        'attempts_by_hour': [n for n, _ in hour],
        'answer_rate_by_weekday': {WEEKDAYS[i]: round(a / n, 4) if n else None for i, (n, a) in enumerate(weekday)},
        'attempts_per_contact': {str(n): per_contact[n] for n in sorted(per_contact)},
        'outcomes_by_trunk': {trunk: dict(counts) for trunk, counts in sorted(by_trunk.items())},
        'minutes_by_day': {
            'days': days,
            'sip_minutes': [round(by_day[d][0] / 60, 2) for d in days],
            'agent_minutes': [round(by_day[d][1] / 60, 2) for d in days],
        },
    }


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format='svg', bbox_inches='tight')
    text = buffer.getvalue()
    # inline: drop the XML prolog and doctype, and the metadata block (dates, tool versions)
    text = text[text.index('<svg') :]
    return re.sub(r'<metadata>.*?</metadata>', '', text, flags=re.DOTALL)


def charts(data: dict[str, Any], sip_price: float, agent_price: float) -> dict[str, str]:
    """Chart id -> inline SVG."""
    import matplotlib as mpl  # noqa: PLC0415  only the report needs it

    mpl.use('Agg')
    import matplotlib.pyplot as plt  # noqa: PLC0415

    mpl.rcParams.update({'svg.fonttype': 'none', 'font.size': 9, 'axes.spines.top': False, 'axes.spines.right': False})
    out: dict[str, str] = {}

    def figure() -> tuple[Any, Any]:
        return plt.subplots(figsize=(6.4, 2.8))

    fig, ax = figure()
    funnel = data['funnel']
    ax.barh(list(funnel)[::-1], list(funnel.values())[::-1], color='#3b6fb6')
    ax.set_xlabel('contacts')
    out['funnel'] = _svg(fig)

    fig, ax = figure()
    rates = [r if r is not None else 0 for r in data['answer_rate_by_hour']]
    ax.bar(range(24), rates, color='#3b8f5a')
    ax.set_xticks(range(0, 24, 2))
    ax.set_xlabel("contact's local hour")
    ax.set_ylabel('answer rate')
    out['answer_rate_by_hour'] = _svg(fig)

    fig, ax = figure()
    weekdays = data['answer_rate_by_weekday']
    ax.bar(list(weekdays), [r if r is not None else 0 for r in weekdays.values()], color='#3b8f5a')
    ax.set_ylabel('answer rate')
    out['answer_rate_by_weekday'] = _svg(fig)

    fig, ax = figure()
    per_contact = data['attempts_per_contact']
    ax.bar(list(per_contact), list(per_contact.values()), color='#7a5ab8')
    ax.set_xlabel('calls per contact')
    ax.set_ylabel('contacts')
    out['attempts_per_contact'] = _svg(fig)

    fig, ax = figure()
    trunks = data['outcomes_by_trunk']
    outcomes = sorted({o for counts in trunks.values() for o in counts})
    left = [0] * len(trunks)
    for outcome in outcomes:
        values = [trunks[t].get(outcome, 0) for t in trunks]
        ax.barh(list(trunks), values, left=left, label=outcome)
        left = [a + b for a, b in zip(left, values, strict=True)]
    if outcomes:
        ax.legend(fontsize=7, ncols=min(4, len(outcomes)), loc='upper center', bbox_to_anchor=(0.5, -0.2))
    ax.set_xlabel('attempts')
    out['outcomes_by_trunk'] = _svg(fig)

    fig, ax = figure()
    minutes = data['minutes_by_day']
    cost = [s * sip_price + a * agent_price for s, a in zip(minutes['sip_minutes'], minutes['agent_minutes'], strict=True)]
    ax.plot(minutes['days'], minutes['sip_minutes'], marker='o', label='SIP minutes')
    ax.set_ylabel('SIP minutes')
    twin = ax.twinx()
    twin.plot(minutes['days'], cost, marker='s', color='#b8563b', label='cost')
    twin.set_ylabel('cost')
    ax.tick_params(axis='x', labelrotation=30)
    data['minutes_by_day']['cost'] = [round(c, 2) for c in cost]
    out['minutes_and_cost'] = _svg(fig)
    plt.close('all')
    return out


_TITLES = {
    'funnel': 'Funnel: loaded, dialled, answered, dispositions',
    'answer_rate_by_hour': "Answer rate by the contact's local hour",
    'answer_rate_by_weekday': "Answer rate by the contact's local weekday",
    'attempts_per_contact': 'Calls per contact',
    'outcomes_by_trunk': 'Outcome mix per trunk',
    'minutes_and_cost': 'SIP minutes and cost per day (UTC)',
}


def render(data: dict[str, Any], *, sip_price: float = SIP_PRICE_PER_MINUTE, agent_price: float = AGENT_PRICE_PER_MINUTE) -> str:
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
