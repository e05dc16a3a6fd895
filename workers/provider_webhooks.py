"""``POST /webhooks/<provider>``: signed status callbacks of direct-mode phone legs, taken as hints.

The callback URL the dialer gives the provider names the attempt and its Ultravox call (``?a=&c=``);
the provider signs the URL with the body, so neither can be forged. A verified callback makes the
trackers poll that leg now (``workers/phone_leg.py``); the outcome comes from the poll, so a lost
callback only delays it.

| callback                                         | answer | effect                   |
|--------------------------------------------------|--------|--------------------------|
| no trunk of that provider in direct mode         | 404    | none                     |
| unsigned or badly signed                         | 401    | none                     |
| signed, attempt no longer followed               | 200    | none                     |
| signed, attempt followed                         | 200    | the leg is polled now    |
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog
from starlette.responses import Response
from starlette.routing import Route

from campaigns.lifecycle import UnknownCampaignError
from dialer import constants as k
from dialer import metrics
from dialer.provider_trunks import ProviderTrunk
from dialer.providers import verify_callback
from dialer.trunks import TrunkConfigError
from workers.inbound import ATTEMPT_ID, CALL_ID
from workers.phone_leg import nudge_leg
from workers.plivo_answer import plivo_answer_route


if TYPE_CHECKING:
    from starlette.requests import Request

    from workers.runtime import Runtime


log = structlog.get_logger(__name__)


def provider_routes(rt: Runtime) -> list[Route]:
    """``/webhooks/twilio``, ``/webhooks/telnyx``, ``/webhooks/plivo`` for ``build_webhook_app``."""

    async def receive(request: Request) -> Response:
        return await receive_provider_callback(rt, request, request.path_params['provider'])

    # Plivo also fetches each answered leg's XML from the webhook app (workers/plivo_answer.py)
    return [Route('/webhooks/{provider:str}', receive, methods=['POST']), plivo_answer_route(rt)]


async def receive_provider_callback(rt: Runtime, request: Request, provider: str) -> Response:
    attempt_id, call_id = request.query_params.get('a', ''), request.query_params.get('c', '')
    if not ATTEMPT_ID.fullmatch(attempt_id) or not CALL_ID.fullmatch(call_id):
        metrics.PROVIDER_CALLBACKS.labels(kind=provider, verdict='malformed').inc()
        return Response(status_code=400)
    body = await request.body()
    if len(body) > rt.settings.webhook_max_body:
        return Response(status_code=413)
    try:
        config = await rt.configs.get(k.parse_attempt_id(attempt_id)[0])
        trunk = rt.trunks.get(config.trunk)
    except (UnknownCampaignError, ValueError, TrunkConfigError):
        metrics.PROVIDER_CALLBACKS.labels(kind=provider, verdict='unknown').inc()
        return Response(status_code=404)
    if not isinstance(trunk, ProviderTrunk) or trunk.provider != provider or trunk.mode != 'direct':
        metrics.PROVIDER_CALLBACKS.labels(kind=provider, verdict='unknown').inc()
        return Response(status_code=404)
    if not verify_callback(trunk, str(request.url), request.headers, body, time.time()):
        metrics.PROVIDER_CALLBACKS.labels(kind=provider, verdict='bad_signature').inc()
        log.warning('provider_callback_refused', provider=provider, reason='bad_signature')
        return Response(status_code=401)
    moved = await nudge_leg(rt, attempt_id, call_id)
    metrics.PROVIDER_CALLBACKS.labels(kind=provider, verdict='polled_now' if moved else 'duplicate').inc()
    return Response(status_code=200)
