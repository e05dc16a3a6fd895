"""Direct-mode providers under test: each one's trunks-file entry, credentials, simulated account, outcome
mapping and signed status callback. A provider joins the direct-mode end-to-end and fault tests
(``tests/test_provider_trunks_end_to_end.py``, ``tests/test_provider_leg_faults.py``) by adding its
entry to ``DIRECT_PROVIDERS``."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dialer.providers.plivo import NONCE_HEADER
from dialer.providers.plivo import SIGNATURE_HEADER as PLIVO_SIGNATURE
from dialer.providers.plivo import signature as plivo_signature
from dialer.providers.telnyx import SIGNATURE_HEADER, TIMESTAMP_HEADER, client_state, new_private_key, public_key_of
from dialer.providers.telnyx import sign as telnyx_sign
from dialer.providers.twilio import signature as twilio_signature


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from workers.fleet import LocalFleet

#: Outcomes every direct-mode provider tells apart from its own status (the simulator's played outcome -> ours).
COMMON_OUTCOMES = {
    'answered': 'answered',
    'no_answer': 'no_answer',
    'unavailable': 'no_answer',
    'busy': 'busy',
    'connection_error': 'failed',
    'system_error': 'failed',
    'voicemail': 'voicemail',  # answered by a machine, as the provider's AMD says
}


@dataclass(frozen=True)
class DirectProvider:
    kind: str
    #: TOML values of the trunk's credential fields (``mode = "direct"`` is added by the tests).
    trunk_fields: dict[str, str]
    #: The simulator's ``provider_accounts[kind]``.
    account: dict[str, str]
    #: Environment of the fleet: the credential variables the trunk names and the provider's base URL setting.
    env: Callable[[str], dict[str, str]]
    #: ``additional_params`` (TOML) asking for answering-machine detection.
    amd_params: str
    #: The simulator's played outcome -> ours, as the polled call tells it.
    outcomes: dict[str, str]
    #: Secrets that must never show in an export.
    secrets: tuple[str, ...]
    #: (headers, body) of a status callback about leg ``leg_id`` to ``url``, signed with the account's
    #: credential (``good``) or with another one.
    callback: Callable[[str, str, bool], tuple[dict[str, str], bytes]] = field(repr=False)
    #: The provider fetches each answered call's instructions from ``dialer webhooks`` (Plivo's answer
    #: URL): the tests then run one, point the trunk's ``callback_url`` at it, and give the Ultravox
    #: calls a long ``join_timeout`` (the stream starts only once the callee answers).
    webhooks: bool = False

    def hook_fields(self, port: int) -> dict[str, str]:
        """Trunk fields of a test whose fleet serves ``dialer webhooks`` on ``port`` (if the provider needs it)."""
        return {'callback_url': f'"http://127.0.0.1:{port}"'} if self.webhooks else {}


TWILIO_SID = 'AC' + '1' * 32
TWILIO_TOKEN = 'tw-s3cret-token'


def _twilio_callback(url: str, leg_id: str, good: bool) -> tuple[dict[str, str], bytes]:
    params = [('CallSid', leg_id), ('AccountSid', TWILIO_SID), ('CallStatus', 'completed')]
    signature = twilio_signature(TWILIO_TOKEN if good else 'not-the-token', url, params)
    body = '&'.join(f'{key}={value}' for key, value in params).encode()
    return {'X-Twilio-Signature': signature, 'Content-Type': 'application/x-www-form-urlencoded'}, body


TELNYX_KEY = 'KEY0123456789-telnyx-secret'
TELNYX_PRIVATE = base64.b64encode(hashlib.sha256(b'dialer tests: telnyx account').digest()).decode()


def _telnyx_callback(url: str, leg_id: str, good: bool) -> tuple[dict[str, str], bytes]:
    payload = {'call_control_id': leg_id, 'client_state': client_state(url), 'hangup_cause': 'normal_clearing'}
    body = json.dumps({'data': {'event_type': 'call.hangup', 'id': 'e-1', 'payload': payload}}).encode()
    stamp = str(int(time.time()))
    key = TELNYX_PRIVATE if good else new_private_key()
    return {SIGNATURE_HEADER: telnyx_sign(key, stamp, body), TIMESTAMP_HEADER: stamp}, body


PLIVO_AUTH_ID = 'MA' + 'P' * 18
PLIVO_TOKEN = 'plivo-s3cret-auth-token'


def _plivo_callback(url: str, leg_id: str, good: bool) -> tuple[dict[str, str], bytes]:
    params = [('CallUUID', leg_id), ('RequestUUID', leg_id), ('CallStatus', 'completed')]
    nonce = f'nonce-{time.time_ns()}'
    signature = plivo_signature(PLIVO_TOKEN if good else 'not-the-token', url, params, nonce)
    body = '&'.join(f'{key}={value}' for key, value in params).encode()
    headers = {PLIVO_SIGNATURE: signature, NONCE_HEADER: nonce, 'Content-Type': 'application/x-www-form-urlencoded'}
    return headers, body


SETUPS: dict[str, DirectProvider] = {
    'twilio': DirectProvider(
        kind='twilio',
        trunk_fields={'account_sid': f'"{TWILIO_SID}"', 'auth_token_env': '"TWILIO_TOKEN"'},
        account={'account_sid': TWILIO_SID, 'auth_token': TWILIO_TOKEN},
        env=lambda url: {'TWILIO_TOKEN': TWILIO_TOKEN, 'DIALER_TWILIO_BASE_URL': url},
        amd_params='{ MachineDetection = "Enable" }',
        # a declined call reads "busy", an invalid number "failed" (the Call resource's status alone)
        outcomes={**COMMON_OUTCOMES, 'rejected': 'busy', 'invalid_number': 'failed'},
        secrets=(TWILIO_TOKEN,),
        callback=_twilio_callback,
    ),
    'telnyx': DirectProvider(
        kind='telnyx',
        trunk_fields={
            'connection_id': '"conn-ultravox-1"',
            'api_key_env': '"TELNYX_KEY"',
            'public_key': f'"{public_key_of(TELNYX_PRIVATE)}"',
        },
        account={'api_key': TELNYX_KEY, 'connection_id': 'conn-ultravox-1', 'private_key': TELNYX_PRIVATE},
        env=lambda url: {'TELNYX_KEY': TELNYX_KEY, 'DIALER_TELNYX_BASE_URL': url},
        amd_params='{ MachineDetection = "Enable" }',
        # call.hangup's hangup_cause tells a declined call (call_rejected) and a wrong number (not_found)
        outcomes={**COMMON_OUTCOMES, 'rejected': 'rejected', 'invalid_number': 'invalid_number'},
        secrets=(TELNYX_KEY, TELNYX_PRIVATE),
        callback=_telnyx_callback,
    ),
    'plivo': DirectProvider(
        kind='plivo',
        trunk_fields={'auth_id': f'"{PLIVO_AUTH_ID}"', 'auth_token_env': '"PLIVO_TOKEN"'},
        account={'auth_id': PLIVO_AUTH_ID, 'auth_token': PLIVO_TOKEN},
        env=lambda url: {'PLIVO_TOKEN': PLIVO_TOKEN, 'DIALER_PLIVO_BASE_URL': url},
        # Plivo hangs a machine up ("Machine Detected" in the CDR): the verdict polling can read
        amd_params='{ machine_detection = "hangup" }',
        # the CDR's hangup cause tells a declined call (Rejected) and a wrong number (Invalid Destination Address)
        outcomes={**COMMON_OUTCOMES, 'rejected': 'rejected', 'invalid_number': 'invalid_number'},
        secrets=(PLIVO_TOKEN,),
        callback=_plivo_callback,
        webhooks=True,
    ),
}
#: The providers the direct-mode tests run for (add yours here).
DIRECT_PROVIDERS = ['twilio', 'telnyx', 'plivo']


@contextlib.contextmanager
def answer_urls_served(fleet: LocalFleet, provider: DirectProvider, port: int) -> Iterator[None]:
    """``dialer webhooks`` on ``port`` for the block, when ``provider`` fetches call instructions from it."""
    if not provider.webhooks:
        yield
        return
    hooks = fleet.start_webhooks(port)
    try:
        yield
    finally:
        hooks.terminate()
        hooks.wait(timeout=30)


def wait_for_answers(provider: DirectProvider, campaign: Path) -> Path:
    """A campaign file whose Ultravox calls wait long enough for a stream that starts at the answer."""
    if provider.webhooks:
        campaign.write_text(campaign.read_text().replace('join_timeout = 30', 'join_timeout = 600'))
    return campaign


def provider_records(sim: Any, kind: str) -> list[dict[str, Any]]:
    """Every phone leg the simulated provider placed: ``attempt_id``, ``to``, ``sid``, ``final`` (raw
    status), ``answered_by`` (AMD verdict), ``outcome`` (played)."""
    legs: list[dict[str, Any]] = sim.client.get(f'/_sim/provider_calls/{kind}').json()
    return legs
