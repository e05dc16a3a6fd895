"""The providers' own REST APIs as the simulator imitates them (direct mode)."""

from __future__ import annotations

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from starlette.routing import Route

    from simulator.app import Simulator


def routes(sim: Simulator) -> list[Route]:
    del sim
    return []
