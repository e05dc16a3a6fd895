"""Plivo V3 signatures (HMAC-SHA256 over URL, sorted POST params, nonce): what ``verify_callback`` takes."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlencode

from dialer.provider_trunks import PlivoTrunk
from dialer.providers import verify_callback
from dialer.providers.plivo import signature, signed_text


TOKEN = 'plivo-s3cret-auth-token'
NOW = 1_800_000_000.0
URL = 'https://hooks.example.com/webhooks/plivo?' + urlencode({'a': 'spring:+12125550123:1', 'c': 'call-1'})
PARAMS = [('CallUUID', 'd0a87a1a-b0e9'), ('CallStatus', 'completed'), ('HangupCauseName', 'Normal Hangup')]


def trunk(token: str = TOKEN) -> PlivoTrunk:
    return PlivoTrunk.model_validate({
        'name': 'plivo-direct', 'from': '+14155550100', 'max_concurrent': 1, 'calls_per_second': 1,
        'mode': 'direct', 'auth_id': 'MA' + 'A' * 18, 'auth_token': token,
        'callback_url': 'https://hooks.example.com',
    })  # fmt: skip


def headers(
    url: str = URL, params: list[tuple[str, str]] = PARAMS, token: str = TOKEN, nonce: str = 'n-1'
) -> dict[str, str]:
    return {'x-plivo-signature-v3': signature(token, url, params, nonce), 'x-plivo-signature-v3-nonce': nonce}


def test_the_signed_text_is_plivos_v3_base_string() -> None:
    # the SDK's construct_post_url: URL without query, '?', sorted query k=v joined by '&', '.', sorted POST kv
    assert signed_text(URL, PARAMS) == (
        'https://hooks.example.com/webhooks/plivo?a=spring:+12125550123:1&c=call-1.'
        'CallStatuscompletedCallUUIDd0a87a1a-b0e9HangupCauseNameNormal Hangup'
    )
    assert signed_text('https://h.example/p', PARAMS[:1]) == 'https://h.example/p?CallUUIDd0a87a1a-b0e9'
    assert signed_text('https://h.example/p?x=1', []) == 'https://h.example/p?x=1'
    assert signed_text('https://h.example/p', []) == 'https://h.example/p'
    expected = hmac.new(TOKEN.encode(), (signed_text(URL, PARAMS) + '.n-1').encode(), hashlib.sha256).digest()
    assert signature(TOKEN, URL, PARAMS, 'n-1') == base64.b64encode(expected).decode()


def test_a_callback_signed_with_the_accounts_token_is_taken() -> None:
    body = urlencode(PARAMS).encode()
    assert verify_callback(trunk(), URL, headers(), body, NOW)
    # the POST parameters are sorted before signing: their order on the wire does not matter
    assert verify_callback(trunk(), URL, headers(), urlencode(PARAMS[::-1]).encode(), NOW)
    # while a token rotates Plivo sends one signature per token, comma-separated
    rotated = headers()
    rotated['x-plivo-signature-v3'] = (
        headers(token='the-old-token')['x-plivo-signature-v3'] + ',' + rotated['x-plivo-signature-v3']
    )
    assert verify_callback(trunk(), URL, rotated, body, NOW)


def test_a_bad_missing_or_other_accounts_signature_is_refused() -> None:
    body = urlencode(PARAMS).encode()
    assert not verify_callback(trunk(), URL, headers(token='another-accounts-token'), body, NOW)
    assert not verify_callback(trunk('another-accounts-token'), URL, headers(), body, NOW)
    good = headers()
    assert not verify_callback(trunk(), URL, {'x-plivo-signature-v3': good['x-plivo-signature-v3']}, body, NOW)
    assert not verify_callback(trunk(), URL, {'x-plivo-signature-v3-nonce': 'n-1'}, body, NOW)
    assert not verify_callback(trunk(), URL, {**good, 'x-plivo-signature-v3-nonce': 'n-2'}, body, NOW)
    assert not verify_callback(trunk(), URL, {}, body, NOW)


def test_a_tampered_url_or_body_is_refused() -> None:
    body = urlencode(PARAMS).encode()
    good = headers()
    other_attempt = URL.replace('spring%3A%2B12125550123%3A1', 'spring%3A%2B12125550199%3A1')
    assert other_attempt != URL
    assert not verify_callback(trunk(), other_attempt, good, body, NOW)
    assert not verify_callback(trunk(), URL.replace('call-1', 'call-2'), good, body, NOW)
    assert not verify_callback(trunk(), URL.replace('https://', 'http://'), good, body, NOW)
    assert not verify_callback(trunk(), URL, good, body.replace(b'completed', b'busy'), NOW)
    assert not verify_callback(trunk(), URL, good, body + b'&Machine=true', NOW)
