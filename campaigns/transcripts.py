"""``dialer campaign transcripts``: every answered call's messages, from Ultravox to local files.

Transcripts are personal data: they go from the API straight to the operator's files (mode 0600),
never to Redis or the logs. Output is either a directory with one ``<call id>.jsonl`` per call (one
message per line) or one ``.jsonl`` file with one line per call (``{"call_id", ..., "messages"}``).
Either way a call's transcript is written whole or not at all, so a re-run fetches only the calls
whose transcript is missing. Requests run with bounded concurrency through the Ultravox client,
which follows every page and waits out 429s for their ``Retry-After``; a 429 that outlasts the
client's tries pauses every fetch of the run (not only the one refused) for its ``Retry-After`` and
the call is tried again, so an account's read limit slows the command down instead of failing calls.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from campaigns.lifecycle import UnknownCampaignError
from dialer import constants as k
from dialer.models import check_name
from dialer.ultravox import RateLimited, UltravoxError


if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.asyncio import Redis

    from dialer.ultravox import UltravoxClient


#: How many times one call is tried again after the client gave up on 429s before it counts as failed.
RATE_LIMITED_ROUNDS = 20


@dataclass(frozen=True, slots=True)
class AnsweredCall:
    call_id: str
    attempt_id: str
    contact_id: str


@dataclass(slots=True)
class TranscriptRun:
    answered: int = 0
    already_there: int = 0
    fetched: int = 0
    failed: int = 0


async def answered_calls(redis: Redis, name: str) -> list[AnsweredCall]:
    """The campaign's ended calls that were answered (a person or a voicemail greeting joined)."""
    check_name('campaign', name)
    if not await redis.hexists(k.campaign(name), 'config'):
        raise UnknownCampaignError(name)
    calls: list[AnsweredCall] = []
    numbers: list[str] = []
    async for field, raw in redis.hscan_iter(k.campaign_attempts(name), count=1000):
        record = json.loads(raw)
        if record.get('st') == 'ended' and record.get('call') and record.get('jn'):
            number, attempt = field.rsplit(':', 1)
            numbers.append(number)
            calls.append(AnsweredCall(str(record['call']), k.attempt_id(name, number, int(attempt)), ''))
    ids: list[Any] = []
    for start in range(0, len(numbers), 1000):
        ids += await redis.hmget(k.campaign_contacts(name), numbers[start : start + 1000])
    return [
        AnsweredCall(call.call_id, call.attempt_id, str(json.loads(raw).get('i', '')) if raw else '')
        for call, raw in zip(calls, ids, strict=True)
    ]


def _private_file(directory: Path, prefix: str) -> tuple[int, Path]:
    fd, name = tempfile.mkstemp(prefix=prefix, suffix='.tmp', dir=directory)
    os.fchmod(fd, 0o600)
    return fd, Path(name)


class _Directory:
    """One ``<call id>.jsonl`` per call, renamed into place once complete."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path

    def _file(self, call_id: str) -> Path:
        safe = ''.join(c if c.isalnum() or c in '-_' else '_' for c in call_id)
        return self.path / f'{safe}.jsonl'

    def done(self) -> set[str]:
        return {p.stem for p in self.path.glob('*.jsonl')}

    def has(self, done: set[str], call: AnsweredCall) -> bool:
        return self._file(call.call_id).stem in done

    async def write(self, call: AnsweredCall, messages: list[dict[str, Any]]) -> None:
        fd, tmp = _private_file(self.path, '.transcript.')
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.writelines(json.dumps(m, ensure_ascii=False, separators=(',', ':')) + '\n' for m in messages)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self._file(call.call_id))


class _JsonlFile:
    """One line per call in one file, appended whole; a torn last line (a crash) is cut on the next run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = asyncio.Lock()

    def done(self) -> set[str]:
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
            return set()
        data = self.path.read_bytes()
        complete = data[: data.rfind(b'\n') + 1]
        if len(complete) != len(data):
            with self.path.open('r+b') as handle:
                handle.truncate(len(complete))
        return {json.loads(line)['call_id'] for line in complete.splitlines() if line.strip()}

    def has(self, done: set[str], call: AnsweredCall) -> bool:
        return call.call_id in done

    async def write(self, call: AnsweredCall, messages: list[dict[str, Any]]) -> None:
        line = {'call_id': call.call_id, 'attempt_id': call.attempt_id, 'contact_id': call.contact_id}
        data = (json.dumps({**line, 'messages': messages}, ensure_ascii=False, separators=(',', ':')) + '\n').encode()
        async with self._lock:
            with self.path.open('ab') as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())


async def fetch_transcripts(
    redis: Redis,
    ultravox: UltravoxClient,
    name: str,
    output: Path,
    *,
    concurrency: int = 8,
    on_total: Callable[[int], None] | None = None,
    on_done: Callable[[], None] | None = None,
) -> TranscriptRun:
    """Fetch the transcript of every answered call not yet in ``output`` (``*.jsonl``: one file)."""
    if concurrency < 1:
        raise ValueError('--concurrency must be at least 1')
    sink: _Directory | _JsonlFile = _JsonlFile(output) if output.suffix == '.jsonl' else _Directory(output)
    calls = await answered_calls(redis, name)
    done = sink.done()
    todo = [call for call in calls if not sink.has(done, call)]
    run = TranscriptRun(answered=len(calls), already_there=len(calls) - len(todo))
    if on_total is not None:
        on_total(len(todo))
    gate = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()
    resume_at = 0.0  # loop time before which no fetch starts: the account said to wait

    async def fetch(call: AnsweredCall) -> list[dict[str, Any]]:
        nonlocal resume_at
        for _ in range(RATE_LIMITED_ROUNDS - 1):
            if (wait := resume_at - loop.time()) > 0:
                await asyncio.sleep(wait)
            try:
                return await ultravox.list_messages(call.call_id)
            except RateLimited as exc:
                resume_at = max(resume_at, loop.time() + exc.retry_after)
        return await ultravox.list_messages(call.call_id)

    async def one(call: AnsweredCall) -> None:
        async with gate:
            try:
                messages = await fetch(call)
            except UltravoxError:  # counted, and left for the next run
                run.failed += 1
            else:
                await sink.write(call, messages)
                run.fetched += 1
            if on_done is not None:
                on_done()

    await asyncio.gather(*(one(call) for call in todo))
    return run
