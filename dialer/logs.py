"""structlog configuration: key-value events, console or JSON, with secrets masked as a last line.

Secrets are kept out of log calls in the first place (they are ``SecretStr`` and never bound); the
masking processor is the safety net for a value that slips through, e.g. inside an exception text.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TYPE_CHECKING, Any

import structlog


if TYPE_CHECKING:
    from collections.abc import Iterable, MutableMapping


_MASK = '**redacted**'
# E.164 numbers in free text (an arq job id, an exception message): kept to their last four digits.
_PHONE = re.compile(r'\+\d{3,11}(\d{4})\b')
_secrets: set[str] = set()


def register_secrets(values: Iterable[str]) -> None:
    """Values (API key, trunk passwords, webhook secrets) that must never reach a log line."""
    _secrets.update(v for v in values if v and len(v) >= 4)


def _mask(value: str) -> str:
    for secret in _secrets:
        if secret in value:
            value = value.replace(secret, _MASK)
    return _PHONE.sub(r'+…\1', value) if '+' in value else value


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = _mask(value)
    return event


class _MaskingFilter(logging.Filter):
    """The same masking for records from the standard library (arq, uvicorn)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _mask(record.getMessage())
        record.args = None
        return True


def configure_logging(level: str = 'info', fmt: str = 'console', *, cache: bool = True) -> None:
    """``cache=False`` keeps loggers reconfigurable (tests that run CLI commands in-process)."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == 'json'
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt='iso', utc=True),
            structlog.processors.format_exc_info,
            _mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=cache,
    )
    # arq and uvicorn log through the standard library, on stderr, masked the same way. arq's
    # per-job lines (one per dial at INFO) are noise at fleet scale: only its warnings are kept.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter('%(levelname)s %(name)s: %(message)s'))
    handler.addFilter(_MaskingFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # httpx and httpcore log every request at INFO (one line per poll and create): debug detail only.
    quiet = max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()])
    for name in ('arq', 'httpx', 'httpcore'):
        logging.getLogger(name).setLevel(logging.DEBUG if level == 'debug' and name != 'arq' else quiet)


def masked_attempt(attempt_id: str) -> str:
    """An attempt id fit for logs: the phone number inside it masked to its last four digits."""
    campaign, _, rest = attempt_id.partition(':')
    number, _, tail = rest.rpartition(':')
    return f'{campaign}:…{number[-4:]}:{tail}' if number else attempt_id
