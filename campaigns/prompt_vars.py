"""A system prompt's ``{{placeholders}}`` against a contacts file's columns, checked at load.

An agent campaign sends each contact's extra columns as the agent's ``templateContext``. An ad-hoc
``system_prompt`` has no template context at Ultravox (StartCallRequest has none), so the dialer
fills its mustache-style ``{{column}}`` placeholders per contact itself. A placeholder that names
no column would reach the callee as literal braces, so the load is refused; a column the prompt
never uses is reported, since it is most likely a typo on one side or the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dialer.prompts import placeholders


if TYPE_CHECKING:
    from pathlib import Path

    from campaigns.csvfile import Layout
    from dialer.models import CampaignConfig


class PromptError(ValueError):
    """A system prompt that uses placeholders the contacts file cannot fill."""


def template_columns(layout: Layout) -> list[str]:
    """The variables a contact of this file provides: its columns without a role, and ``name``."""
    names = [key for key, _ in layout.context]
    if layout.name is not None:
        names.append('name')
    return names


def prompt_columns(config: CampaignConfig, path: Path, layout: Layout) -> list[str]:
    """For a system-prompt campaign: the file's template columns the prompt does not use.

    Raises ``PromptError`` naming every placeholder that no column fills. Agent campaigns: [] (the
    agent's template lives at Ultravox and cannot be checked here).
    """
    if config.system_prompt is None:
        return []
    columns = template_columns(layout)
    used = placeholders(config.system_prompt)
    missing = [name for name in used if name not in columns]
    if missing:
        listed = ', '.join('{{' + name + '}}' for name in missing)
        available = ', '.join(columns) or 'none'
        raise PromptError(
            f'{path}: the system prompt uses {listed} but the file has no such column '
            f'(columns usable in the prompt: {available})'
        )
    return [name for name in columns if name not in used]
