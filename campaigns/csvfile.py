"""Reading and checking a contacts CSV, without Redis: the file, its header, then row by row.

Whole-file problems (no such file, binary data, not UTF-8, no usable header, malformed CSV) raise
``CsvError``; the loader checks the header before it writes anything. Problems of one row are returned
as a ``Rejected`` with a reason, so one bad row never stops a million good ones.

Line numbers are the physical line on which a row starts, as an editor shows them, even when an
earlier quoted field spans several lines.

Sizes are bounded before anything is built from them, so a hostile or broken file costs little
time and memory: the header row (``MAX_HEADER_BYTES``, ``MAX_COLUMNS``), each physical line
(``MAX_LINE_CHARS``, whole file refused), each cell (``MAX_FIELD_BYTES``) and each contact's template
context (``MAX_CONTEXT_BYTES``; the row is rejected).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Self

from campaigns.numbers import InvalidNumber, normalise_typed
from campaigns.policy import NeverCallable, NoTimezone, contact_zones, initial_due
from dialer.models import DEFAULT_NUMBER_TYPES, ContactRecord, check_timezone


if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime
    from pathlib import Path
    from types import TracebackType

    from dialer.models import CallingHours


#: Only this much is inspected for binary content; a NUL later is caught by the CSV reader.
SNIFF_BYTES = 64 * 1024
#: A longer cell is a broken export or an abuse of the template context, never a contact detail.
MAX_FIELD_BYTES = 8 * 1024
#: The header row names the columns: this is far more than any real one needs.
MAX_HEADER_BYTES = 64 * 1024
MAX_COLUMNS = 500
#: A physical line longer than this cannot hold a contact row (see MAX_CONTEXT_BYTES): not a contacts CSV.
MAX_LINE_CHARS = 1024 * 1024
#: Template context of one contact (the columns without a role: names and values, UTF-8); sent with
#: every call it makes, so it stays small.
MAX_CONTEXT_BYTES = 16 * 1024
#: The first two columns of a rejects file (see campaigns/loader.py): ignored when it is loaded again.
REJECTS_COLUMNS = ('line', 'reason')

PHONE_ALIASES = (
    'phone',
    'phone_number',
    'phonenumber',
    'number',
    'mobile',
    'mobile_number',
    'telephone',
    'tel',
    'msisdn',
)
ID_ALIASES = ('contact_id', 'external_id', 'id', 'contact')
NAME_ALIASES = ('name',)
TIMEZONE_ALIASES = ('timezone', 'tz', 'time_zone')

_SEPARATORS = re.compile(r'[\s-]+')


class CsvError(ValueError):
    """A CSV that cannot be loaded at all; names the file and, where it helps, the line."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f'{self.path}: line {line}: ' if line is not None else f'{self.path}: '
        super().__init__(where + message)


# --- the header ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """Which column holds what; every column that is not a known role becomes template context."""

    header: tuple[str, ...]
    phone: int
    contact_id: int | None = None
    name: int | None = None
    timezone: int | None = None
    #: (key as written in the header, column index)
    context: tuple[tuple[str, int], ...] = ()
    #: Columns read and ignored: a rejects file's ``line`` and ``reason``.
    ignored: tuple[int, ...] = ()

    @property
    def width(self) -> int:
        return len(self.header)

    def raw_phone_and_id(self, fields: list[str]) -> tuple[str, str]:
        """The phone and contact id cells as written (empty when the row is too short)."""
        phone = fields[self.phone] if self.phone < len(fields) else ''
        at = self.contact_id
        return phone, (fields[at] if at is not None and at < len(fields) else '')


def _role_key(name: str) -> str:
    return _SEPARATORS.sub('_', name.strip().lower())


def _find_role(path: Path | str, names: list[str], aliases: tuple[str, ...], role: str) -> int | None:
    found = [i for i, name in enumerate(names) if _role_key(name) in aliases]
    if len(found) > 1:
        listed = ' and '.join(repr(names[i]) for i in found)
        raise CsvError(path, 1, f'ambiguous {role} column: {listed} both name it (keep only one)')
    return found[0] if found else None


def parse_header(path: Path | str, fields: list[str], line: int = 1) -> Layout:
    """Check a header row and map its columns to roles."""
    names = [name.strip() for name in fields]
    if len(names) > MAX_COLUMNS:
        raise CsvError(path, line, f'{len(names)} columns in the header; at most {MAX_COLUMNS} are allowed')
    seen: dict[str, int] = {}
    for column, name in enumerate(names, 1):
        if not name:
            raise CsvError(path, line, f'empty header name in column {column}')
        folded = name.casefold()
        if folded in seen:
            raise CsvError(path, line, f'duplicate header {name!r} (columns {seen[folded]} and {column})')
        seen[folded] = column
    phone = _find_role(path, names, PHONE_ALIASES, 'phone')
    if phone is None:
        hint = ''
        if len(names) == 1 and (';' in names[0] or '\t' in names[0]):
            hint = '; the columns seem separated by ";" or tabs, but only commas separate columns'
        raise CsvError(path, line, f'no phone column (name one column {", ".join(PHONE_ALIASES)}{hint})')
    contact_id = _find_role(path, names, ID_ALIASES, 'contact_id')
    name_at = _find_role(path, names, NAME_ALIASES, 'name')
    timezone = _find_role(path, names, TIMEZONE_ALIASES, 'timezone')
    # a rejects file starts with its own line and reason: loading the fixed file again ignores them
    ignored = (0, 1) if tuple(n.casefold() for n in names[:2]) == REJECTS_COLUMNS and len(names) > 2 else ()
    roles = {phone, contact_id, name_at, timezone, *ignored}
    context = tuple((names[i], i) for i in range(len(names)) if i not in roles)
    return Layout(tuple(names), phone, contact_id, name_at, timezone, context, ignored)


# --- the file -----------------------------------------------------------------------------------


def _looks_like_utf16(head: bytes) -> bool:
    # ASCII text in UTF-16 has a NUL in every other byte.
    pairs = len(head) // 2
    return pairs > 0 and max(head[0::2].count(0), head[1::2].count(0)) > pairs * 0.4


def _has_surrogates(text: str) -> bool:
    # The file is read with errors='surrogateescape': a byte that is not UTF-8 becomes a lone surrogate.
    if text.isascii():
        return False
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        return True
    return False


class CsvReader:
    """An open contacts CSV whose header has been checked; iterate ``rows()`` for (line, fields)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._in_header = True
        self._raw = self._open_binary(path)
        try:
            self._check_head()
            self._text = io.TextIOWrapper(self._raw, encoding='utf-8-sig', errors='surrogateescape', newline='')
            # strict: a quote left open at the end of the file is an error, not a giant last field
            self._reader = csv.reader(self._lines(), strict=True)
            self.layout = self._read_header()
        except BaseException:
            self._raw.close()
            raise

    def _open_binary(self, path: Path) -> io.BufferedReader:
        try:
            if path.is_dir():
                raise CsvError(path, None, 'is a directory, not a CSV file')
            raw = path.open('rb')
            self.size = path.stat().st_size
        except FileNotFoundError:
            raise CsvError(path, None, 'file not found') from None
        except PermissionError:
            raise CsvError(path, None, 'cannot read the file: permission denied') from None
        except OSError as exc:
            raise CsvError(path, None, f'cannot read the file: {exc.strerror or exc}') from None
        return raw

    def _check_head(self) -> None:
        try:
            head = self._raw.read(SNIFF_BYTES)
            self._raw.seek(0)
        except OSError as exc:
            raise CsvError(self.path, None, f'cannot read the file: {exc.strerror or exc}') from None
        if not head:
            raise CsvError(self.path, None, 'empty file (expected a header row naming the columns)')
        if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
            raise CsvError(self.path, None, 'not UTF-8 text (it is UTF-32; save it as UTF-8)')
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or (b'\0' in head and _looks_like_utf16(head)):
            raise CsvError(self.path, None, 'not UTF-8 text (it is UTF-16; save it as UTF-8)')
        if b'\0' in head:
            raise CsvError(self.path, None, 'binary file, not CSV text (it contains NUL bytes)')

    def _lines(self) -> Iterator[str]:
        # Lines are read with a length cap, so a giant line is refused before it is held in memory.
        readline = self._text.readline
        number = header_chars = 0
        while True:
            limit = MAX_HEADER_BYTES if self._in_header else MAX_LINE_CHARS
            line = readline(limit + 1)
            if not line:
                return
            number += 1
            if self._in_header:
                header_chars += len(line)
                if header_chars > MAX_HEADER_BYTES:
                    raise CsvError(self.path, 1, _header_too_long())
            elif len(line) > limit:
                raise CsvError(
                    self.path,
                    number,
                    f'line longer than {MAX_LINE_CHARS // (1024 * 1024)} MiB characters: not a contacts row '
                    '(an unclosed quote, or not a contacts CSV?)',
                )
            # Python's csv reader accepts NUL; a NUL in a text file means binary data or a broken export.
            if '\0' in line:
                raise CsvError(self.path, number, 'NUL byte in the file (binary data, not CSV text)')
            yield line

    def _read_header(self) -> Layout:
        for line, fields in self.rows(skip_empty_cells=False):
            joined = ''.join(fields)
            if _has_surrogates(joined):
                raise CsvError(
                    self.path, None, 'not UTF-8 text (the header row is in another encoding; save it as UTF-8)'
                )
            if len(joined.encode('utf-8')) + len(fields) > MAX_HEADER_BYTES:
                raise CsvError(self.path, line, _header_too_long())
            layout = parse_header(self.path, fields, line)
            self._in_header = False
            return layout
        raise CsvError(self.path, None, 'empty file (expected a header row naming the columns)')

    def rows(self, *, skip_empty_cells: bool = True) -> Iterator[tuple[int, list[str]]]:
        """(physical line where the row starts, fields); blank lines are skipped."""
        reader = self._reader
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise self._fatal(exc, start) from None
            except OSError as exc:
                raise CsvError(self.path, start, f'cannot read the file: {exc.strerror or exc}') from None
            # a blank line, or a row of empty cells as spreadsheets export them
            if not fields or (skip_empty_cells and not ''.join(fields).strip()):
                continue
            yield start, fields

    def _fatal(self, exc: csv.Error, start: int) -> CsvError:
        text = str(exc)
        if 'unexpected end of data' in text:
            return CsvError(self.path, start, 'a quoted field in the row starting here is never closed')
        if 'field limit' in text:
            return CsvError(
                self.path, start, f'field longer than {csv.field_size_limit()} characters (an unclosed quote?)'
            )
        return CsvError(self.path, self._reader.line_num, f'malformed CSV: {text}')

    def position(self) -> int:
        """Bytes read so far (for progress)."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _header_too_long() -> str:
    return f'header row longer than {MAX_HEADER_BYTES // 1024} KiB (is the first row a header naming the columns?)'


def open_csv(path: Path) -> CsvReader:
    """Open a contacts CSV and check everything up to its header; raises ``CsvError``."""
    return CsvReader(path)


# --- rows ---------------------------------------------------------------------------------------


class Accepted(NamedTuple):
    line: int
    number: str
    contact_id: str
    #: The contact record's JSON, UTF-8 encoded.
    record: bytes
    due_ms: int
    #: The time zones whose calling hours apply to it.
    zones: tuple[str, ...] = ()


class Rejected(NamedTuple):
    line: int
    reason: str
    detail: str
    #: As written in the file.
    phone: str
    raw_id: str

    @property
    def message(self) -> str:
        return f'{self.reason}: {self.detail}' if self.detail else self.reason


class CheckedBatch(NamedTuple):
    """A batch's verdicts in a compact form: cheap to send back from a worker process.

    The caller still holds the batch's rows, so rows are referred to by their position in it.
    """

    #: The accepted rows as the add_contacts script reads them (see ``pack_contact``).
    payload: bytes
    #: Positions of the accepted rows, in the order of ``payload``.
    accepted: list[int]
    #: (position, reason, detail) of each rejected row.
    rejected: list[tuple[int, str, str]]


def pack_contact(number: str, line: int, due_ms: int, contact_id: str, record: bytes) -> bytes:
    """One contact for the add_contacts script: ``number line due id_bytes record_bytes `` then the id
    and the record. One argument per batch instead of five per row: redis-py packs each argument in
    Python, which cost the loader more than checking the rows."""
    raw_id = contact_id.encode()
    return b'%s %d %d %d %d %s%s' % (number.encode(), line, due_ms, len(raw_id), len(record), raw_id, record)


_DUE_CACHE_MAX = 10_000
DEFAULT_TYPES = frozenset(DEFAULT_NUMBER_TYPES)


def _context_bytes(context: dict[str, str]) -> int:
    chars = sum(len(key) + len(value) for key, value in context.items())
    if chars * 4 <= MAX_CONTEXT_BYTES:  # UTF-8 takes at most 4 bytes a character: no need to encode
        return chars
    return sum(len(key.encode()) + len(value.encode('utf-8', 'surrogateescape')) for key, value in context.items())


@dataclass(frozen=True)
class RowChecker:
    """Turns one CSV row into a contact record and its first due time, or a reject reason.

    Picklable, so that worker processes can check rows in parallel with the same settings.
    """

    layout: Layout
    region: str
    default_timezone: str | None
    hours: CallingHours
    #: Contacts are first due at the first callable instant from this one (``start_at`` or now).
    now: datetime
    #: Number types accepted (phonenumbers' names, lower-case); other numbers are rejected.
    number_types: frozenset[str] = DEFAULT_TYPES
    #: zones -> due ms, or the NeverCallable message; a few zone sets cover most contacts.
    _due: dict[tuple[str, ...], int | str] = field(default_factory=dict, compare=False, repr=False)

    def check(self, line: int, fields: list[str]) -> Accepted | Rejected:  # noqa: PLR0911
        layout = self.layout
        phone, raw_id = layout.raw_phone_and_id(fields)
        if len(fields) != layout.width:
            detail = f'{len(fields)} fields, the header has {layout.width}'
            return Rejected(line, 'ragged row', detail, phone, raw_id)
        longest = max(map(len, fields))
        if longest > MAX_FIELD_BYTES // 4 and any(
            len(f.encode('utf-8', 'surrogateescape')) > MAX_FIELD_BYTES for f in fields
        ):
            return Rejected(line, 'field too long', f'a field is over {MAX_FIELD_BYTES // 1024} KiB', phone, raw_id)
        if _has_surrogates(''.join(fields)):
            return Rejected(line, 'invalid UTF-8', 'the row has bytes that are not UTF-8 text', phone, raw_id)
        number = self._number(line, phone, raw_id)
        if isinstance(number, Rejected):
            return number
        if layout.contact_id is None:
            contact_id = str(line)
        else:
            contact_id = raw_id.strip()
            if not contact_id:
                return Rejected(line, 'empty contact_id', '', phone, raw_id)
        timezone = fields[layout.timezone].strip() if layout.timezone is not None else ''
        if timezone:
            try:
                check_timezone(timezone)
            except ValueError as exc:
                return Rejected(line, 'invalid timezone', str(exc), phone, raw_id)
        try:
            zones = contact_zones(number, timezone or None, self.default_timezone)
        except NoTimezone as exc:
            return Rejected(line, 'no time zone', str(exc), phone, raw_id)
        due = self._due_ms(zones)
        if isinstance(due, str):
            return Rejected(line, 'never callable', due, phone, raw_id)
        name = fields[layout.name].strip() if layout.name is not None else ''
        context = {key: fields[i] for key, i in layout.context}
        size = _context_bytes(context)
        if size > MAX_CONTEXT_BYTES:
            detail = f'{size} bytes in the other columns, at most {MAX_CONTEXT_BYTES // 1024} KiB per contact'
            return Rejected(line, 'template context too large', detail, phone, raw_id)
        record = ContactRecord.dump_fields(contact_id, line, name, timezone, context)
        return Accepted(line, number, contact_id, record, due, zones)

    def _number(self, line: int, phone: str, raw_id: str) -> str | Rejected:
        if not phone.strip():
            return Rejected(line, 'empty phone', '', phone, raw_id)
        try:
            number, kind = normalise_typed(phone, self.region)
        except InvalidNumber as exc:
            return Rejected(line, 'invalid phone', exc.reason, phone, raw_id)
        if kind not in self.number_types:
            allowed = ', '.join(sorted(self.number_types))
            detail = f'a {kind} number (this campaign calls {allowed}; see --number-types)'
            return Rejected(line, 'number type not allowed', detail, phone, raw_id)
        return number

    def _due_ms(self, zones: tuple[str, ...]) -> int | str:
        due = self._due.get(zones)
        if due is None:
            try:
                due = int(initial_due(zones, self.hours, self.now).timestamp() * 1000)
            except NeverCallable as exc:
                due = str(exc)
            if len(self._due) >= _DUE_CACHE_MAX:
                self._due.clear()
            self._due[zones] = due
        return due

    def check_batch(self, rows: list[tuple[int, list[str]]]) -> CheckedBatch:
        packed: list[bytes] = []
        accepted: list[int] = []
        rejected: list[tuple[int, str, str]] = []
        for position, (line, fields) in enumerate(rows):
            verdict = self.check(line, fields)
            if isinstance(verdict, Accepted):
                packed.append(pack_contact(verdict.number, line, verdict.due_ms, verdict.contact_id, verdict.record))
                accepted.append(position)
            else:
                rejected.append((position, verdict.reason, verdict.detail))
        return CheckedBatch(b''.join(packed), accepted, rejected)
