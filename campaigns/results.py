"""What a campaign and the trunks are doing (``status``), and one row per contact (``export``).

Everything is read from the Redis records the Lua scripts write; nothing here changes them. Exports
stream: contacts are read by HSCAN in batches and their progress and attempts fetched per batch, so
a million contacts need no more memory than a thousand.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from rich.table import Table

from campaigns.lifecycle import UnknownCampaignError
from dialer import constants as k
from dialer.models import CampaignConfig, ContactStatus, Outcome, check_name
from dialer.scripts import Scripts


if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from redis.asyncio import Redis

    from dialer.settings import AccountLimits
    from dialer.trunks import TrunkRegistry


#: Contacts read per HSCAN step and per HMGET of their progress and attempts.
BATCH = 500
#: Attempt fields asked for in one HMGET (a contact may have up to 100 attempts).
ATTEMPT_FIELDS_PER_CALL = 2000
MINUTE_MS = 60_000

EXPORT_COLUMNS = (
    'contact_id',
    'phone',
    'name',
    'line',
    'status',
    'final_outcome',
    'attempts',
    'call_ids',
    'first_attempt_at',
    'last_attempt_at',
    'last_ended_at',
    'answered_seconds',
    'sip_billed_seconds',
    'agent_billed_seconds',
    'billing_source',
    'last_end_reason',
    'failure_reason',
    'summary',
    'disposition',
    'notes',
    'callback_at',
    'voicemail',
    'voicemail_left',
    'context',
    # provider trunks (dialer/provider_trunks.py): the kind of the last call, and in direct mode the
    # provider's own call ids, raw status, SIP code, answering-machine verdict, duration and price
    'trunk_kind',
    'provider_call_ids',
    'provider_status',
    'provider_sip_code',
    'amd_verdict',
    'provider_seconds',
    'provider_price',
    'callbacks',
    'last_callback_at',
    'last_callback_outcome',
    'last_callback_call_id',
)

_E164 = re.compile(r'^\+[1-9]\d{6,14}$')
_PLAIN_NUMBER = re.compile(r'^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$')
_FORMULA_START = ('=', '+', '-', '@', '\t', '\r')


def iso_ms(ms: float | None) -> str | None:
    """Redis milliseconds as ISO 8601 UTC (``2026-03-01T14:05:09.120Z``)."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(float(ms) / 1000, UTC)
    return moment.isoformat(timespec='milliseconds').replace('+00:00', 'Z')


def to_int(value: Any) -> int:
    try:
        return int(float(value or 0))
    except (TypeError, ValueError):
        return 0


def to_float(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _number(value: float) -> float | int:
    """Whole seconds as ints, the rest rounded to milliseconds: clean CSV cells and JSON."""
    rounded = round(float(value), 3)
    return int(rounded) if rounded.is_integer() else rounded


def _attempt_campaign(member: str) -> str | None:
    """The campaign of an account minute-log member ``<campaign>:<number>:<n>[#claim]@<ms>``."""
    attempt = member.rsplit('@', 1)[0].split('#', 1)[0]
    try:
        return k.parse_attempt_id(attempt)[0]
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------- status


async def campaign_status(redis: Redis, name: str) -> dict[str, Any]:
    """Counts by status and outcome, calls in flight, attempts, billed minutes, next due and ETA."""
    check_name('campaign', name)
    now = await Scripts(redis).now_ms()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(k.campaign(name))
        pipe.zrange(k.campaign_due(name), 0, 0, withscores=True)
        pipe.zcount(k.campaign_due(name), '-inf', now)
        pipe.zcard(k.campaign_due(name))
        pipe.zrangebyscore(k.ACCOUNT_RATE_MINUTE, now - MINUTE_MS, '+inf')
        pipe.get(k.ACCOUNT_HOLD)
        pipe.zrange(k.AMBIGUOUS, 0, -1)
        data, first_due, due_now, waiting, minute_log, account_hold, ambiguous = await pipe.execute()
    if not data or 'config' not in data:
        raise UnknownCampaignError(name)
    config = CampaignConfig.model_validate_json(data['config'])

    statuses = {s.value: to_int(data.get(f'n:{s.value}')) for s in ContactStatus}
    outcomes = {o.value: to_int(data.get(f'o:{o.value}')) for o in Outcome}
    attempt_outcomes = {o.value: to_int(data.get(f'e:{o.value}')) for o in Outcome}
    attempts_ended = sum(attempt_outcomes.values())
    in_flight = statuses[ContactStatus.DIALING] + statuses[ContactStatus.IN_CALL]
    sip_seconds = to_float(data.get('sip_seconds'))
    agent_seconds = to_float(data.get('agent_seconds'))
    remaining = sum(n for s, n in statuses.items() if s != ContactStatus.DONE)
    # Creations in the last minute come from the account's rate log, whose members name the attempt.
    calls_last_minute = sum(1 for member in minute_log if _attempt_campaign(member) == name)
    due_now, queued = int(due_now), int(waiting)
    eta_seconds: float | None = None
    if remaining == 0:
        eta_seconds = 0.0
    elif calls_last_minute and data.get('state') == 'active' and (due_now or in_flight):
        # A lower bound: each open contact needs at least one more call at the recent pace. With
        # nothing due and nothing in flight no call is being made, so no time can be promised.
        eta_seconds = round(remaining / calls_last_minute * 60, 1)
    return {
        'name': name,
        'state': data.get('state', '?'),
        'held': held_by(data.get('fault'), account_hold),
        'ambiguous_attempts': sum(1 for member in ambiguous if _attempt_campaign(member) == name),
        # inbound calls routed to this campaign (call-backs), by outcome, and their billed seconds
        'callbacks': {key.removeprefix('ib:'): to_int(value) for key, value in data.items() if key.startswith('ib:')},
        'callback_sip_seconds': _number(to_float(data.get('ib_sip_seconds'))),
        'loading': 'loading' in data,
        'trunk': config.trunk,
        'now': iso_ms(now),
        'contacts': to_int(data.get('contacts')),
        'rejected': to_int(data.get('rejected')),
        'statuses': statuses,
        'outcomes': outcomes,
        'attempt_outcomes': attempt_outcomes,
        # the agents' reports: dispositions by name (attempts), opt-outs put on the DNC list
        'dispositions': {d: to_int(data.get(f'd:{d}')) for d in config.dispositions},
        'opt_outs': to_int(data.get('optouts')),
        'voicemail_rate': (round(attempt_outcomes[Outcome.VOICEMAIL] / attempts_ended, 4) if attempts_ended else None),
        'calls_created': to_int(data.get('calls')),
        'retries_scheduled': to_int(data.get('retries')),
        'handed_back': to_int(data.get('handed_back')),
        'in_flight': in_flight,
        # every live call is one attempt not yet ended; a contact still dialling has spent nothing yet
        'attempts_made': attempts_ended + statuses[ContactStatus.IN_CALL],
        'attempts_ended': attempts_ended,
        'sip_seconds': _number(sip_seconds),
        'agent_seconds': _number(agent_seconds),
        'sip_minutes': round(sip_seconds / 60, 2),
        'agent_minutes': round(agent_seconds / 60, 2),
        'answer_rate': (round(attempt_outcomes[Outcome.ANSWERED] / attempts_ended, 4) if attempts_ended else None),
        # the due ZSET, split at now: due now (dialled as trunk capacity allows) and due later
        'due_now': due_now,
        'waiting': queued - due_now,
        'queued': queued,
        'next_due_at': iso_ms(first_due[0][1]) if first_due else None,
        'calls_last_minute': calls_last_minute,
        'eta_seconds': eta_seconds,
        'eta_at': iso_ms(now + eta_seconds * 1000) if eta_seconds is not None else None,
    }


def held_by(campaign_fault: str | None, account_hold: str | None) -> dict[str, Any] | None:
    """Why the campaign cannot dial now, if a fault holds it: its own (agent gone, trunk missing)
    or the account's (bad key, payment, disabled). None while nothing does."""
    if account_hold and account_hold.startswith(k.FAULT_HOLD_PREFIX):
        reason, _, detail = account_hold.removeprefix(k.FAULT_HOLD_PREFIX).partition(':')
        return {'scope': 'account', 'reason': reason, 'detail': detail.strip()}
    if campaign_fault:
        try:
            fault = json.loads(campaign_fault)
            return {
                'scope': 'campaign',
                'reason': str(fault['reason']),
                'detail': str(fault.get('detail', '')),
                'since': iso_ms(fault.get('since_ms')),
            }
        except (ValueError, KeyError, TypeError):
            return {'scope': 'campaign', 'reason': 'unknown', 'detail': campaign_fault[:200]}
    return None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return 'unknown'
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{secs:02d}s'


def _counts(values: dict[str, int]) -> str:
    shown = [f'{key} {value}' for key, value in values.items() if value]
    return ', '.join(shown) or '-'


def render_status(status: dict[str, Any]) -> Table:
    """A two-column table of a :func:`campaign_status` result for the terminal."""
    table = Table(title=f'Campaign {status["name"]}', show_header=False, title_justify='left')
    table.add_column('what', style='bold')
    table.add_column('value')
    state = status['state'] + (' (loading contacts)' if status.get('loading') else '')
    answer_rate = status.get('answer_rate')
    rows = [
        ('State', state),
        ('Trunk', status['trunk']),
        ('Contacts', f'{status["contacts"]} ({_counts(status["statuses"])})'),
        ('Final outcomes', _counts(status['outcomes'])),
        ('Attempt outcomes', _counts(status['attempt_outcomes'])),
        ('Dispositions', _counts(status['dispositions']) + f' (opt-outs {status["opt_outs"]})'),
        ('Calls in flight', str(status['in_flight'])),
        ('Attempts made', str(status['attempts_made'])),
        ('Calls created', f'{status["calls_created"]} ({status["calls_last_minute"]} in the last minute)'),
        ('Retries scheduled', str(status['retries_scheduled'])),
        ('Answer rate', '-' if answer_rate is None else f'{answer_rate:.1%}'),
        ('SIP minutes', f'{status["sip_minutes"]:.2f}'),
        ('Agent minutes', f'{status["agent_minutes"]:.2f}'),
        ('Due now / waiting', f'{status["due_now"]} / {status["waiting"]} (due later)'),
        ('Next due', status.get('next_due_at') or '-'),
    ]
    if status['state'] == 'active':
        eta = status.get('eta_seconds')
        if eta is None and not status['due_now'] and not status['in_flight'] and status.get('next_due_at'):
            rows.append(('ETA (at recent pace)', f'nothing callable until {status["next_due_at"]}'))
        else:
            rows.append(('ETA (at recent pace)', _duration(eta) + (f' ({status["eta_at"]})' if eta else '')))
    held = status.get('held')
    if held:
        rows.insert(1, ('Held', f'{held["reason"]} ({held["scope"]}): {held["detail"]}'))
    if status.get('ambiguous_attempts'):
        rows.append(('Ambiguous creates', f'{status["ambiguous_attempts"]} (looked up, never re-dialled)'))
    for label, value in rows:
        table.add_row(label, value)
    return table


# ---------------------------------------------------------------------------------------------- export


def neutralise_cell(value: str) -> str:
    """Stop a spreadsheet from running a cell as a formula, leaving phone numbers and numbers alone."""
    if value.startswith(_FORMULA_START) and not (_E164.match(value) or _PLAIN_NUMBER.match(value)):
        return "'" + value
    return value


def _contact_row(
    number: str, contact: dict[str, Any], progress: dict[str, Any], attempts: list[dict[str, Any]]
) -> dict[str, Any]:
    calls = [a['call'] for a in attempts if a.get('call')]
    starts = progress.get('ts') or []
    ended = [a for a in attempts if a.get('st') == 'ended']
    last_ended = ended[-1] if ended else {}
    sources = {a['bsrc'] for a in attempts if a.get('bsrc')}

    def last(field: str) -> str:
        for record in reversed(attempts):
            if record.get(field):
                return str(record[field])
        return ''

    status = progress.get('s', ContactStatus.PENDING.value)
    return {
        'contact_id': str(contact.get('i', '')),
        'phone': number,
        'name': contact.get('n') or '',
        'line': contact.get('l', ''),
        'status': status,
        'final_outcome': progress.get('o', '') if status == ContactStatus.DONE else '',
        'attempts': to_int(progress.get('a')),
        'call_ids': ';'.join(calls),
        'first_attempt_at': iso_ms(starts[0]) if starts else '',
        'last_attempt_at': iso_ms(starts[-1]) if starts else '',
        'last_ended_at': last_ended.get('en') or iso_ms(last_ended.get('eo')) or '',
        'answered_seconds': _number(sum(to_float(a.get('dur')) for a in attempts)),
        'sip_billed_seconds': _number(sum(to_float(a.get('sip')) for a in attempts)),
        'agent_billed_seconds': _number(sum(to_float(a.get('agent')) for a in attempts)),
        'billing_source': 'mixed' if len(sources) > 1 else next(iter(sources), ''),
        'last_end_reason': last('er'),
        'failure_reason': last('r'),
        'summary': last('sum'),
        **_conversation(attempts),
        'context': contact.get('c') or {},
        'trunk_kind': last('kind'),
        'provider_call_ids': ';'.join(str(a['pcall']) for a in attempts if a.get('pcall')),
        'provider_status': last('pst'),
        'provider_sip_code': last('psip'),
        'amd_verdict': last('amd'),
        'provider_seconds': _number(sum(to_float(a.get('pdur')) for a in attempts)),
        'provider_price': _provider_price(attempts),
        # call-backs (workers/sip_fallback.py): how often the contact rang back, and the last one
        'callbacks': to_int(progress.get('ib')),
        'last_callback_at': iso_ms(progress.get('ibt')) or '',
        'last_callback_outcome': progress.get('ibo') or '',
        'last_callback_call_id': progress.get('ibc') or '',
    }


def _conversation(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """What the conversations achieved: the latest disposition the agent recorded (with its notes and
    call-back time) and whether any attempt reached voicemail (and left a message)."""
    reported: dict[str, Any] = next((a for a in reversed(attempts) if a.get('dsp')), {})
    voicemails = [a for a in attempts if a.get('vm')]
    return {
        'disposition': reported.get('dsp', ''),
        'notes': reported.get('nt') or '',
        'callback_at': iso_ms(reported.get('cb')) or '',
        'voicemail': bool(voicemails),
        'voicemail_left': any(a.get('vml') for a in voicemails),
    }


def _provider_price(attempts: list[dict[str, Any]]) -> str:
    """The provider's total price for the contact's calls, with its currency (blank when none was reported)."""
    priced = [a for a in attempts if a.get('pprice') not in (None, '')]
    if not priced:
        return ''
    units = {str(a.get('punit') or '') for a in priced}
    total = _number(sum(abs(to_float(a.get('pprice'))) for a in priced))
    return f'{total} {units.pop()}'.strip() if len(units) == 1 else str(total)


class _RowWriter:
    """Rows as CSV (phone numbers as written, formulas neutralised) or JSON lines, onto a text handle."""

    def __init__(self, handle: IO[str], fmt: Literal['csv', 'jsonl'], columns: Sequence[str] = EXPORT_COLUMNS) -> None:
        self.handle = handle
        self.columns = columns
        self.csv = csv.writer(handle) if fmt == 'csv' else None
        if self.csv is not None:
            self.csv.writerow(columns)

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            if self.csv is None:
                self.handle.write(json.dumps(row, ensure_ascii=False, separators=(',', ':')) + '\n')
                continue
            cells = []
            for column in self.columns:
                value = row[column]
                if column == 'context':
                    value = json.dumps(value, ensure_ascii=False, separators=(',', ':')) if value else ''
                cells.append(neutralise_cell(str(value)))
            self.csv.writerow(cells)

    def commit(self) -> None:
        self.handle.flush()

    def abort(self) -> None:
        self.handle.flush()


class _AtomicWriter(_RowWriter):
    """Rows go to a temporary file beside the output, renamed over it only when complete."""

    def __init__(self, output: Path, fmt: Literal['csv', 'jsonl'], columns: Sequence[str] = EXPORT_COLUMNS) -> None:
        self.output = output
        fd, name = tempfile.mkstemp(prefix=f'.{output.name}.', suffix='.tmp', dir=output.parent)
        self.tmp = Path(name)
        super().__init__(os.fdopen(fd, 'w', encoding='utf-8', newline=''), fmt, columns)

    def commit(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        # a new export stays private to its owner (it holds phone numbers); a replaced one keeps its mode
        with contextlib.suppress(FileNotFoundError):
            self.tmp.chmod(self.output.stat().st_mode & 0o777)
        self.tmp.replace(self.output)

    def abort(self) -> None:
        self.handle.close()
        self.tmp.unlink(missing_ok=True)


async def _batch_rows(redis: Redis, name: str, batch: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    numbers = [number for number, _ in batch]
    raw_progress = await redis.hmget(k.campaign_progress(name), numbers)
    progresses = [json.loads(raw) if raw else {} for raw in raw_progress]
    fields: list[str] = []
    for number, progress in zip(numbers, progresses, strict=True):
        last = max(to_int(progress.get('a')), to_int(progress.get('c')))
        fields += [f'{number}:{n}' for n in range(1, last + 1)]
    records: dict[str, dict[str, Any]] = {}
    for start in range(0, len(fields), ATTEMPT_FIELDS_PER_CALL):
        chunk = fields[start : start + ATTEMPT_FIELDS_PER_CALL]
        for field, raw in zip(chunk, await redis.hmget(k.campaign_attempts(name), chunk), strict=True):
            if raw:
                records[field] = json.loads(raw)
    rows = []
    for (number, raw_contact), progress in zip(batch, progresses, strict=True):
        last = max(to_int(progress.get('a')), to_int(progress.get('c')))
        attempts = [records[f] for f in (f'{number}:{n}' for n in range(1, last + 1)) if f in records]
        rows.append(_contact_row(number, json.loads(raw_contact), progress, attempts))
    return rows


async def export_results(redis: Redis, name: str, output: Path | IO[str], fmt: str = 'csv') -> int:
    """Write one row per contact to ``output`` (CSV or JSON lines); returns the rows written.

    ``output`` is a path or an open text stream (``--output -`` passes stdout, written as it goes). A
    file appears complete or not at all. Contacts come in HSCAN order; a contact added while the
    export runs may be missed (or, if the hash grows meanwhile, repeated), so export a settled load.
    """
    check_name('campaign', name)
    if fmt not in {'csv', 'jsonl'}:
        raise ValueError(f'export format must be csv or jsonl, not {fmt!r}')
    if not await redis.hexists(k.campaign(name), 'config'):
        raise UnknownCampaignError(name)
    kind: Literal['csv', 'jsonl'] = 'csv' if fmt == 'csv' else 'jsonl'
    writer = _AtomicWriter(Path(output), kind) if isinstance(output, (str, Path)) else _RowWriter(output, kind)
    written = 0
    try:
        batch: list[tuple[str, str]] = []
        async for number, raw in redis.hscan_iter(k.campaign_contacts(name), count=BATCH):
            batch.append((number, raw))
            if len(batch) >= BATCH:
                writer.write(await _batch_rows(redis, name, batch))
                written += len(batch)
                batch = []
        if batch:
            writer.write(await _batch_rows(redis, name, batch))
            written += len(batch)
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    return written


# ---------------------------------------------------------------------------------------------- trunks


async def trunks_status(redis: Redis, registry: TrunkRegistry, account_limits: AccountLimits) -> list[dict[str, Any]]:
    """Per trunk, then the account: calls in flight, recent creations, waiting work, holds.

    Calls in flight and due contacts are counted from the campaigns (their dialing + in_call
    counters and due ZSETs), exactly as ``campaign status`` counts them, so the two always agree.
    The limiter's slot leases are reported beside them (``slots_held``): the account holds no slots
    at all when it has no concurrency limit, which is why counting slots showed 0 calls in flight.
    """
    now = await Scripts(redis).now_ms()
    names = sorted(registry.trunks)
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zcount(k.trunk_slots(name), f'({now}', '+inf')
            pipe.get(k.trunk_rate(name))
            pipe.pttl(k.trunk_hold(name))
            pipe.get(k.trunk_hold(name))
        pipe.zcount(k.ACCOUNT_SLOTS, f'({now}', '+inf')
        pipe.zrangebyscore(k.ACCOUNT_RATE_MINUTE, now - MINUTE_MS, '+inf')
        pipe.pttl(k.ACCOUNT_HOLD)
        pipe.get(k.ACCOUNT_HOLD)
        pipe.smembers(k.CAMPAIGNS)
        replies = await pipe.execute()
    per_trunk = [replies[i * 4 : i * 4 + 4] for i in range(len(names))]
    account_slots, minute_log, account_ttl, account_reason, campaign_names = replies[len(names) * 4 :]

    recent_by_campaign: dict[str, int] = {}
    for member in minute_log:
        campaign_name = _attempt_campaign(member)
        if campaign_name:
            recent_by_campaign[campaign_name] = recent_by_campaign.get(campaign_name, 0) + 1
    looked_up = sorted(campaign_names)
    async with redis.pipeline(transaction=False) as pipe:
        for campaign_name in looked_up:
            pipe.hmget(k.campaign(campaign_name), ['config', 'state', 'n:dialing', 'n:in_call'])
            pipe.zcount(k.campaign_due(campaign_name), '-inf', now)
            pipe.zcard(k.campaign_due(campaign_name))
        looked = await pipe.execute()
    on_trunk: dict[str, list[str]] = {}
    in_flight: dict[str, int] = {}
    due: dict[str, tuple[int, int]] = {}
    for i, campaign_name in enumerate(looked_up):
        (raw, state, dialing, in_call), due_now, queued = looked[i * 3 : i * 3 + 3]
        if not raw:
            continue
        trunk_name = json.loads(raw).get('trunk', '')
        in_flight[campaign_name] = to_int(dialing) + to_int(in_call)
        due[campaign_name] = (int(due_now), int(queued) - int(due_now))
        if state in {'active', 'paused'} or in_flight[campaign_name]:
            on_trunk.setdefault(trunk_name, []).append(campaign_name)

    rows: list[dict[str, Any]] = []
    for trunk_name, (slots, tat, ttl, reason) in zip(names, per_trunk, strict=True):
        trunk = registry.trunks[trunk_name]
        interval = 1000 / trunk.calls_per_second
        campaigns = on_trunk.get(trunk_name, [])
        recent = sum(recent_by_campaign.get(c, 0) for c in campaigns)
        rows.append(
            {
                'kind': 'trunk',
                'name': trunk_name,
                'in_flight': sum(in_flight[c] for c in campaigns),
                'slots_held': int(slots),
                'max_concurrent': trunk.max_concurrent,
                'calls_last_minute': recent,
                'recent_calls_per_second': round(recent / 60, 2),
                'calls_per_second_limit': trunk.calls_per_second,
                # GCRA: the next creation is allowed once now >= TAT + interval - burst * interval
                'rate_wait_ms': max(0, int(to_float(tat) + interval - interval * trunk.burst - now)) if tat else 0,
                'campaigns': sorted(campaigns),
                'due_now': sum(due[c][0] for c in campaigns),
                'waiting': sum(due[c][1] for c in campaigns),
                'hold_ms': max(0, int(ttl)),
                'hold_reason': reason if int(ttl) > 0 else None,
            }
        )
    rows.append(
        {
            'kind': 'account',
            'name': 'account',
            'in_flight': sum(in_flight.values()),
            'slots_held': int(account_slots),
            'max_concurrent': account_limits.max_concurrent,
            'calls_last_minute': len(minute_log),
            'recent_calls_per_second': round(len(minute_log) / 60, 2),
            'calls_per_second_limit': account_limits.calls_per_second,
            'calls_per_minute_limit': account_limits.calls_per_minute,
            'hold_ms': max(0, int(account_ttl)),
            'hold_reason': account_reason if int(account_ttl) > 0 else None,
        }
    )
    return rows


def render_trunks(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(title='Trunks', title_justify='left')
    for column in ('Trunk', 'In flight', 'Calls/s (last min)', 'Rate wait', 'Due now', 'Waiting', 'Hold'):
        table.add_column(column, justify='left' if column in {'Trunk', 'Hold'} else 'right')
    for row in rows:
        limit = row['max_concurrent']
        per_second = f'{row["recent_calls_per_second"]:g} / {row["calls_per_second_limit"]:g}'
        if row['kind'] == 'account':
            per_second += f' ({row["calls_last_minute"]} / {row["calls_per_minute_limit"]} per min)'
        hold = '-'
        if row['hold_ms']:
            hold = f'{row["hold_reason"] or "hold"} for {row["hold_ms"] / 1000:.1f}s'
        table.add_row(
            row['name'] if row['kind'] == 'trunk' else '[bold]account[/bold]',
            f'{row["in_flight"]} / {limit or "unlimited"}',
            per_second,
            f'{row["rate_wait_ms"]} ms' if row.get('rate_wait_ms') else '-',
            str(row.get('due_now', '-')) if row['kind'] == 'trunk' else '',
            str(row.get('waiting', '-')) if row['kind'] == 'trunk' else '',
            hold,
        )
    return table
