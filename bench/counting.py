"""Run a worker with its Redis requests counted (one per round trip: a pipeline is sent at once).

    python bench/counting.py COUNTS.json dialer worker     # the dialer's worker, as `dialer worker`
    python bench/counting.py COUNTS.json arq REDIS_URL      # a bare arq worker (no-op job), burst mode

The count is written to COUNTS.json every ``COUNTING_INTERVAL`` seconds (default 0.2), at exit, and
whenever the process gets SIGUSR1; ``COUNTING_INTERVAL=0`` writes only then, so a bench that measures
CPU does not also measure a thread waking five times a second (~3 % of a worker's CPU). Counting is
one integer increment per request, so it does not change the figures measured around it.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from redis.asyncio.connection import AbstractConnection


_count = [0]
#: Lua script runs by script name, and job ids arq tried to pick up (its WATCH/MULTI per id).
_scripts: dict[str, int] = {}
_pickups = [0]
#: Wake-up announcements the worker received (workers/wakeups.py).
_wakeups = [0]
_original = AbstractConnection.send_packed_command


#: Garbage collections by generation: how many, and the seconds they took.
_gc: dict[int, list[float]] = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
_gc_started = [0.0]


def _time_gc(phase: str, info: dict[str, int]) -> None:
    if phase == 'start':
        _gc_started[0] = time.perf_counter()
        return
    entry = _gc[info['generation']]
    entry[0] += 1
    entry[1] += time.perf_counter() - _gc_started[0]


gc.callbacks.append(_time_gc)

#: Round trips by their first command (a pipeline by its first: MULTI, or the first command sent).
_by_command: dict[str, int] = {}


def _first_command(command: Any) -> str:
    packed = command if isinstance(command, (bytes, bytearray, memoryview)) else b''.join(command[:2])
    parts = bytes(packed[:64]).split(b'\r\n')
    return parts[2].decode(errors='replace').upper() if len(parts) > 2 else '?'  # *N, $len, NAME


async def _counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
    _count[0] += 1
    name = _first_command(command)
    _by_command[name] = _by_command.get(name, 0) + 1
    await _original(self, command, check_health)


AbstractConnection.send_packed_command = _counted


def _count_scripts_and_pickups() -> None:
    """Count script runs by name and arq pickups; COUNTING_ARQ_UNFILTERED=1 puts arq's own pickup back."""
    from arq.worker import Worker  # noqa: PLC0415

    from dialer.scripts import Scripts  # noqa: PLC0415

    run = Scripts._run  # noqa: SLF001

    async def counted_run(self: Scripts, name: str, keys: Any, args: Any) -> Any:
        _scripts[name] = _scripts.get(name, 0) + 1
        return await run(self, name, keys, args)

    Scripts._run = counted_run  # type: ignore[method-assign]  # noqa: SLF001
    start_jobs = Worker.start_jobs

    async def counted_start_jobs(self: Worker, job_ids: list[bytes]) -> None:
        _pickups[0] += len(job_ids)
        await start_jobs(self, job_ids)

    Worker.start_jobs = counted_start_jobs  # type: ignore[method-assign]
    _count_wakeups()
    from workers.arq_worker import DialerWorker  # noqa: PLC0415

    if os.environ.get('COUNTING_ARQ_UNFILTERED') == '1':
        # arq's own poll and pickup (before issue 16)
        DialerWorker._poll_iteration = Worker._poll_iteration  # type: ignore[method-assign]  # noqa: SLF001
        DialerWorker.start_jobs = counted_start_jobs  # type: ignore[method-assign]
        return
    # the dialer's own poll takes due jobs in one script: count the jobs it took
    dialer_poll = DialerWorker._poll_iteration  # noqa: SLF001

    async def counted_dialer_poll(self: DialerWorker) -> None:
        taken = self.picked_up
        await dialer_poll(self)
        _pickups[0] += self.picked_up - taken

    DialerWorker._poll_iteration = counted_dialer_poll  # type: ignore[method-assign]  # noqa: SLF001


def _count_wakeups() -> None:
    try:
        from workers.wakeups import Wakeups  # noqa: PLC0415
    except ImportError:  # a tree from before wake-ups
        return
    deliver = Wakeups._deliver  # noqa: SLF001

    def counted_deliver(self: Wakeups, message: dict[str, Any]) -> None:
        _wakeups[0] += 1
        deliver(self, message)

    Wakeups._deliver = counted_deliver  # type: ignore[method-assign]  # noqa: SLF001


def _reporter(path: Path) -> None:
    written = [0]

    def write(*_: object) -> None:
        # replaced whole, so a reader never sees a half-written file (which would read as 0)
        written[0] += 1
        counts = {
            'round_trips': _count[0],
            'by_command': dict(_by_command),
            'scripts': dict(_scripts),
            'pickups': _pickups[0],
            'wakeups': _wakeups[0],
            'gc': {str(generation): list(entry) for generation, entry in _gc.items()},
            'seq': written[0],
        }
        partial = path.with_suffix('.partial')
        partial.write_text(json.dumps(counts))
        partial.replace(path)

    interval = float(os.environ.get('COUNTING_INTERVAL', '0.2'))

    def loop() -> None:
        while True:
            write()
            time.sleep(interval)

    atexit.register(write)
    signal.signal(signal.SIGUSR1, write)
    if interval > 0:
        threading.Thread(target=loop, daemon=True).start()
    else:
        write()


async def noop(ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> None:
    del ctx, args, kwargs


def _arq_worker(url: str) -> None:
    from arq.connections import RedisSettings  # noqa: PLC0415
    from arq.worker import Worker, func  # noqa: PLC0415

    worker = Worker(
        functions=[func(noop, name='noop', keep_result=0)],
        redis_settings=RedisSettings.from_dsn(url),
        burst=True,
        max_jobs=200,  # the dialer's default worker_max_jobs
        poll_delay=0.02,  # the dialer's default worker_poll_delay
        keep_result=0,
        handle_signals=True,
    )
    worker.run()


def main() -> None:
    path, kind, *rest = sys.argv[1:]
    _reporter(Path(path))
    if kind == 'arq':
        _arq_worker(rest[0])
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    _count_scripts_and_pickups()
    from workers.cli import main as dialer_main  # noqa: PLC0415

    sys.argv = ['dialer', *rest]
    dialer_main()


if __name__ == '__main__':
    main()
