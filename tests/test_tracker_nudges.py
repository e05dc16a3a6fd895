"""The call tracker against a real Redis and a real HTTP peer: a webhook that nudges a call while this
tracker is polling it is served by that poll, not by a second poll of the same call."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from dialer import constants as k
from dialer.settings import Settings
from tests.ledger import live_call
from tests.threaded_server import ThreadedServer
from workers.runtime import Runtime
from workers.tracker import CallTracker


if TYPE_CHECKING:
    from pathlib import Path

    from starlette.requests import Request


def ultravox_peer(gate: threading.Event, requests: dict[str, int]) -> Starlette:
    """GET of the call waits for ``gate`` the first time, then answers it ended (billing final after that)."""
    ended = datetime.now(UTC)

    async def get_call(request: Request) -> JSONResponse:
        requests['get'] += 1
        if requests['get'] == 1:
            await asyncio.to_thread(gate.wait, 60)
        billed = requests['get'] > 1
        call: dict[str, Any] = {
            'callId': request.path_params['call_id'],
            'created': (ended - timedelta(seconds=40)).isoformat(),
            'joined': (ended - timedelta(seconds=35)).isoformat(),
            'ended': ended.isoformat(),
            'endReason': 'hangup',
            'billedDuration': '36s' if billed else None,
            'billingStatus': 'BILLING_STATUS_BILLED' if billed else 'BILLING_STATUS_PENDING',
            'sipDetails': {'billedDuration': '36s' if billed else None, 'terminationReason': 'SIP_TERMINATION_NORMAL'},
        }
        return JSONResponse(call)

    async def messages(_: Request) -> JSONResponse:
        requests['messages'] += 1
        return JSONResponse({'results': [], 'next': None, 'previous': None, 'total': 0})

    return Starlette(routes=[Route('/api/calls/{call_id}', get_call), Route('/api/calls/{call_id}/messages', messages)])


async def wait_for(condition: Any, what: str) -> None:
    for _ in range(3000):  # bounded by the test timeout, not a margin: each condition comes true on its own
        if await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f'never happened: {what}')


async def test_a_call_nudged_while_its_poll_runs_is_polled_once_and_its_billing_looked_at_right_after(
    redis, redis_url: str, tmp_path: Path
) -> None:
    gate = threading.Event()
    requests = {'get': 0, 'messages': 0}
    trunks = tmp_path / 'trunks.toml'
    trunks.write_text(
        '[trunks.t1]\nhost = "sip.t1.example"\nfrom = "+14155550100"\nmax_concurrent = 2\ncalls_per_second = 1\n'
    )
    attempt_id = await live_call(redis)
    member = f'{attempt_id}|call-1'
    with ThreadedServer(ultravox_peer(gate, requests)) as peer:
        settings = Settings(
            redis_url=redis_url,
            trunks_file=trunks,
            ultravox_base_url=f'http://127.0.0.1:{peer.port}',
            ultravox_api_key=SecretStr('key'),
            # nothing is polled again by the clock during the test: only a nudge makes an entry due
            poll_initial=600,
            poll_interval=600,
            poll_safety_interval=600,
        )
        rt = Runtime.create(settings)
        stop = asyncio.Event()
        await redis.zadd(k.TRACKING, {member: 0}, xx=True)  # due: the tracker polls it at once
        loop = asyncio.create_task(CallTracker(rt).run(stop))
        try:
            await wait_for(lambda: asyncio.sleep(0, requests['get'] == 1), 'the first poll reaches Ultravox')
            # call.ended arrives while that poll waits for its answer: the receiver makes the entry due
            nudged_at = await rt.scripts.now_ms()
            await redis.zadd(k.TRACKING, {member: nudged_at}, xx=True)
            # the tracker leases it again (pushing it ahead) while its own poll of it still runs
            await wait_for(
                lambda: _score_above(redis, member, nudged_at), 'the nudged entry is leased by the tracker again'
            )
            gate.set()

            async def billing_settled() -> bool:
                raw = await redis.hget(k.campaign_attempts('c1'), attempt_id.split(':', 1)[1])
                return bool(raw) and json.loads(raw).get('bf') == 1

            await wait_for(billing_settled, 'billing settled by the poll the nudge left due')
        finally:
            gate.set()
            stop.set()
            await loop
            await rt.close()
    record = json.loads(await redis.hget(k.campaign_attempts('c1'), attempt_id.split(':', 1)[1]))
    assert (record['st'], record['o'], record['bsrc']) == ('ended', 'answered', 'ultravox')
    assert requests == {'get': 2, 'messages': 1}, 'one poll for the end, one for the billing: none twice'
    assert await redis.zcard(k.TRACKING) == 0


async def _score_above(redis: Any, member: str, ms: int) -> bool:
    score = await redis.zscore(k.TRACKING, member)
    return score is not None and score > ms
