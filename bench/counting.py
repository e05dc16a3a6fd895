"""Run a worker with its Redis requests counted (one per round trip: a pipeline is sent at once).

    python bench/counting.py COUNTS.json dialer worker     # the dialer's worker, as `dialer worker`
    python bench/counting.py COUNTS.json arq REDIS_URL      # a bare arq worker (no-op job), burst mode

The count is written to COUNTS.json every 0.2 s and at exit. Counting is one integer increment per
request, so it does not change the figures measured around it.
"""

from __future__ import annotations

import atexit
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from redis.asyncio.connection import AbstractConnection


_count = [0]
_original = AbstractConnection.send_packed_command


async def _counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
    _count[0] += 1
    await _original(self, command, check_health)


AbstractConnection.send_packed_command = _counted


def _reporter(path: Path) -> None:
    def write() -> None:
        # replaced whole, so a reader never sees a half-written file (which would read as 0)
        partial = path.with_suffix('.partial')
        partial.write_text(json.dumps({'round_trips': _count[0]}))
        partial.replace(path)

    def loop() -> None:
        while True:
            write()
            time.sleep(0.2)

    atexit.register(write)
    threading.Thread(target=loop, daemon=True).start()


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
    from workers.cli import main as dialer_main  # noqa: PLC0415

    sys.argv = ['dialer', *rest]
    dialer_main()


if __name__ == '__main__':
    main()
