"""A stand-alone Ultravox API simulator: a real HTTP server for tests, demos and load runs.

It imitates the endpoints the dialer uses (create/read/list calls, signed webhooks), plans each call's
life from configurable outcome rates, enforces account limits, injects faults, and keeps its own record
of what it was asked to do so tests can assert on the simulator's view rather than the dialer's.
"""

from simulator.app import build_app
from simulator.config import SimulatorConfig


__all__ = ['SimulatorConfig', 'build_app']
