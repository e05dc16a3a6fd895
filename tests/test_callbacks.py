"""Call-backs: a contact rings back, the fallback handler routes it, the simulator plays it, the
tracker follows it to its end, and an answered call-back closes the contact."""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from dialer import constants as k
from dialer.callbacks import normalise_number
from dialer.models import Outcome
from simulator.testing import free_port, running_simulator
from tests.fleet_helpers import FAST_ENV, FAST_SIMULATOR, wait_for, write_trunks
from tests.openapi_schema import schema_errors
from tests.threaded_server import ThreadedServer
from workers.cli_sip import masked
from workers.fleet import LocalFleet


if TYPE_CHECKING:
    from pathlib import Path

    from starlette.requests import Request


AGENT = '6f9a1c3e-8a39-4bb6-9a55-0f3d5d8e2a10'
CALLBACK_AGENT = '1d2c3b4a-5e6f-4a7b-8c9d-0e1f2a3b4c5d'
DEFAULT_AGENT = '9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b'
SECRET = 'fallback-secret-0123456789abcdef'
N = '+12122000001'


@pytest.mark.parametrize(
    'raw',
    ['+12122000001', '12122000001', '2122000001', 'sip:+12122000001@carrier.example;user=phone',
     '"Ann" <sip:12122000001@carrier.example>;tag=9', 'tel:+1-212-200-0001', '0012122000001'],
)  # fmt: skip
def test_caller_ids_as_carriers_present_them_normalise_to_the_dialled_e164(raw: str) -> None:
    assert normalise_number(raw, 'US') == N


@pytest.mark.parametrize('raw', [None, '', 'anonymous', 'sip:anonymous@anonymous.invalid', '12', '+999'])
def test_caller_ids_that_are_no_number_normalise_to_none(raw: str | None) -> None:
    assert normalise_number(raw, 'US') is None


def test_sip_show_never_prints_the_handler_secrets() -> None:
    shown = masked({'fallbackHandler': {'url': 'https://h.example/sip/fallback', 'secrets': [SECRET, 'x' * 20]}})
    assert SECRET not in json.dumps(shown)
    assert len(shown['fallbackHandler']['secrets']) == 2


class _SlowHandler(ThreadedServer):
    """A fallback handler that answers after Ultravox's 5 s deadline."""

    def __init__(self) -> None:
        async def slow(_: Request) -> JSONResponse:
            await _sleep(6)
            return JSONResponse({'reject': {}})

        super().__init__(Starlette(routes=[Route('/slow', slow, methods=['POST'])]))


async def _sleep(seconds: float) -> None:
    import asyncio  # noqa: PLC0415

    await asyncio.sleep(seconds)


def _incoming(sim_url: str, number: str) -> dict[str, Any]:
    response = httpx.post(f'{sim_url}/_sim/incoming', json={'from': number}, timeout=30)
    assert response.status_code == 200
    return response.json()


def _progress(sync_redis: Any, name: str, number: str) -> dict[str, Any]:
    return json.loads(sync_redis.hget(k.campaign_progress(name), number) or '{}')


@pytest.mark.slow
def test_a_contact_who_calls_back_reaches_the_campaign_agent_with_its_context_and_is_closed(
    tmp_path: Path, redis_url: str, sync_redis: Any
) -> None:
    hook_port = free_port()
    env = {
        **FAST_ENV,
        'DIALER_SIP_FALLBACK_SECRETS': json.dumps([SECRET]),
        'DIALER_WEBHOOK_SECRETS': json.dumps(['whsec-callbacks-0123456789']),
        'DIALER_CALLBACK_DEFAULT_AGENT': DEFAULT_AGENT,
        'DIALER_LOG_LEVEL': 'info',
    }
    with running_simulator(**FAST_SIMULATOR, forced_outcomes={N: ['no_answer', 'answered']}) as sim:
        fleet = LocalFleet(
            redis_url, sim.base_url, write_trunks(tmp_path / 'trunks.toml', 'sip.cb.example', {'t': (4, 50)}), env
        )
        fleet.log_dir = tmp_path
        hooks = fleet.start_webhooks(hook_port)
        try:
            # setup: the account's fallback handler points at `dialer webhooks` (a base URL gets the path)
            done = fleet.cli('sip', 'fallback', 'set', f'http://127.0.0.1:{hook_port}')
            assert '/sip/fallback' in done.stdout
            assert SECRET not in done.stdout + done.stderr
            shown = fleet.cli('sip', 'show', '--json')
            assert SECRET not in shown.stdout
            assert json.loads(shown.stdout)['fallbackHandler']['url'].endswith('/sip/fallback')

            (tmp_path / 'c.csv').write_text(f'phone,contact_id,plan\n{N},ann-1,gold\n', encoding='utf-8')
            (tmp_path / 'c.toml').write_text(
                f'name = "spring"\ntrunk = "t"\nagent_id = "{AGENT}"\n'
                '[hours]\nstart = "00:00"\nend = "24:00"\nlegal_bound = false\n'
                '[retry]\nretry_on = ["no_answer"]\ndelays = { no_answer = 86400 }\nmax_attempts = 3\n'
                f'[callbacks]\nagent_id = "{CALLBACK_AGENT}"\n',
                encoding='utf-8',
            )
            fleet.cli('campaign', 'load', str(tmp_path / 'c.csv'), '--campaign-file', str(tmp_path / 'c.toml'))
            fleet.start_worker()
            wait_for(lambda: _progress(sync_redis, 'spring', N).get('lo') == 'no_answer', 60, 'the first attempt')
            assert _progress(sync_redis, 'spring', N)['s'] == 'retry_wait'

            played = _incoming(sim.base_url, N)
            assert played['result'] == 'created', played
            assert played['agentId'] == CALLBACK_AGENT
            context = played['templateContext']
            assert context['plan'] == 'gold'
            assert context['callback'] is True
            assert context['campaign'] == 'spring'
            assert context['last_outcome'] == 'no_answer'
            assert context['last_called_at']
            assert played['metadata']['direction'] == 'inbound'
            assert played['metadata']['contact_id'] == 'ann-1'

            # tracked to its end like an outbound call; answered: the contact is closed
            wait_for(lambda: _progress(sync_redis, 'spring', N).get('o') == Outcome.CALLED_BACK, 60, 'the close')
            progress = _progress(sync_redis, 'spring', N)
            assert progress['s'] == 'done'
            assert progress['ibo'] == 'answered'
            assert progress['ibc'] == played['callId']
            assert sync_redis.zscore(k.campaign_due('spring'), N) is None, 'no further outbound attempt'
            inbound = [json.loads(v) for v in sync_redis.hvals(k.campaign_inbound('spring'))]
            assert [(r['st'], r['o'], r['call']) for r in inbound] == [('ended', 'answered', played['callId'])]
            outbound = [r for r in sim.records() if r['metadata'].get('direction') != 'inbound']
            assert len(outbound) == 1, 'the contact was dialled once'
            # the call-back is in the contact's export row and the campaign's status
            row = next(csv.DictReader(io.StringIO(fleet.cli('campaign', 'export', 'spring', '--output', '-').stdout)))
            assert (row['callbacks'], row['last_callback_outcome']) == ('1', 'answered')
            assert row['last_callback_call_id'] == played['callId']
            status = json.loads(fleet.cli('campaign', 'status', 'spring', '--json').stdout)
            assert status['callbacks'] == {'routed': 1, 'answered': 1}

            # a number on the DNC list is rejected (603 by default)
            fleet.cli('dnc', 'add', N)
            assert _incoming(sim.base_url, N) | {'from': N} == {
                'from': N, 'result': 'rejected', 'sipCode': 603, 'message': 'the caller is on the do-not-call list'
            }  # fmt: skip
            # a caller no campaign dialled gets the default agent
            stranger = _incoming(sim.base_url, '+12122000077')
            assert (stranger['result'], stranger['agentId']) == ('created', DEFAULT_AGENT)

            # a request signed with a secret the handler does not know: refused, Ultravox rejects with 502
            patched = httpx.patch(
                f'{sim.base_url}/api/sip',
                json={'fallbackHandler': {'url': f'http://127.0.0.1:{hook_port}/sip/fallback', 'secrets': ['x' * 32]}},
                headers={'X-API-Key': 'k'},
            )
            assert patched.status_code == 200
            refused = _incoming(sim.base_url, '+12122000077')
            assert (refused['result'], refused['sipCode']) == ('failed', 502)

            # a handler slower than Ultravox's deadline: 504
            with _SlowHandler() as slow:
                httpx.patch(
                    f'{sim.base_url}/api/sip',
                    json={'fallbackHandler': {'url': f'http://127.0.0.1:{slow.port}/slow', 'secrets': [SECRET]}},
                    headers={'X-API-Key': 'k'},
                )
                late = _incoming(sim.base_url, '+12122000077')
            assert (late['result'], late['sipCode']) == ('failed', 504)
        finally:
            fleet.stop_all()
            hooks.terminate()
            hooks.wait(timeout=30)


def test_the_answers_match_the_fallback_handler_schema() -> None:
    from dialer.callbacks import reject, start_agent_call  # noqa: PLC0415

    answer = start_agent_call(AGENT, {'callback': True}, {'direction': 'inbound'})
    body = dict(answer['startAgentCall'])
    assert body.pop('agentId') == AGENT
    assert schema_errors(body, 'ultravox.v1.StartAgentCallRequest') == []
    assert schema_errors(reject(603, 'no'), 'ultravox.v1.SipFallbackHandlerResponse') == []


async def _answered_callback(redis: Any, number: str, outbox: Any = None) -> None:
    from dialer.callback_scripts import CallbackScripts, inbound_member  # noqa: PLC0415
    from dialer.outbox import NO_OUTBOX  # noqa: PLC0415

    scripts = CallbackScripts(redis, outbox or NO_OUTBOX)
    routed = await scripts.route('c1', number, 'cb-0000000000000001', dialled_ms=0, window_ms=0,
                                 first_poll_ms=0, attempt_id=f'c1:{number}:1')  # fmt: skip
    assert routed.verdict == 'route'
    member = inbound_member('c1', 'cb-0000000000000001')
    assert await scripts.live(member, 'in-call-1', 't1', 0)
    ended = await scripts.end(
        inbound_member('c1', 'cb-0000000000000001', 'in-call-1'), 't1', 'answered', {'call': 'in-call-1', 'sip': 36},
        billing_final=True, close_contact=True, billing_poll_ms=1000,
    )  # fmt: skip
    assert ended.news
    assert ended.billing_counted


async def test_an_answered_call_back_closes_a_waiting_contact_and_stops_a_claimed_attempt(redis: Any) -> None:
    from dialer.scripts import Scripts  # noqa: PLC0415
    from tests.ledger import begin_first, make_campaign  # noqa: PLC0415

    phones = await make_campaign(redis, numbers=3)
    scripts = Scripts(redis)
    in_flight = (await begin_first(scripts)).split('#')[0]  # claimed and begun, its create not yet sent
    # the trunk takes two at once: the third contact is still waiting for its first dial
    statuses = {p: json.loads(await redis.hget(k.campaign_progress('c1'), p) or '{}').get('s') for p in phones}
    waiting = next(p for p, status in statuses.items() if status in {None, 'pending'})
    flying = in_flight.split(':')[1]
    await _answered_callback(redis, flying)
    await _answered_callback(redis, waiting)
    assert await scripts.send(in_flight) == 'closed', 'send.lua is the last check: no create goes out'
    progress = json.loads(await redis.hget(k.campaign_progress('c1'), waiting))
    assert (progress['s'], progress['o']) == ('done', 'called_back')
    assert await redis.zscore(k.campaign_due('c1'), waiting) is None
    assert await redis.hget(k.campaign('c1'), 'ib_sip_seconds') == '72'


async def test_a_contact_closed_by_its_call_back_announces_itself(redis: Any) -> None:
    from dialer.outbox import Outbox, ResultWebhook  # noqa: PLC0415
    from tests.ledger import make_campaign  # noqa: PLC0415

    phones = await make_campaign(redis, numbers=1)
    await _answered_callback(
        redis, phones[0], Outbox((ResultWebhook(url='http://127.0.0.1:9/a', secret='s' * 16),), 100)
    )
    ids = await redis.zrange(k.OUTBOX_LOG, 0, -1)
    events = [json.loads(raw) for raw in await redis.hmget(k.OUTBOX_EVENTS, ids)]
    assert (events[0]['type'], events[0]['data']['final_outcome']) == ('contact.completed', 'called_back')


async def test_send_writes_the_call_back_index_entry_with_its_retention(redis: Any) -> None:
    from dialer.callbacks import IndexEntry  # noqa: PLC0415
    from dialer.scripts import Scripts  # noqa: PLC0415
    from tests.ledger import begin_first, make_campaign  # noqa: PLC0415

    await make_campaign(redis, numbers=1)
    scripts = Scripts(redis)
    attempt_id = (await begin_first(scripts)).split('#')[0]
    number = attempt_id.split(':')[1]
    verdict = await scripts.send(attempt_id, contact_id='id2', caller_id='+14155550100', callback_retention_ms=60_000)
    assert verdict == 'go'
    entry = IndexEntry.parse(await redis.get(k.callback(number)))
    assert entry is not None
    assert (entry.campaign, entry.contact_id, entry.attempt_id, entry.caller_id) == (
        'c1',
        'id2',
        attempt_id,
        '+14155550100',
    )
    assert 0 < await redis.pttl(k.callback(number)) <= 60_000
