"""One row per attempt (``dialer campaign export NAME --attempts``): CSV, JSON lines or Parquet.

Read from the same Redis records as the per-contact export (``campaigns/results.py``), streamed in
batches of contacts, so memory stays flat however large the campaign. Parquet goes through pyarrow,
an optional extra (``pip install 'dialer[parquet]'``) for warehouse loads.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from campaigns.lifecycle import UnknownCampaignError
from campaigns.results import BATCH, _AtomicWriter, _RowWriter, iso_ms, to_float, to_int
from dialer import constants as k
from dialer.models import CampaignConfig, check_name


if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from redis.asyncio import Redis


ATTEMPT_COLUMNS = (
    'campaign',
    'contact_id',
    'phone',
    'attempt',
    'attempt_id',
    'trunk',
    'trunk_kind',
    'caller_id',
    'call_id',
    'created_at',
    'joined_at',
    'ended_at',
    'state',
    'outcome',
    'end_reason',
    'sip_termination_reason',
    'answered_seconds',
    'sip_billed_seconds',
    'agent_billed_seconds',
    'billing_source',
    'billing_final',
    'failure_reason',
    'disposition',
    'notes',
    'callback_at',
    'voicemail',
    'voicemail_left',
    'summary',
    'recording_url',
)
#: Parquet column types (pyarrow names); every other column is a string.
_PARQUET_TYPES = {
    'attempt': 'int32',
    'answered_seconds': 'float64',
    'sip_billed_seconds': 'float64',
    'agent_billed_seconds': 'float64',
    'billing_final': 'bool_',
    'voicemail': 'bool_',
    'voicemail_left': 'bool_',
}


class ParquetUnavailableError(ValueError):
    def __init__(self) -> None:
        super().__init__("--format parquet needs pyarrow: pip install 'dialer[parquet]'")


def attempt_row(
    name: str,
    number: str,
    contact: Mapping[str, Any],
    attempt: int,
    record: Mapping[str, Any],
    config: CampaignConfig,
    *,
    caller_ids: Mapping[str, str],
    ultravox_base_url: str,
) -> dict[str, Any]:
    end_reason, _, sip_reason = str(record.get('er') or '').partition('/')
    call_id = record.get('call') or ''
    trunk = str(record.get('trunk') or config.trunk)
    answered = bool(record.get('jn'))
    recording = ''
    if config.recording and call_id and answered:
        recording = f'{ultravox_base_url.rstrip("/")}/api/calls/{quote(str(call_id), safe="")}/recording'
    return {
        'campaign': name,
        'contact_id': str(contact.get('i', '')),
        'phone': number,
        'attempt': attempt,
        'attempt_id': k.attempt_id(name, number, attempt),
        'trunk': trunk,
        'trunk_kind': record.get('kind') or '',
        # the caller id the attempt went out with when recorded, else its trunk's
        'caller_id': str(record.get('from') or caller_ids.get(trunk, '')),
        'call_id': call_id,
        'created_at': iso_ms(record.get('cr') or record.get('t0')) or '',
        'joined_at': record.get('jn') or '',
        'ended_at': record.get('en') or iso_ms(record.get('eo')) or '',
        'state': record.get('st', ''),
        'outcome': record.get('o', ''),
        'end_reason': end_reason,
        'sip_termination_reason': sip_reason,
        'answered_seconds': to_float(record.get('dur')),
        'sip_billed_seconds': to_float(record.get('sip')),
        'agent_billed_seconds': to_float(record.get('agent')),
        'billing_source': record.get('bsrc') or '',
        'billing_final': bool(record.get('bf')),
        'failure_reason': record.get('r') or '',
        'disposition': record.get('dsp') or '',
        'notes': record.get('nt') or '',
        'callback_at': iso_ms(record.get('cb')) or '',
        'voicemail': bool(record.get('vm')),
        'voicemail_left': bool(record.get('vml')),
        'summary': record.get('sum') or '',
        'recording_url': recording,
    }


async def _batch(
    redis: Redis, name: str, config: CampaignConfig, batch: Sequence[tuple[str, str]], **row_args: Any
) -> list[dict[str, Any]]:
    numbers = [number for number, _ in batch]
    progresses = [json.loads(raw) if raw else {} for raw in await redis.hmget(k.campaign_progress(name), numbers)]
    wanted: list[tuple[str, dict[str, Any], int]] = []
    for (number, raw_contact), progress in zip(batch, progresses, strict=True):
        contact = json.loads(raw_contact)
        last = max(to_int(progress.get('a')), to_int(progress.get('c')))
        wanted += [(number, contact, n) for n in range(1, last + 1)]
    rows = []
    for start in range(0, len(wanted), 2000):
        chunk = wanted[start : start + 2000]
        raws = await redis.hmget(k.campaign_attempts(name), [f'{number}:{n}' for number, _, n in chunk])
        for (number, contact, n), raw in zip(chunk, raws, strict=True):
            if raw:
                rows.append(attempt_row(name, number, contact, n, json.loads(raw), config, **row_args))
    return rows


class _ParquetWriter:
    """Rows to a Parquet file beside the output, renamed over it only when complete."""

    def __init__(self, output: Path) -> None:
        try:
            import pyarrow as pa  # noqa: PLC0415  an optional extra
            import pyarrow.parquet as pq  # noqa: PLC0415
        except ImportError:
            raise ParquetUnavailableError from None
        self.pa = pa
        self.schema = pa.schema([(c, getattr(pa, _PARQUET_TYPES.get(c, 'string'))()) for c in ATTEMPT_COLUMNS])
        self.output = output
        fd, name = tempfile.mkstemp(prefix=f'.{output.name}.', suffix='.tmp', dir=output.parent)
        os.close(fd)
        self.tmp = Path(name)
        self.writer = pq.ParquetWriter(str(self.tmp), self.schema, compression='zstd')

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if rows:
            columns = {c: [row[c] for row in rows] for c in ATTEMPT_COLUMNS}
            self.writer.write_table(self.pa.Table.from_pydict(columns, schema=self.schema))

    def commit(self) -> None:
        self.writer.close()
        # a new export stays private to its owner (it holds phone numbers); a replaced one keeps its mode
        with contextlib.suppress(FileNotFoundError):
            self.tmp.chmod(self.output.stat().st_mode & 0o777)
        self.tmp.replace(self.output)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        self.tmp.unlink(missing_ok=True)


async def export_attempts(
    redis: Redis,
    name: str,
    output: Path | IO[str],
    fmt: str = 'csv',
    *,
    caller_ids: Mapping[str, str] | None = None,
    ultravox_base_url: str = 'https://api.ultravox.ai',
) -> int:
    """Write one row per attempt to ``output``; returns the rows written. A file appears whole or not at all.

    ``caller_ids``: trunk name -> caller id, for attempts whose record does not name the one used.
    """
    check_name('campaign', name)
    if fmt not in {'csv', 'jsonl', 'parquet'}:
        raise ValueError(f'export format must be csv, jsonl or parquet, not {fmt!r}')
    raw_config = await redis.hget(k.campaign(name), 'config')
    if not raw_config:
        raise UnknownCampaignError(name)
    config = CampaignConfig.model_validate_json(raw_config)
    writer: _RowWriter | _ParquetWriter
    if fmt == 'parquet':
        if not isinstance(output, (str, Path)):
            raise ValueError('--format parquet writes a file: give --output a path, not -')
        writer = _ParquetWriter(Path(output))
    else:
        kind: Literal['csv', 'jsonl'] = 'csv' if fmt == 'csv' else 'jsonl'
        if isinstance(output, (str, Path)):
            writer = _AtomicWriter(Path(output), kind, ATTEMPT_COLUMNS)
        else:
            writer = _RowWriter(output, kind, ATTEMPT_COLUMNS)
    row_args = {'caller_ids': caller_ids or {}, 'ultravox_base_url': ultravox_base_url}
    written = 0
    try:
        batch: list[tuple[str, str]] = []
        async for number, raw in redis.hscan_iter(k.campaign_contacts(name), count=BATCH):
            batch.append((number, raw))
            if len(batch) >= BATCH:
                rows = await _batch(redis, name, config, batch, **row_args)
                writer.write(rows)
                written, batch = written + len(rows), []
        if batch:
            rows = await _batch(redis, name, config, batch, **row_args)
            writer.write(rows)
            written += len(rows)
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    return written
