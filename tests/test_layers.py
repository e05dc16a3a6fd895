"""Imports point only downwards: workers -> campaigns -> dialer; the simulator stands alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    'dialer': {'campaigns', 'workers', 'simulator'},
    'campaigns': {'workers', 'simulator'},
    'simulator': {'campaigns', 'workers'},
}


def imported_packages(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split('.')[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split('.')[0])
    return names


@pytest.mark.parametrize('package', sorted(FORBIDDEN))
def test_a_lower_layer_never_imports_a_higher_one(package: str) -> None:
    for module in sorted((ROOT / package).rglob('*.py')):
        wrong = imported_packages(module) & FORBIDDEN[package]
        assert not wrong, f'{module.relative_to(ROOT)} imports {sorted(wrong)}'
