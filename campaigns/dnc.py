"""The do-not-call list: a Redis SET of E.164 numbers that no campaign ever dials.

Numbers are normalised before they are stored, so "(415) 555-2671" on the list blocks a contact
written "+1 415 555 2671". Files are read as a stream and written in batches, so a list of millions of
numbers needs neither much memory nor one round trip per number.
"""

from __future__ import annotations

import csv
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from campaigns.numbers import InvalidNumber, normalise_number
from dialer import constants


if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
    from pathlib import Path

    from redis.asyncio import Redis


BATCH = 1000
#: Column names (case-insensitive) that hold the number when a DNC file is a CSV with a header.
NUMBER_COLUMNS = ('phone', 'number', 'phone_number', 'phonenumber', 'msisdn', 'e164', 'mobile', 'telephone')
#: Invalid lines kept for the report; the count beyond this is still exact.
MAX_REPORTED_INVALID = 100
#: ``dnc list`` sorts at most about this many numbers at once; a longer list is read in prefix groups.
LIST_CHUNK = 200_000
#: Length of the prefix a long list is grouped by ("+1212555": at most 10,000 US numbers each).
LIST_PREFIX = 8


@dataclass
class ImportSummary:
    """What importing a DNC file did. ``invalid`` holds (line number, reason) for the first lines."""

    added: int = 0
    already_listed: int = 0
    invalid_count: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)

    @property
    def valid(self) -> int:
        return self.added + self.already_listed

    def reject(self, line: int, reason: str) -> None:
        self.invalid_count += 1
        if len(self.invalid) < MAX_REPORTED_INVALID:
            self.invalid.append((line, reason))


def _normalise_all(numbers: Iterable[str], region: str) -> Iterator[str]:
    for position, raw in enumerate(numbers, start=1):
        try:
            yield normalise_number(raw, region)
        except InvalidNumber as exc:
            raise InvalidNumber(f'number #{position} ({raw!r}): {exc.reason}') from None


def _batches(numbers: Iterable[str]) -> Iterator[list[str]]:
    iterator = iter(numbers)
    while batch := list(itertools.islice(iterator, BATCH)):
        yield batch


async def add_numbers(redis: Redis, numbers: Iterable[str], region: str) -> int:
    """Put numbers on the list; returns how many were not on it yet.

    Every number is checked before any is written, so a typo adds nothing (InvalidNumber names it).
    """
    normalised = list(_normalise_all(numbers, region))
    added = 0
    for batch in _batches(normalised):
        added += await redis.sadd(constants.DNC, *batch)
    return added


async def remove_numbers(redis: Redis, numbers: Iterable[str], region: str) -> int:
    """Take numbers off the list; returns how many were on it."""
    normalised = list(_normalise_all(numbers, region))
    removed = 0
    for batch in _batches(normalised):
        async with redis.pipeline(transaction=True) as pipe:
            pipe.srem(constants.DNC, *batch)
            # an opt-out's consent evidence lives exactly as long as the number is on the list
            pipe.hdel(constants.DNC_EVIDENCE, *batch)
            removed += (await pipe.execute())[0]
    return removed


async def is_blocked(redis: Redis, number: str) -> bool:
    """Whether an E.164 number is on the list."""
    return bool(await redis.sismember(constants.DNC, number))


async def check_number(redis: Redis, raw: str, region: str) -> tuple[str, bool]:
    """``raw`` normalised to E.164 and whether it is on the list; InvalidNumber names a bad number."""
    try:
        number = normalise_number(raw, region)
    except InvalidNumber as exc:
        raise InvalidNumber(f'{raw!r} is not a valid phone number: {exc.reason}') from None
    return number, await is_blocked(redis, number)


async def listed_numbers(redis: Redis, *, chunk: int = LIST_CHUNK) -> AsyncIterator[str]:
    """Every number on the list, in sorted order, holding at most about ``chunk`` of them in memory.

    A list that fits in a chunk is read once (SSCAN) and sorted. A longer one is first counted by
    number prefix, then read once per group of adjacent prefixes holding about ``chunk`` numbers,
    each group sorted on its own: the order is the same on every run, and Redis is only ever asked
    for small SSCAN steps, never a server-side SORT of the whole set.
    """
    if await redis.scard(constants.DNC) <= chunk:
        numbers = {number async for number in redis.sscan_iter(constants.DNC, count=BATCH)}
        for number in sorted(numbers):
            yield number
        return
    counts: dict[str, int] = defaultdict(int)
    async for number in redis.sscan_iter(constants.DNC, count=BATCH):
        counts[number[:LIST_PREFIX]] += 1
    group: set[str] = set()
    size = 0
    prefixes = sorted(counts)
    for index, prefix in enumerate(prefixes):
        group.add(prefix)
        size += counts[prefix]
        if size < chunk and index < len(prefixes) - 1:
            continue
        # SSCAN may return a member twice; the set keeps each once
        numbers = {n async for n in redis.sscan_iter(constants.DNC, count=BATCH) if n[:LIST_PREFIX] in group}
        for number in sorted(numbers):
            yield number
        group, size = set(), 0


async def blocked_among(redis: Redis, numbers: Sequence[str]) -> set[str]:
    """The E.164 numbers among ``numbers`` that are on the list, in one round trip per batch."""
    blocked: set[str] = set()
    for start in range(0, len(numbers), BATCH):
        batch = list(numbers[start : start + BATCH])
        flags = await redis.smismember(constants.DNC, batch)
        blocked.update(number for number, flag in zip(batch, flags, strict=True) if flag)
    return blocked


async def import_file(redis: Redis, path: Path, region: str) -> ImportSummary:
    """Add every number in a file to the list.

    The file holds one number per line, or is a CSV whose header names a phone column (see
    NUMBER_COLUMNS). Blank lines and lines starting with ``#`` are skipped. Invalid lines are reported
    with their line numbers and not added; the valid ones are added in batches of BATCH.
    """
    summary = ImportSummary()
    batch: list[str] = []

    async def flush() -> None:
        added: int = await redis.sadd(constants.DNC, *batch)
        summary.added += added
        summary.already_listed += len(batch) - added
        batch.clear()

    # A stray non-UTF-8 byte spoils only its own line (reported invalid), not the whole import.
    with path.open(encoding='utf-8-sig', errors='replace', newline='') as handle:
        for line, raw in _numbers_in(handle, path):
            try:
                batch.append(normalise_number(raw, region))
            except InvalidNumber as exc:
                summary.reject(line, exc.reason)
                continue
            if len(batch) >= BATCH:
                await flush()
    if batch:
        await flush()
    return summary


def _numbers_in(lines: Iterable[str], path: Path) -> Iterator[tuple[int, str]]:
    """(line number, raw number) for every line of a DNC file that is not blank or a comment."""
    iterator = iter(lines)
    for line, text in enumerate(iterator, start=1):
        stripped = text.strip()
        if not stripped or stripped.startswith('#'):
            continue
        column = _number_column(stripped, path, line)
        if column is None:
            yield line, stripped
            yield from _plain_lines(iterator, line)
        else:
            yield from _csv_rows(iterator, line, column)
        return


def _number_column(first: str, path: Path, line: int) -> int | None:
    """The index of the phone column when ``first`` is a CSV header, else None (a plain list)."""
    header = [cell.strip().lower() for cell in next(csv.reader([first]))]
    matches = [i for i, name in enumerate(header) if name in NUMBER_COLUMNS]
    if not matches:
        if len(header) > 1 and not any(any(ch.isdigit() for ch in cell) for cell in header):
            raise ValueError(
                f'{path}:{line}: CSV header has no phone column (expected one of {", ".join(NUMBER_COLUMNS)})'
            )
        return None
    if len(matches) > 1:
        names = ', '.join(header[i] for i in matches)
        raise ValueError(f'{path}:{line}: CSV header has several phone columns ({names}); keep one')
    return matches[0]


def _plain_lines(lines: Iterator[str], last_line: int) -> Iterator[tuple[int, str]]:
    for line, text in enumerate(lines, start=last_line + 1):
        stripped = text.strip()
        if stripped and not stripped.startswith('#'):
            yield line, stripped


def _csv_rows(lines: Iterator[str], header_line: int, column: int) -> Iterator[tuple[int, str]]:
    reader = csv.reader(lines)
    for row in reader:
        # reader.line_num counts physical lines read so far, which keeps quoted multi-line cells honest.
        line = header_line + reader.line_num
        if not row or not any(cell.strip() for cell in row) or row[0].lstrip().startswith('#'):
            continue
        # The line a row starts on is the one a user looks for; a multi-line row ends on reader.line_num.
        yield line - _extra_lines(row), row[column] if column < len(row) else ''


def _extra_lines(row: Sequence[str]) -> int:
    return sum(cell.count('\n') for cell in row)
