"""Call-backs on provider numbers: a contact rings back our Twilio / Telnyx / Plivo number, the provider's
signed inbound webhook reaches ``dialer webhooks``, which creates the Ultravox call on the provider medium
and answers with the provider's stream XML; the simulator plays it, the tracker follows it to its end.
Also: ``route_after_end`` counted from the campaign's end, and a requeue of ``called_back`` contacts."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from dialer import constants as k
from dialer.models import Outcome
from dialer.providers.telnyx import new_private_key, public_key_of
from simulator.testing import free_port, running_simulator
from tests.fleet_helpers import FAST_ENV, FAST_SIMULATOR, wait_for
from workers.fleet import LocalFleet


if TYPE_CHECKING:
    from pathlib import Path


AGENT = '6f9a1c3e-8a39-4bb6-9a55-0f3d5d8e2a10'
CALLBACK_AGENT = '1d2c3b4a-5e6f-4a7b-8c9d-0e1f2a3b4c5d'
DEFAULT_AGENT = '9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b'
OUR_NUMBER = '+14155550100'
N = '+12122000001'
N2 = '+12122000002'
STRANGER = '+12122000077'
TELNYX_KEY = new_private_key()
#: provider -> (the simulated account, the trunk's verification field as TOML)
ACCOUNTS: dict[str, tuple[dict[str, str], str]] = {
    'twilio': ({'account_sid': 'AC' + '1' * 32, 'auth_token': 'tw-inbound-s3cret'}, 'auth_token = "tw-inbound-s3cret"'),
    'telnyx': ({'private_key': TELNYX_KEY}, f'public_key = "{public_key_of(TELNYX_KEY)}"'),
    'plivo': ({'auth_id': 'MA' + 'B' * 18, 'auth_token': 'pl-inbound-s3cret'}, 'auth_token = "pl-inbound-s3cret"'),
}
#: what each provider's stream XML must look like (the simulator parses it as the provider would)
STREAM_XML = {
    'twilio': '<Response><Connect><Stream url=',
    'telnyx': 'bidirectionalMode="rtp"',
    'plivo': '<Stream bidirectional="true" keepCallAlive="true" contentType="audio/x-mulaw;rate=8000">',
}


def _progress(sync_redis: Any, name: str, number: str) -> dict[str, Any]:
    return json.loads(sync_redis.hget(k.campaign_progress(name), number) or '{}')


def _inbound(sync_redis: Any, number: str) -> dict[str, Any]:
    """The campaign's last inbound call record from ``number``."""
    records = [json.loads(v) for v in sync_redis.hvals(k.campaign_inbound('spring'))]
    return max((r for r in records if r['n'] == number), key=lambda r: r['t0'], default={})


def _ring(sim_url: str, **ring: Any) -> dict[str, Any]:
    response = httpx.post(f'{sim_url}/_sim/provider_incoming', json=ring, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['twilio', 'telnyx', 'plivo'])
def test_a_contact_who_calls_back_a_provider_number_reaches_the_campaign_agent_and_is_closed(
    tmp_path: Path, redis_url: str, sync_redis: Any, kind: str
) -> None:
    hook_port = free_port()
    base = f'http://127.0.0.1:{hook_port}'
    account, credential = ACCOUNTS[kind]
    trunks = tmp_path / 'trunks.toml'
    trunks.write_text(
        f'[trunks.numbers]\nkind = "{kind}"\nfrom = "{OUR_NUMBER}"\nmax_concurrent = 4\ncalls_per_second = 50\n'
        f'{credential}\ncallback_url = "{base}"\n',
        encoding='utf-8',
    )
    env = {**FAST_ENV, 'DIALER_CALLBACK_DEFAULT_AGENT': DEFAULT_AGENT, 'DIALER_LOG_LEVEL': 'info'}
    env['DIALER_PROVIDER_ANSWER_DEADLINE'] = '1'
    simulator = {**FAST_SIMULATOR, 'telephony_providers': [kind], 'provider_accounts': {kind: account}}
    with running_simulator(**simulator, forced_outcomes={N: ['no_answer'], N2: ['no_answer']}) as sim:
        fleet = LocalFleet(redis_url, sim.base_url, trunks, env, log_dir=tmp_path)
        # setup: `trunks check` prints the exact URL to paste into the provider's console
        checked = fleet.cli('trunks', 'check')
        url = f'{base}/inbound/{kind}'
        assert f'paste {url} into' in checked.stdout
        assert 's3cret' not in checked.stdout + checked.stderr
        hooks = fleet.start_webhooks(hook_port)
        try:
            (tmp_path / 'c.csv').write_text(f'phone,contact_id,plan\n{N},ann-1,gold\n{N2},bob-2,silver\n', 'utf-8')
            (tmp_path / 'c.toml').write_text(
                f'name = "spring"\ntrunk = "numbers"\nagent_id = "{AGENT}"\n'
                '[hours]\nstart = "00:00"\nend = "24:00"\nlegal_bound = false\n'
                '[retry]\nretry_on = ["no_answer"]\ndelays = { no_answer = 86400 }\nmax_attempts = 3\n'
                f'[callbacks]\nagent_id = "{CALLBACK_AGENT}"\n',
                encoding='utf-8',
            )
            fleet.cli('campaign', 'load', str(tmp_path / 'c.csv'), '--campaign-file', str(tmp_path / 'c.toml'))
            fleet.start_worker()
            for number in (N, N2):
                wait_for(lambda n=number: _progress(sync_redis, 'spring', n).get('lo') == 'no_answer', 60, 'a dial')
            outbound = len(sim.records())

            # a badly signed webhook: refused, nothing created
            forged = _ring(sim.base_url, provider=kind, url=url, to=OUR_NUMBER, forge=True, **{'from': N})
            assert (forged['result'], forged['status']) == ('failed', 401)
            assert len(sim.records()) == outbound

            played = _ring(sim.base_url, provider=kind, url=url, to=OUR_NUMBER, **{'from': N})
            assert played['result'] == 'created', played
            assert STREAM_XML[kind] in played['xml']
            assert played['agentId'] == CALLBACK_AGENT
            assert played['medium'] == {kind: {}}
            assert played['firstSpeakerSettings'] == {'agent': {}}
            context = played['templateContext']
            assert (context['plan'], context['callback'], context['campaign']) == ('gold', True, 'spring')
            assert context['last_outcome'] == 'no_answer'
            assert played['metadata']['direction'] == 'inbound'
            assert played['metadata']['contact_id'] == 'ann-1'
            assert len(sim.records()) == outbound + 1

            # the provider asks again for the same call: the same answer, no second Ultravox call
            again = _ring(sim.base_url, provider=kind, replay=played['callSid'])
            assert again['xml'] == played['xml']
            assert again['result'] == 'already_joined'
            assert len(sim.records()) == outbound + 1

            # tracked to its end like a SIP call-back, billed as a provider call; the contact is closed
            wait_for(lambda: _progress(sync_redis, 'spring', N).get('o') == Outcome.CALLED_BACK, 60, 'the close')
            progress = _progress(sync_redis, 'spring', N)
            assert (progress['s'], progress['ibo'], progress['ibc']) == ('done', 'answered', played['callId'])
            assert sync_redis.zscore(k.campaign_due('spring'), N) is None, 'no further outbound attempt'
            wait_for(
                lambda: all(json.loads(v).get('bf') == 1 for v in sync_redis.hvals(k.campaign_inbound('spring'))),
                60,
                'the final billing',
            )
            [inbound] = [json.loads(v) for v in sync_redis.hvals(k.campaign_inbound('spring'))]
            assert (inbound['st'], inbound['o'], inbound['call'], inbound['kind']) == (
                'ended',
                'answered',
                played['callId'],
                kind,
            )
            assert inbound['sip'] == 0, 'a provider number carries no Ultravox SIP minutes'
            assert inbound['agent'] > 0

            # a caller on the DNC list is rejected with the provider's reject XML; nothing is created
            fleet.cli('dnc', 'add', N)
            assert _ring(sim.base_url, provider=kind, url=url, to=OUR_NUMBER, **{'from': N})['result'] == 'rejected'
            # a caller no campaign dialled gets the default agent
            stranger = _ring(sim.base_url, provider=kind, url=url, to=OUR_NUMBER, **{'from': STRANGER})
            assert (stranger['result'], stranger['agentId']) == ('created', DEFAULT_AGENT)
            assert stranger['templateContext'] == {'callback': False}
            assert len(sim.records()) == outbound + 2
            # a number that is none of ours: 404, the provider plays its error
            other = _ring(sim.base_url, provider=kind, url=url, to='+14155550199', **{'from': STRANGER})
            assert (other['result'], other['status']) == ('failed', 404)

            # Ultravox refuses the create (the call-back agent is gone): a polite hang-up, recorded at once
            sim.configure(known_agents=[AGENT, DEFAULT_AGENT])
            failed = _ring(sim.base_url, provider=kind, url=url, to=OUR_NUMBER, **{'from': N2})
            assert failed['result'] == 'hung_up'
            assert failed['said'].startswith('Sorry, we cannot take your call right now.')
            wait_for(lambda: _inbound(sync_redis, N2).get('st') == 'not_created', 30, 'the not-created record')
            assert _progress(sync_redis, 'spring', N2)['s'] == 'retry_wait', 'the contact stays open'
            assert len(sim.records()) == outbound + 2
            assert 'provider_inbound_create_failed' in (tmp_path / 'webhooks.log').read_text(encoding='utf-8')

            # Ultravox slower than the answer deadline (1 s here): the provider still gets an answer in
            # time, the apology, instead of waiting until its own timeout
            sim.configure(slow_rate=1.0, slow_seconds=4.0)
            slow = _ring(sim.base_url, provider=kind, url=url, to=OUR_NUMBER, **{'from': STRANGER})
            assert slow['result'] == 'hung_up', slow
            assert slow['said'].startswith('Sorry, we cannot take your call right now.')
        finally:
            fleet.stop_all()
            hooks.terminate()
            hooks.wait(timeout=30)


def test_a_provider_number_without_a_public_url_says_how_to_set_one(tmp_path: Path, redis_url: str) -> None:
    trunks = tmp_path / 'trunks.toml'
    trunks.write_text(
        f'[trunks.numbers]\nkind = "plivo"\nfrom = "{OUR_NUMBER}"\nmax_concurrent = 1\ncalls_per_second = 1\n',
        encoding='utf-8',
    )
    with running_simulator(telephony_providers=['plivo']) as sim:
        checked = LocalFleet(redis_url, sim.base_url, trunks).cli('trunks', 'check')
    assert 'set callback_url = "https://' in checked.stdout
    assert '/inbound/plivo' in checked.stdout
    assert 'set auth_token on trunk numbers' not in checked.stdout, 'said once the URL can be pasted'


async def test_route_after_end_counts_from_the_campaigns_end_not_the_last_dial(redis: Any) -> None:
    from dialer.callback_scripts import CallbackScripts  # noqa: PLC0415
    from dialer.scripts import Scripts  # noqa: PLC0415
    from tests.ledger import make_campaign  # noqa: PLC0415

    [number] = await make_campaign(redis, numbers=1)
    scripts, callbacks = Scripts(redis), CallbackScripts(redis)
    day = 86_400_000
    dialled = await scripts.now_ms() - 10 * day  # dialled ten days ago; the window is a week

    async def route(callback_id: str) -> str:
        routed = await callbacks.route(
            'c1', number, callback_id, dialled_ms=dialled, window_ms=7 * day, first_poll_ms=0, attempt_id='a'
        )
        return routed.verdict

    assert await route('cb-0000000000000001') == 'route', 'a running campaign takes its call-backs'
    await scripts.lifecycle('c1', 't1', 'cancel')
    assert int(await redis.hget(k.campaign('c1'), 'ended')) >= dialled + 10 * day
    assert await route('cb-0000000000000002') == 'route', 'cancelled just now: within a week of its end'
    await redis.set(k.CLOCK_OFFSET, 7 * day + 60_000)
    assert await route('cb-0000000000000003') == 'ended', 'a week and a minute after its end'


async def test_a_called_back_contact_requeued_on_purpose_is_dialled_again(redis: Any) -> None:
    from campaigns.requeue import requeue  # noqa: PLC0415
    from dialer.callback_scripts import CallbackScripts, inbound_member  # noqa: PLC0415
    from dialer.scripts import Scripts  # noqa: PLC0415
    from tests.ledger import begin_first, make_campaign  # noqa: PLC0415

    [number] = await make_campaign(redis, numbers=1)
    callbacks, scripts = CallbackScripts(redis), Scripts(redis)
    callback_id = 'cb-0000000000000001'
    await callbacks.route('c1', number, callback_id, dialled_ms=0, window_ms=0, first_poll_ms=0, attempt_id='a')
    assert await callbacks.live(inbound_member('c1', callback_id), 'in-1', 't1', 0)
    member = inbound_member('c1', callback_id, 'in-1')
    await callbacks.end(member, 't1', 'answered', {'call': 'in-1'}, billing_final=True, close_contact=True,
                        billing_poll_ms=0)  # fmt: skip
    progress = json.loads(await redis.hget(k.campaign_progress('c1'), number))
    assert (progress['s'], progress['o']) == ('done', Outcome.CALLED_BACK)
    campaign = await redis.hgetall(k.campaign('c1'))
    assert campaign['state'] == 'completed'
    assert 'ended' in campaign, 'a completed campaign records when it ended'

    assert await requeue(redis, 'c1', Outcome.CALLED_BACK) == 1
    progress = json.loads(await redis.hget(k.campaign_progress('c1'), number))
    assert progress['s'] == 'pending'
    assert 'cbk' not in progress, 'no longer closed by its call-back'
    assert progress['ibo'] == 'answered', 'the call-back itself stays on record'
    campaign = await redis.hgetall(k.campaign('c1'))
    assert (campaign['state'], campaign.get('ended')) == ('active', None)
    attempt_id = (await begin_first(scripts)).split('#')[0]
    assert await scripts.send(attempt_id) == 'go', 'the contact is dialled again'
