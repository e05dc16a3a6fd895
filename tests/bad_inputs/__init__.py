"""A corpus of bad input files and what the dialer must say about each.

``BAD_INPUTS``: files that fail as a whole. Each must raise an error that names the file, the line or
field where relevant, and contains ``expected``; nothing may be written to Redis. The CLI variant of
these tests imports this table and checks exit codes as well.

``REJECTED_ROWS``: files that load, but whose bad rows go to the rejects file with a line and reason.

A few inputs are generated rather than stored (too big to keep, or impossible to keep in git: a
missing file); ``materialise`` returns a path for every case.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


CORPUS = Path(__file__).resolve().parent

Kind = Literal['csv', 'campaign', 'trunks']


@dataclass(frozen=True)
class BadInput:
    file: str
    kind: Kind
    #: A fragment of the error message (after the file name).
    expected: str
    #: The line the message must name, if any ("line N:").
    line: int | None = None
    #: The field the message must name, if any ("field X:").
    field: str | None = None

    @property
    def id(self) -> str:
        return self.file.removesuffix('.csv').removesuffix('.toml')


def _nul_after_sniff(path: Path) -> None:
    # A NUL far enough in not to be seen by the binary sniff (64 KiB), but inside the first batch.
    rows = [f'+1415555{i:04d},Contact number {i:04d} with a longer name' for i in range(1500)]
    rows[1400] = '+14155559999,Nul\0Byte'
    path.write_text('phone,name\n' + '\n'.join(rows) + '\n', encoding='utf-8')


def _enormous_field(path: Path) -> None:
    path.write_text('phone,name,notes\n+14155552671,Ann,"' + 'x' * 200_000 + '"\n', encoding='utf-8')


GENERATED = {
    'nul_after_64k.csv': _nul_after_sniff,
    'enormous_field.csv': _enormous_field,
}


def materialise(case: BadInput, tmp_dir: Path) -> Path:
    """The path to give the dialer for a case (generated files are written into ``tmp_dir``)."""
    if case.file in GENERATED:
        path = tmp_dir / case.file
        GENERATED[case.file](path)
        return path
    if case.file == 'missing.csv':
        return tmp_dir / 'missing.csv'
    return CORPUS / case.file


BAD_INPUTS: list[BadInput] = [
    # --- contacts CSV: the file itself
    BadInput('missing.csv', 'csv', 'file not found'),
    BadInput('a_directory.csv', 'csv', 'is a directory'),
    BadInput('empty.csv', 'csv', 'empty file'),
    BadInput('blank_lines_only.csv', 'csv', 'empty file'),
    BadInput('png_image.csv', 'csv', 'binary file'),
    BadInput('latin1_header.csv', 'csv', 'not UTF-8 text'),
    BadInput('utf16_bom.csv', 'csv', 'not UTF-8 text (it is UTF-16'),
    BadInput('utf16_no_bom.csv', 'csv', 'not UTF-8 text (it is UTF-16'),
    BadInput('utf32_bom.csv', 'csv', 'not UTF-8 text (it is UTF-32'),
    # --- contacts CSV: the header
    BadInput('no_phone_column.csv', 'csv', 'no phone column', line=1),
    BadInput('semicolon_separated.csv', 'csv', 'only commas separate columns', line=1),
    BadInput('duplicate_header.csv', 'csv', "duplicate header 'Phone'", line=1),
    BadInput('duplicate_header_spaces.csv', 'csv', "duplicate header 'NAME'", line=1),
    BadInput('ambiguous_phone.csv', 'csv', "ambiguous phone column: 'phone' and 'mobile'", line=1),
    BadInput('ambiguous_phone_spelling.csv', 'csv', 'ambiguous phone column', line=1),
    BadInput('ambiguous_contact_id.csv', 'csv', 'ambiguous contact_id column', line=1),
    BadInput('empty_header_name.csv', 'csv', 'empty header name in column 2', line=1),
    # --- contacts CSV: broken CSV below the header (fatal, found before anything is written)
    BadInput('nul_bytes.csv', 'csv', 'NUL bytes'),
    BadInput('nul_after_64k.csv', 'csv', 'NUL byte', line=1402),
    BadInput('unterminated_quote.csv', 'csv', 'never closed', line=3),
    BadInput('malformed_quote.csv', 'csv', 'malformed CSV', line=3),
    BadInput('enormous_field.csv', 'csv', 'field longer than', line=2),
    # --- campaign files
    BadInput('campaign_syntax_error.toml', 'campaign', 'invalid TOML', line=4),
    BadInput('campaign_unknown_key.toml', 'campaign', "unknown key 'max_concurrency'"),
    BadInput('campaign_unknown_hours_key.toml', 'campaign', 'unknown key hours.finish'),
    BadInput('campaign_retry_answered.toml', 'campaign', 'never retried: answered', field='retry.retry_on'),
    BadInput('campaign_hours_outside_legal.toml', 'campaign', 'legal 08:00-21:00 bound', field='hours'),
    BadInput(
        'campaign_bad_timezone.toml', 'campaign', "unknown time zone 'America/Springfield'", field='default_timezone'
    ),
    BadInput('campaign_agent_and_prompt.toml', 'campaign', 'exactly one of agent_id or system_prompt'),
    BadInput('campaign_no_agent.toml', 'campaign', 'exactly one of agent_id or system_prompt'),
    BadInput('campaign_bad_region.toml', 'campaign', 'two-letter ISO country code', field='default_region'),
    BadInput('campaign_bad_name.toml', 'campaign', "campaign name 'spring renewals!'", field='name'),
    BadInput('campaign_missing_name.toml', 'campaign', 'is required', field='name'),
    # --- trunks files
    BadInput('trunks_missing_host.toml', 'trunks', 'is required', field='host'),
    BadInput('trunks_missing_rate.toml', 'trunks', 'is required', field='calls_per_second'),
    BadInput('trunks_unknown_transport.toml', 'trunks', "'udp', 'tcp' or 'tls'", field='transport'),
    BadInput('trunks_negative_limit.toml', 'trunks', 'greater than or equal to 1', field='max_concurrent'),
    BadInput('trunks_password_twice.toml', 'trunks', 'give only one of password, password_env', field='password_env'),
    BadInput('trunks_not_toml.toml', 'trunks', 'invalid TOML'),
]


@dataclass(frozen=True)
class RejectedRows:
    """A CSV that loads, with the rows that must be rejected: (line, reason fragment)."""

    file: str
    rejects: tuple[tuple[int, str], ...]
    accepted: int
    #: Cells of the rejects file that must be written neutralised (a leading quote).
    neutralised: tuple[str, ...] = ()
    #: Cells that must be written as they are (a phone that cannot run as a formula loads again as is).
    as_written: tuple[str, ...] = ()


REJECTED_ROWS: list[RejectedRows] = [
    RejectedRows('rows_ragged.csv', ((3, 'ragged row: 3 fields, the header has 2'), (4, 'ragged row: 1 fields')), 2),
    RejectedRows('rows_oversized_field.csv', ((3, 'field too long'),), 1),
    RejectedRows(
        'rows_formula.csv',
        ((2, 'invalid phone'), (3, 'invalid phone'), (4, 'invalid phone')),
        1,
        neutralised=('\'=HYPERLINK("http://x.example")', "'@SUM(A1:A9)"),
        as_written=('-2+3',),
    ),
    RejectedRows('rows_invalid_utf8.csv', ((3, 'invalid UTF-8'),), 1),
    RejectedRows('rows_invalid_timezone.csv', ((2, "invalid timezone: unknown time zone 'Mars/Olympus'"),), 1),
    RejectedRows('rows_empty_phone.csv', ((2, 'empty phone'), (4, 'empty phone')), 1),
    # +800 is international freephone: refused by the default number types (it has no time zone either)
    RejectedRows('rows_no_timezone.csv', ((3, 'number type not allowed: a toll_free number'),), 1),
]
