"""Mustache-style ``{{variable}}`` placeholders in an ad-hoc system prompt.

Ultravox's StartCallRequest has no ``templateContext``, so for ``--system-prompt`` campaigns the dialer
fills each contact's values into the prompt itself (an agent's template is filled by Ultravox). The
loader refuses a prompt whose placeholders the contacts file cannot fill (campaigns/prompt_vars.py).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from collections.abc import Mapping


#: ``{{ key }}`` or ``{{{ key }}}``; mustache sections, comments and partials ({{#x}} {{/x}} {{!x}}
#: {{>x}}) are not variables.
PLACEHOLDER = re.compile(r'\{\{\{?\s*([^\s{}#/^!>&=][^{}]*?)\s*\}?\}\}')


def placeholders(prompt: str) -> list[str]:
    """The variable names a prompt uses, in order of first use."""
    return list(dict.fromkeys(match.group(1) for match in PLACEHOLDER.finditer(prompt)))


def fill_placeholders(prompt: str, values: Mapping[str, str]) -> str:
    """``prompt`` with every placeholder that ``values`` names replaced (others are left as written)."""
    return PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), prompt)
