"""``dialer campaign plan --csv FILE``: the plan a load of FILE would give, without loading it.

The rows are checked exactly as the loader checks them (same ``RowChecker``, same first due instant
from the campaign's hours, ``start_at`` and the dialer's clock), then grouped by time zones as
``dialer campaign plan NAME`` groups a loaded campaign's contacts. Duplicates within the file are
found with a set of the numbers (and ids) seen, so memory grows with the file; nothing is written.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from campaigns.csvfile import Accepted, open_csv
from campaigns.loader import row_checker
from campaigns.plan import ZonePlan
from campaigns.prompt_vars import prompt_columns


if TYPE_CHECKING:
    from pathlib import Path

    from dialer.models import CampaignConfig


@dataclass
class CsvPlan:
    rows: int = 0
    accepted: int = 0
    rejects_by_reason: Counter[str] = field(default_factory=Counter)
    zones: list[ZonePlan] = field(default_factory=list)
    #: Columns a system prompt does not reference.
    unused_columns: list[str] = field(default_factory=list)


def plan_csv(config: CampaignConfig, csv_path: Path, now_ms: int) -> CsvPlan:
    """Check every row of ``csv_path`` under ``config`` at ``now_ms`` (the dialer's clock)."""
    result = CsvPlan()
    plans: dict[tuple[str, ...], ZonePlan] = {}
    numbers: set[str] = set()
    ids: set[str] = set()
    with open_csv(csv_path) as reader:
        result.unused_columns = prompt_columns(config, reader.path, reader.layout)
        checker = row_checker(config, reader.layout, now_ms)
        check_ids = reader.layout.contact_id is not None
        for line, fields in reader.rows():
            result.rows += 1
            verdict = checker.check(line, fields)
            if not isinstance(verdict, Accepted):
                result.rejects_by_reason[verdict.reason] += 1
                continue
            if verdict.number in numbers:
                result.rejects_by_reason['duplicate phone'] += 1
                continue
            if check_ids and verdict.contact_id in ids:
                result.rejects_by_reason['duplicate contact_id'] += 1
                continue
            numbers.add(verdict.number)
            ids.add(verdict.contact_id)
            result.accepted += 1
            plan = plans.setdefault(verdict.zones, ZonePlan(verdict.zones))
            if verdict.due_ms <= now_ms:
                plan.callable_now += 1
            else:
                plan.waiting += 1
                opens = datetime.fromtimestamp(verdict.due_ms / 1000, UTC)
                plan.opens_at = opens if plan.opens_at is None else min(plan.opens_at, opens)
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    result.zones = sorted(plans.values(), key=lambda p: (p.opens_at or now, p.zones))
    return result
