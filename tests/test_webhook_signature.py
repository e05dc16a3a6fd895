"""Webhook deliveries are trusted only when fresh and signed with one of our secrets."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from dialer.webhooks import WebhookRejected, sign_webhook, verify_webhook


NOW = datetime(2026, 7, 1, 12, 0, 0, tzinfo=UTC)
BODY = b'{"event": "call.ended", "call": {"callId": "c1"}}'
SECRET = 'whsec-current'
OLD_SECRET = 'whsec-previous'


def stamp(offset: float = 0.0) -> str:
    return (NOW + timedelta(seconds=offset)).isoformat()


def verify(
    body: bytes = BODY,
    timestamp: str | None = None,
    signatures: str | None = None,
    secrets: tuple[str, ...] = (SECRET,),
    max_age: float = 60.0,
) -> None:
    timestamp = stamp() if timestamp is None else timestamp
    signatures = sign_webhook(body, timestamp, SECRET) if signatures is None else signatures
    verify_webhook(body, timestamp, signatures, [SecretStr(s) for s in secrets], now=NOW, max_age=max_age)


def rejection(**kwargs: object) -> str:
    with pytest.raises(WebhookRejected) as caught:
        verify(**kwargs)  # type: ignore[arg-type]
    return caught.value.reason


def test_signature_is_hex_hmac_sha256_over_body_then_timestamp() -> None:
    expected = hmac.new(SECRET.encode(), BODY + stamp().encode(), hashlib.sha256).hexdigest()
    assert sign_webhook(BODY, stamp(), SECRET) == expected


def test_a_fresh_correctly_signed_delivery_is_accepted() -> None:
    verify()
    verify(timestamp=stamp(-59))
    verify(timestamp=stamp(59))


def test_a_zulu_timestamp_is_accepted() -> None:
    timestamp = '2026-07-01T11:59:30Z'
    verify(timestamp=timestamp, signatures=sign_webhook(BODY, timestamp, SECRET))


def test_any_of_several_signatures_may_match_during_rotation() -> None:
    timestamp = stamp()
    both = f'{sign_webhook(BODY, timestamp, OLD_SECRET)}, {sign_webhook(BODY, timestamp, SECRET)}'
    # Ultravox signs with old and new secret; we hold either or both.
    verify(timestamp=timestamp, signatures=both, secrets=(SECRET,))
    verify(timestamp=timestamp, signatures=both, secrets=(OLD_SECRET,))
    verify(
        timestamp=timestamp,
        signatures=sign_webhook(BODY, timestamp, OLD_SECRET),
        secrets=(SECRET, OLD_SECRET),
    )


def test_a_signature_from_an_unknown_secret_is_rejected() -> None:
    assert rejection(signatures=sign_webhook(BODY, stamp(), 'someone-else')) == 'bad_signature'
    assert rejection(signatures='not-hex, ,') == 'bad_signature'


def test_a_tampered_body_or_timestamp_is_rejected() -> None:
    signature = sign_webhook(BODY, stamp(), SECRET)
    assert rejection(body=BODY + b' ', signatures=signature) == 'bad_signature'
    assert rejection(timestamp=stamp(1), signatures=signature) == 'bad_signature'


def test_a_stale_delivery_is_rejected_even_when_signed() -> None:
    timestamp = stamp(-61)
    assert rejection(timestamp=timestamp, signatures=sign_webhook(BODY, timestamp, SECRET)) == 'stale'


def test_a_delivery_from_the_future_is_rejected_even_when_signed() -> None:
    timestamp = stamp(61)
    assert rejection(timestamp=timestamp, signatures=sign_webhook(BODY, timestamp, SECRET)) == 'future'


@pytest.mark.parametrize(('timestamp', 'signatures'), [('', 'abc'), (stamp(), ''), (None, None)])
def test_missing_headers_are_rejected(timestamp: str | None, signatures: str | None) -> None:
    with pytest.raises(WebhookRejected) as caught:
        verify_webhook(BODY, timestamp, signatures, [SecretStr(SECRET)], now=NOW, max_age=60)
    assert caught.value.reason == 'missing_headers'


def test_an_unparsable_timestamp_is_rejected() -> None:
    assert rejection(timestamp='yesterday', signatures=sign_webhook(BODY, 'yesterday', SECRET)) == 'bad_timestamp'


def test_without_a_usable_secret_nothing_is_accepted() -> None:
    # An empty secret would make the signature computable by anyone.
    timestamp = stamp()
    assert rejection(timestamp=timestamp, signatures=sign_webhook(BODY, timestamp, ''), secrets=('',)) == 'no_secret'
    assert rejection(secrets=()) == 'no_secret'


def test_rejections_never_reveal_the_secret_or_expected_signature() -> None:
    timestamp = stamp()
    with pytest.raises(WebhookRejected) as caught:
        verify(timestamp=timestamp, signatures='00' * 32)
    assert SECRET not in str(caught.value)
    assert sign_webhook(BODY, timestamp, SECRET) not in str(caught.value)
