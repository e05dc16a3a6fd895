"""Entry point for ``python -m simulator``."""

from simulator.cli import simulator_command


simulator_command()
