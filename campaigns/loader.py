"""Streaming a contacts CSV into a campaign in Redis.

The file is read once, in batches: worker processes check and normalise the rows of a batch
(phonenumbers parsing is the CPU cost) while this process writes earlier batches to Redis, one Lua
script call per batch. Batches are written in file order, so which of two duplicate rows wins and the
line numbers in the rejects file never depend on timing. Memory stays bounded: a handful of batches
are in flight, and duplicates are found by Redis, not by a set of every number seen.

Loads are idempotent per file content (SHA-256): a file already loaded is skipped whole, and re-running
an interrupted load finds its rows in place ("already loaded") instead of reporting duplicates.

A refused load writes nothing: the file's head and header, the first batch of rows, the campaign's
settings (an existing campaign's must match) and the rejects file are all checked before the first
write, and the campaign is created (or paused) in the same atomic step that marks the load started.

The rejects file holds each rejected row whole, after its line and reason, so that it can be fixed
and loaded again as it is (the loader ignores its ``line`` and ``reason`` columns).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import itertools
import json
import os
import re
import sys
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any, TextIO

import structlog
from phonenumbers import re_util
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from campaigns.config_match import check_same_settings
from campaigns.csvfile import CheckedBatch, CsvError, CsvReader, Layout, RowChecker, open_csv
from campaigns.lifecycle import CampaignConflictError
from campaigns.prompt_vars import prompt_columns
from dialer import constants as k
from dialer.models import CampaignConfig, CampaignState
from dialer.outbox import NO_OUTBOX, Outbox
from dialer.scripts import Scripts, register


if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterator
    from pathlib import Path

    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript


log = structlog.get_logger(__name__)

#: Below this size the rows are checked in this process: starting workers costs more than it saves.
PARALLEL_MIN_BYTES = 2 * 1024 * 1024
#: Batches checked ahead of the Redis writer, per worker (bounds memory, keeps workers busy).
_AHEAD_PER_WORKER = 2

#: fork where it exists: workers start at once and never re-import the caller's main module (which
#: spawn does, breaking scripts without a ``__main__`` guard). The loader starts no threads of its own.
_START_METHOD = 'fork' if sys.platform.startswith('linux') else 'spawn'

_E164 = re.compile(r'\+[1-9]\d{6,14}')
_FORMULA_START = ('=', '+', '-', '@', '\t', '\r')
#: Digits and the punctuation of written phone numbers: no function name, reference or DDE call.
_INERT = re.compile(r'[0-9 +\-().]*')

Row = tuple[int, list[str]]
#: A rejected row: (line, reason, message, fields as read)
_Reject = tuple[int, str, str, list[str]]


@dataclass
class LoadSummary:
    rows: int = 0
    accepted: int = 0
    #: Rows whose contact an earlier, interrupted run of the same file already stored.
    already_loaded: int = 0
    rejected: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    digest: str = ''
    #: The same file (by content) was loaded completely before; nothing was read or written.
    skipped_whole_file: bool = False
    #: Columns a system prompt does not reference (see campaigns/prompt_vars.py).
    unused_columns: list[str] = field(default_factory=list)


def file_digest(path: Path) -> str:
    with path.open('rb') as handle:
        return hashlib.file_digest(handle, 'sha256').hexdigest()


def neutralise(value: str) -> str:
    """Keep a spreadsheet from running a free-text cell of the rejects file as a formula (CSV injection)."""
    if value.startswith(_FORMULA_START) and not _E164.fullmatch(value):
        return "'" + value
    return value


def neutralise_identifier(value: str) -> str:
    """A phone, contact id or time zone cell as written, so that the fixed file loads again, unless it
    could run as a formula: such a cell (letters, "=", "@" ...) must be retyped anyway."""
    if value.startswith(_FORMULA_START) and not _INERT.fullmatch(value):
        return "'" + value
    return value


class RejectsFileError(ValueError):
    """The rejects file cannot be written (checked before anything is written to Redis)."""


class RejectsWriter:
    """The rejects CSV: ``line,reason`` then the row's own columns as read, written as rows are rejected.

    Loading it again ignores ``line`` and ``reason``; a rejects file's own ``line`` and ``reason`` are
    not repeated. Free-text cells are neutralised against formulas; phone, id and time zone cells are
    kept as written where they cannot run as one.
    """

    def __init__(self, path: Path, layout: Layout) -> None:
        self.path = path
        self._kept = [i for i in range(layout.width) if i not in layout.ignored]
        self._identifiers = {i for i in (layout.phone, layout.contact_id, layout.timezone) if i is not None}
        self._width = layout.width
        try:
            self._handle: TextIO = path.open('w', newline='', encoding='utf-8', errors='replace')
        except OSError as exc:
            raise RejectsFileError(
                f'{path}: cannot write the rejects file: {exc.strerror or exc} (see --rejects)'
            ) from None
        self._writer = csv.writer(self._handle)
        self._writer.writerow(['line', 'reason', *(layout.header[i] for i in self._kept)])

    def _cells(self, fields: list[str]) -> list[str]:
        cells = [
            (neutralise_identifier if i in self._identifiers else neutralise)(fields[i])
            for i in self._kept
            if i < len(fields)
        ]
        # a ragged row's extra cells are kept too: the row is fixed by looking at all of it
        cells += [neutralise(cell) for cell in fields[self._width :]]
        return cells

    def write(self, rejects: list[_Reject]) -> None:
        self._writer.writerows(
            [str(line), neutralise(message), *self._cells(fields)] for line, _, message, fields in rejects
        )

    def close(self) -> None:
        self._handle.close()


# --- checking rows, here or in worker processes ---------------------------------------------------

_worker_checker: RowChecker | None = None


def _init_worker(checker: RowChecker) -> None:
    global _worker_checker  # noqa: PLW0603  one checker per worker process, set once at start
    _worker_checker = checker
    re_util.enable_pattern_cache()


def _check_in_worker(rows: list[Row]) -> CheckedBatch:
    assert _worker_checker is not None
    return _worker_checker.check_batch(rows)


def default_workers(size: int) -> int:
    if size < PARALLEL_MIN_BYTES:
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(cpus, 8)


class _Checkers:
    """Checks batches in order, in a process pool when ``workers`` > 0, otherwise inline."""

    def __init__(self, checker: RowChecker, workers: int) -> None:
        self.checker = checker
        self.ahead = max(1, workers * _AHEAD_PER_WORKER)
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:
            self._pool = ProcessPoolExecutor(
                workers, mp_context=get_context(_START_METHOD), initializer=_init_worker, initargs=(checker,)
            )
        # the rows stay here: workers answer with positions, which keeps what they send back small
        self._pending: deque[tuple[list[Row], Awaitable[CheckedBatch]]] = deque()

    def submit(self, rows: list[Row]) -> None:
        future: Awaitable[CheckedBatch]
        if self._pool is None:
            done: asyncio.Future[CheckedBatch] = asyncio.get_running_loop().create_future()
            done.set_result(self.checker.check_batch(rows))
            future = done
        else:
            future = asyncio.wrap_future(self._pool.submit(_check_in_worker, rows))
        self._pending.append((rows, future))

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.ahead

    def __len__(self) -> int:
        return len(self._pending)

    async def next(self) -> tuple[list[Row], CheckedBatch]:
        rows, future = self._pending.popleft()
        return rows, await future

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


# --- writing to Redis --------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Writer:
    """Writes checked batches with the add_contacts script and keeps the tallies."""

    def __init__(self, redis: Redis, config: CampaignConfig, rejects: RejectsWriter, layout: Layout) -> None:
        self.layout = layout
        self.script: AsyncScript = register(redis, 'add_contacts')
        name = config.name
        self.keys = [
            k.CLOCK_OFFSET,
            k.campaign(name),
            k.campaign_contacts(name),
            k.campaign_ids(name),
            k.campaign_due(name),
        ]
        self.check_ids = '0' if layout.contact_id is None else '1'
        self.rejects = rejects
        self.summary = LoadSummary()
        self.reasons: Counter[str] = Counter()

    @staticmethod
    def _rejected(row: Row, reason: str, detail: str) -> _Reject:
        return row[0], reason, f'{reason}: {detail}' if detail else reason, row[1]

    async def write(self, rows: list[Row], batch: CheckedBatch) -> None:
        rejected = [self._rejected(rows[position], reason, detail) for position, reason, detail in batch.rejected]
        if batch.accepted:
            # [number added, then (1-based row in the payload, code) for each row not added]
            reply = await self.script(keys=self.keys, args=[self.check_ids, batch.payload])
            self.summary.accepted += int(reply[0])
            for index, raw in zip(reply[1::2], reply[2::2], strict=True):
                row = rows[batch.accepted[int(index) - 1]]
                code = _text(raw)
                if code == 'already':
                    self.summary.already_loaded += 1
                elif code.startswith('dup_id:'):
                    raw_id = self.layout.raw_phone_and_id(row[1])[1].strip()
                    detail = f'contact_id {raw_id!r} is already used on line {code[7:]}'
                    rejected.append(self._rejected(row, 'duplicate contact_id', detail))
                else:
                    detail = f'same number as line {code.removeprefix("dup:")}'
                    rejected.append(self._rejected(row, 'duplicate phone', detail))
        if rejected:
            rejected.sort(key=lambda r: r[0])
            self.rejects.write(rejected)
            self.reasons.update(r[1] for r in rejected)
        self.summary.rows += len(rows)
        self.summary.rejected += len(rejected)


# --- the load ------------------------------------------------------------------------------------


async def _load_status(redis: Redis, name: str, digest: str) -> dict[str, Any] | None:
    raw = await redis.hget(k.campaign_loads(name), digest)
    return json.loads(raw) if raw else None


async def _set_load_status(redis: Redis, name: str, digest: str, status: dict[str, Any]) -> None:
    await redis.hset(k.campaign_loads(name), digest, json.dumps(status, separators=(',', ':')))


def _progress_bar() -> Progress:
    return Progress(
        '[progress.description]{task.description}',
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


async def load_contacts(
    redis: Redis,
    config: CampaignConfig,
    csv_path: Path,
    *,
    rejects_path: Path,
    progress: bool = False,
    batch_size: int = 2000,
    workers: int | None = None,
    paused: bool = False,
    outbox: Outbox = NO_OUTBOX,
) -> LoadSummary:
    """Load a contacts CSV into ``config``'s campaign (created if new); see the module docstring.

    Raises ``CsvError`` for a file that cannot be loaded: before anything is written when the problem
    is in the file's head, header or first batch; after the rows before it were loaded (and with the
    load recorded as failed) when it is further down. ``CampaignConflictError`` (nothing written) when
    the campaign exists with other settings. ``workers``: parser processes (None = one per CPU for
    files over a few MB, 0 = check rows in this process). ``paused``: the campaign is created paused
    (or paused, if it is active) before any contact is added. A system prompt's ``{{placeholders}}``
    must name columns of the file (``PromptError`` otherwise); columns it does not use are listed in
    the summary's ``unused_columns``. ``outbox``: where the campaign announces itself completed when
    the load leaves it nothing to dial (result webhooks).
    """
    with open_csv(csv_path) as reader:
        rows = reader.rows()
        # A broken row in the first batch (every small bad file) fails before anything is written.
        first = list(itertools.islice(rows, batch_size))
        batches = itertools.chain([first] if first else [], _batches(rows, batch_size))
        stored = await redis.hget(k.campaign(config.name), 'config')
        if stored is not None:
            check_same_settings(CampaignConfig.model_validate_json(stored), config)
        now_ms = await Scripts(redis).now_ms()
        digest = file_digest(csv_path)  # not in a thread: a thread would be forked with the workers
        previous = await _load_status(redis, config.name, digest)
        unused = prompt_columns(config, reader.path, reader.layout)
        if stored is not None and previous is not None and previous.get('status') == 'done':
            log.debug('contacts_file_already_loaded', campaign=config.name, file=csv_path.name, digest=digest)
            return LoadSummary(
                already_loaded=int(previous.get('accepted', 0)),
                digest=digest,
                skipped_whole_file=True,
                unused_columns=unused,
            )
        checker = row_checker(config, reader.layout, now_ms)
        workers = default_workers(reader.size) if workers is None else workers
        rejects = RejectsWriter(rejects_path, reader.layout)  # an unwritable path fails here, before any write
        try:
            writer = _Writer(redis, config, rejects, reader.layout)
            finish = _Finish(redis, config, reader.path.name, digest, previous, writer, outbox)
            await _open_load(redis, config, stored, digest, reader.path.name, paused=paused)
            try:
                await _stream(reader, batches, writer, _Checkers(checker, workers), progress)
            except CsvError as exc:
                await finish(failure=(exc.line, exc.message))
                raise
            except Exception as exc:
                # Redis went away or a bug: record what is known if Redis still answers, then re-raise
                with contextlib.suppress(Exception):
                    await finish(failure=(None, f'load interrupted: {exc}'))
                raise
            summary = await finish()
            summary.unused_columns = unused
            return summary
        finally:
            rejects.close()


def row_checker(config: CampaignConfig, layout: Layout, now_ms: int) -> RowChecker:
    """The checker of ``config``'s rows: contacts are first due from ``start_at`` or now, the later."""
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    start = max(now, config.start_at) if config.start_at is not None else now
    return RowChecker(
        layout, config.default_region, config.default_timezone, config.hours, start, frozenset(config.number_types)
    )


async def _open_load(
    redis: Redis, config: CampaignConfig, stored: str | None, digest: str, file: str, *, paused: bool
) -> None:
    """The load's first write, atomic: create the campaign (or pause it) and mark the load started."""
    name = config.name
    state = CampaignState.PAUSED if paused else CampaignState.ACTIVE
    keys = [k.CLOCK_OFFSET, k.campaign(name), k.CAMPAIGNS, k.trunk_campaigns(config.trunk), k.campaign_loads(name)]
    status = json.dumps({'status': 'loading', 'file': file}, separators=(',', ':'))
    args = [name, stored or '', config.model_dump_json(), state.value, digest, status]
    reply = _text(await register(redis, 'open_load')(keys=keys, args=args))
    if reply.startswith('error:'):
        raise CampaignConflictError(
            f'campaign {name!r} was created or changed by someone else while this load was being checked; '
            'run the load again'
        )


@dataclass
class _Finish:
    """Records a load's outcome: the loads hash entry, the rejected counter, the end of 'loading'."""

    redis: Redis
    config: CampaignConfig
    file: str
    digest: str
    previous: dict[str, Any] | None
    writer: _Writer
    outbox: Outbox

    async def __call__(self, failure: tuple[int | None, str] | None = None) -> LoadSummary:
        name = self.config.name
        summary = self.writer.summary
        summary.digest = self.digest
        summary.rejects_by_reason = dict(self.writer.reasons)
        # Each file's rejects count once in the campaign's counter, however often it is re-run.
        counted = int((self.previous or {}).get('rejected', 0))
        if summary.rejected != counted:
            await self.redis.hincrby(k.campaign(name), 'rejected', summary.rejected - counted)
        status: dict[str, Any] = {
            'status': 'done' if failure is None else 'failed',
            'file': self.file,
            'rows': summary.rows,
            'accepted': summary.accepted + summary.already_loaded,
            'rejected': summary.rejected,
            'rejects_by_reason': summary.rejects_by_reason,
        }
        if failure is not None:
            status['line'], status['message'] = failure
        await _set_load_status(self.redis, name, self.digest, status)
        await Scripts(self.redis, self.outbox).lifecycle(name, self.config.trunk, 'load_end', self.digest)
        # the command prints the summary itself: the log line is for debugging, or for a failure
        (log.debug if failure is None else log.warning)(
            'contacts_loaded' if failure is None else 'contacts_load_failed',
            campaign=name,
            file=self.file,
            rows=summary.rows,
            accepted=summary.accepted,
            already_loaded=summary.already_loaded,
            rejected=summary.rejected,
            **({} if failure is None else {'line': failure[0], 'error': failure[1]}),
        )
        return summary


def _batches(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    try:
        for row in rows:
            chunk.append(row)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    except CsvError:
        # the rows before the broken one are still loaded, so a fixed file completes the load
        if chunk:
            yield chunk
        raise
    if chunk:
        yield chunk


async def _stream(
    reader: CsvReader, batches: Iterator[list[Row]], writer: _Writer, checkers: _Checkers, progress: bool
) -> None:
    bar = _progress_bar() if progress else None
    task = bar.add_task(f'loading {reader.path.name}', total=reader.size) if bar else None
    if bar:
        bar.start()
    fatal: CsvError | None = None
    try:
        try:
            for chunk in batches:
                checkers.submit(chunk)
                while checkers.full:
                    await writer.write(*await checkers.next())
                    if bar and task is not None:
                        bar.update(task, completed=reader.position())
        except CsvError as exc:
            fatal = exc
        while len(checkers):
            await writer.write(*await checkers.next())
        if bar and task is not None:
            bar.update(task, completed=reader.position())
    finally:
        checkers.close()
        if bar:
            bar.stop()
    if fatal is not None:
        raise fatal
