"""Telnyx webhook signatures (Ed25519 over ``timestamp|body``): what ``verify_callback`` takes and refuses."""

from __future__ import annotations

import base64
import json
from urllib.parse import urlencode

from dialer.provider_trunks import TelnyxTrunk
from dialer.providers import verify_callback
from dialer.providers.telnyx import TIMESTAMP_TOLERANCE, client_state, new_private_key, public_key_of, sign


PRIVATE = new_private_key()
NOW = 1_800_000_000.0
URL = 'https://hooks.example.com/webhooks/telnyx?' + urlencode({'a': 'spring:+12125550123:1', 'c': 'call-1'})


def trunk(public_key: str | None = None) -> TelnyxTrunk:
    return TelnyxTrunk.model_validate({
        'name': 'telnyx-direct', 'from': '+14155550100', 'max_concurrent': 1, 'calls_per_second': 1,
        'mode': 'direct', 'connection_id': 'conn-1', 'api_key': 'KEY-telnyx',
        'public_key': public_key or public_key_of(PRIVATE),
    })  # fmt: skip


def event(url: str = URL, event_type: str = 'call.hangup') -> bytes:
    payload = {'call_control_id': 'v3:abc', 'client_state': client_state(url), 'hangup_cause': 'normal_clearing'}
    return json.dumps({'data': {'event_type': event_type, 'id': 'e-1', 'payload': payload}}).encode()


def headers(body: bytes, timestamp: float = NOW, key: str = PRIVATE) -> dict[str, str]:
    stamp = str(int(timestamp))
    return {'telnyx-signature-ed25519': sign(key, stamp, body), 'telnyx-timestamp': stamp}


def test_a_webhook_signed_by_the_accounts_key_is_taken() -> None:
    body = event()
    assert verify_callback(trunk(), URL, headers(body), body, NOW)
    # within the tolerance either way (clocks differ a little)
    assert verify_callback(trunk(), URL, headers(body, NOW - TIMESTAMP_TOLERANCE), body, NOW)
    assert verify_callback(trunk(), URL, headers(body, NOW + TIMESTAMP_TOLERANCE), body, NOW)


def test_a_changed_body_or_a_bad_or_missing_signature_is_refused() -> None:
    body = event()
    good = headers(body)
    assert not verify_callback(trunk(), URL, good, body.replace(b'normal_clearing', b'user_busy'), NOW)
    assert not verify_callback(trunk(), URL, {**good, 'telnyx-signature-ed25519': 'bm90IGEgc2lnbmF0dXJl'}, body, NOW)
    assert not verify_callback(trunk(), URL, {**good, 'telnyx-signature-ed25519': '***'}, body, NOW)
    assert not verify_callback(trunk(), URL, {'telnyx-timestamp': good['telnyx-timestamp']}, body, NOW)
    assert not verify_callback(trunk(), URL, {'telnyx-signature-ed25519': good['telnyx-signature-ed25519']}, body, NOW)
    # the timestamp is part of what is signed
    assert not verify_callback(trunk(), URL, {**good, 'telnyx-timestamp': str(int(NOW) + 1)}, body, NOW)


def test_a_stale_or_future_timestamp_is_refused_even_when_signed() -> None:
    body = event()
    assert not verify_callback(trunk(), URL, headers(body, NOW - TIMESTAMP_TOLERANCE - 1), body, NOW)
    assert not verify_callback(trunk(), URL, headers(body, NOW + TIMESTAMP_TOLERANCE + 1), body, NOW)


def test_a_webhook_signed_by_another_key_or_checked_against_a_bad_public_key_is_refused() -> None:
    body = event()
    assert not verify_callback(trunk(), URL, headers(body, key=new_private_key()), body, NOW)
    # (the trunks file refuses such a key; a trunk built around that check still verifies nothing)
    broken = trunk().model_copy(update={'public_key': base64.b64encode(b'short').decode()})
    assert not verify_callback(broken, URL, headers(body), body, NOW)


def test_a_signed_body_replayed_to_another_attempts_url_is_refused() -> None:
    other = 'https://hooks.example.com/webhooks/telnyx?' + urlencode({'a': 'spring:+12125550199:1', 'c': 'call-2'})
    body = event()
    assert not verify_callback(trunk(), other, headers(body), body, NOW)
    # a webhook without our ids (an inbound call's) needs the signature alone
    plain = json.dumps({'data': {'event_type': 'call.initiated', 'payload': {}}}).encode()
    assert verify_callback(trunk(), 'https://hooks.example.com/inbound/telnyx', headers(plain), plain, NOW)
    assert not verify_callback(trunk(), URL, headers(plain), plain, NOW)
