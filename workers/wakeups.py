"""Wake-ups: the tracker, the pacer and the result-webhook loop sleep until they have work, instead of
looking every 50 ms (200 ms for result webhooks).

Each used to look at Redis 20 times a second, work or not: an idle worker burnt ~17 ms of CPU per
second, and at low call rates those looks were most of what a call cost (issue 16). Now:

- the tracker sleeps until its schedule's next member falls due (each look says when), at most
  :func:`longest_sleep`; so does the result-webhook loop until its next event (a retry, a lease
  running out); the pacer with no campaign on any trunk sleeps ``LONGEST_SLEEP``;
- scripts announce what a sleeper cannot know (``dialer/lua/_wakeups.lua``): an entry made due sooner
  than the longest sleep from now (a webhook's nudge, a new call's first poll, a phone leg's status
  callback, a result-webhook event appended) on a channel named as its schedule, and only when it is
  the schedule's next (an entry due before it already brings a look in time: events appended while
  others wait for the result-webhook loop's next look are not announced); and a campaign joining a
  trunk's rotation on the channel named as the trunk's campaign set.
  An entry due later is seen by the look the sleeper makes before then anyway;
- :class:`Wakeups` holds one pub/sub connection per process and wakes the sleepers listening.

Pub/sub delivers at most once: an announcement lost with a dropped connection costs at most one
``LONGEST_SLEEP``, and every sleeper is woken when the connection is made again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import structlog


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from redis.asyncio import Redis

    from dialer.settings import Settings


log = structlog.get_logger(__name__)

#: Longest sleep of an idle tracker, pacer or result-webhook loop.
LONGEST_SLEEP = 1.0
#: Pause before listening again after the pub/sub connection failed, doubling while it keeps failing
#: (a Redis user without channel permissions fails every time) up to ``LONGEST_RECONNECT_DELAY``.
RECONNECT_DELAY = 1.0
LONGEST_RECONNECT_DELAY = 60.0


def longest_sleep(settings: Settings) -> float:
    """The longest sleep of the tracker and the result-webhook loop, and so the scripts' announcement
    horizon (``Runtime.create``): 1 s, or half the first poll or poll interval if shorter. A call's
    first poll (5 s by default) is then seen by a look in time without an announcement of its own."""
    return min(LONGEST_SLEEP, settings.poll_initial / 2, settings.poll_interval / 2)


class Sleeper:
    """A loop's pause that a wake-up, or the loop's stop, cuts short.

    The loop calls :meth:`before_look` before each look, so a wake-up that arrives during the look
    makes the following :meth:`pause` return at once: none is lost between look and sleep.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        #: In a pause (after a whole look): what a test waits for before it announces work.
        self.sleeping = False

    def wake(self) -> None:
        self._event.set()

    def wake_within(self, seconds: float) -> None:
        """Wake no later than ``seconds`` from now (several calls share one timer: a batch)."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(seconds, self._timed_wake)

    def _timed_wake(self) -> None:
        self._timer = None
        self._event.set()

    def before_look(self) -> None:
        self._event.clear()

    @property
    def woken(self) -> bool:
        return self._event.is_set()

    async def pause(self, seconds: float) -> None:
        if seconds <= 0 or self._event.is_set():
            return
        self.sleeping = True
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), seconds)
        finally:
            self.sleeping = False

    async def run(self, stop: asyncio.Event, look: Callable[[], Awaitable[float]], busy: float = 0.0) -> None:
        """A loop's life: ``look``, then sleep as long as it says (0 or less: look again at once), until
        ``stop``. At most one look per ``busy`` seconds, so work falling due piece by piece (calls, webhooks,
        events appended one by one) is served by one look rather than a look each."""
        loop = asyncio.get_running_loop()
        with self._stopped_by(stop):
            while not stop.is_set():
                started = loop.time()
                self.before_look()
                pause = await look()
                if pause <= 0:
                    continue
                await self.pause(pause)
                await asyncio.sleep(max(0.0, started + busy - loop.time()))

    @contextlib.contextmanager
    def _stopped_by(self, stop: asyncio.Event) -> Iterator[None]:
        """While in this block, setting ``stop`` also ends a pause (shutdown never waits for one)."""
        watch = asyncio.ensure_future(stop.wait())
        watch.add_done_callback(lambda _: self.wake())
        try:
            yield
        finally:
            watch.cancel()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


class Wakeups:
    """One pub/sub connection of a process, waking the sleepers that listen to its channels."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._channels: dict[str, list[Sleeper]] = {}
        self._patterns: dict[str, list[Sleeper]] = {}
        #: Announcements received (a process's count; tells a test a message got through).
        self.received = 0

    def on_channel(self, channel: str, sleeper: Sleeper) -> None:
        self._channels.setdefault(channel, []).append(sleeper)

    def on_pattern(self, pattern: str, sleeper: Sleeper) -> None:
        self._patterns.setdefault(pattern, []).append(sleeper)

    def _wake_all(self) -> None:
        for sleepers in (*self._channels.values(), *self._patterns.values()):
            for sleeper in sleepers:
                sleeper.wake()

    def _deliver(self, message: dict[str, Any]) -> None:
        self.received += 1
        pattern = message.get('pattern')
        sleepers = self._patterns.get(_text(pattern)) if pattern else self._channels.get(_text(message['channel']))
        for sleeper in sleepers or ():
            sleeper.wake()

    async def run(self) -> None:
        """Listen until cancelled; a lost connection is made again after a pause."""
        delay = RECONNECT_DELAY
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                if self._channels:
                    await pubsub.subscribe(*self._channels)
                if self._patterns:
                    await pubsub.psubscribe(*self._patterns)
                delay = RECONNECT_DELAY
                # whatever was announced before this connection listened was missed: look now
                self._wake_all()
                async for message in pubsub.listen():
                    self._deliver(message)
            except Exception as exc:  # any failure: the sleepers look, we listen again
                log.warning('wakeups_lost', error=str(exc) or type(exc).__name__, retry_in=delay)
                self._wake_all()
                await asyncio.sleep(delay)
                delay = min(delay * 2, LONGEST_RECONNECT_DELAY)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
