"""Loading into a campaign that exists: it keeps its settings, and options given must agree with them.

``dialer campaign load MORE.csv --campaign NAME`` alone adds contacts under the campaign's stored
settings. Options given as well (command line or campaign file) are laid over the stored settings;
any that differ refuse the load, naming each setting with its stored and its given value, before
anything is written. Changing settings is ``dialer campaign update``'s job.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from campaigns.campaign_file import build_config
from campaigns.lifecycle import CampaignConflictError


if TYPE_CHECKING:
    from dialer.models import CampaignConfig


def _leaves(value: Any, prefix: str = '') -> dict[str, Any]:
    if isinstance(value, dict) and value:
        found: dict[str, Any] = {}
        for key, sub in value.items():
            found.update(_leaves(sub, f'{prefix}.{key}' if prefix else str(key)))
        return found
    return {prefix: value}


def setting_differences(old: CampaignConfig, new: CampaignConfig) -> list[tuple[str, Any, Any]]:
    """(dotted setting, old value, new value) for each setting that differs, in name order."""
    before = _leaves(json.loads(old.model_dump_json()))
    after = _leaves(json.loads(new.model_dump_json()))
    return [
        (key, before.get(key), after.get(key))
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]


def _shown(value: Any) -> str:
    return 'unset' if value is None else json.dumps(value, ensure_ascii=False)


def conflict_message(name: str, differences: list[tuple[str, Any, Any]]) -> str:
    listed = '; '.join(f'{key}: campaign has {_shown(old)}, given {_shown(new)}' for key, old, new in differences)
    return (
        f'campaign {name!r} already exists with other settings ({listed}); load with `--campaign {name}` alone '
        'to keep its settings, or change them with `dialer campaign update`'
    )


def check_same_settings(existing: CampaignConfig, given: CampaignConfig) -> None:
    """Raise ``CampaignConflictError`` naming every setting ``given`` changes."""
    differences = setting_differences(existing, given)
    if differences:
        raise CampaignConflictError(conflict_message(existing.name, differences))


def config_for_load(
    existing: CampaignConfig | None, file_options: dict[str, Any], cli_options: dict[str, Any]
) -> CampaignConfig:
    """The settings a load uses: a new campaign's from the options; an existing one's as stored, after
    checking that the options given (if any) agree with them."""
    if existing is None:
        return build_config(file_options, cli_options)
    given = build_config(file_options, cli_options, base=existing)
    check_same_settings(existing, given)
    return existing
