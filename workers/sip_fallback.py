"""``POST /sip/fallback``: Ultravox's SIP fallback handler, answering call-backs from campaign contacts.

What Ultravox sends (its SIP guide, "Fallback Handler", read from docs.ultravox.ai / fixie-ai/ultradox
``telephony/sip.mdx``): for an incoming INVITE that matches no agent allowance it POSTs
``{"callerId", "fromDisplayName", "fromUri", "toUri", "sipHeaders": {name: value}}`` (each may be
null), signed with the same HMAC-SHA256 scheme as its webhooks (``X-Ultravox-Webhook-Timestamp``,
``X-Ultravox-Webhook-Signature`` = hex HMAC of raw body + timestamp, comma-separated for several
secrets) under the handler's ``secrets``. It wants HTTP 200 with exactly one of ``startAgentCall``
(a Create Agent Call body plus ``agentId``), ``startCall`` or ``reject {sipRejectCode (default 603),
message}`` within 5 seconds; a timeout is rejected to the caller with 504, a non-2xx or malformed
answer (or an agent not ours) with 502. Ultravox merges our ``templateContext`` with its SIP context
(``ultravox.sip.*``); the docs disagree on which side wins a clash, so we never use its keys.

Assumed where the docs are silent: the request is not retried by Ultravox (a repeat of the same signed
request is refused as a replay, 401); the freshness window is the webhooks' (``DIALER_WEBHOOK_MAX_AGE``);
``callerId`` is a number as the carrier presents it (E.164 or national digits), so it is normalised
with phonenumbers (``DIALER_CALLBACK_REGION`` for numbers without a country code), falling back to the
user part of ``fromUri``.

| request                                           | answer                                         |
|---------------------------------------------------|------------------------------------------------|
| unsigned, badly signed, stale, future, replayed   | 401 (Ultravox rejects the call: 502)           |
| too large (413), too slow (408), malformed (400)  | 4xx (Ultravox rejects the call: 502)           |
| signed and well formed                            | 200 with the decision of workers/callback_routing.py |
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dialer import constants as k
from dialer import metrics
from dialer.callback_scripts import CallbackScripts
from dialer.callbacks import BadRequest, caller_number, parse_incoming
from workers.callback_routing import Replayed, decide
from workers.inbound import BadDelivery, signed_body


if TYPE_CHECKING:
    from starlette.requests import Request

    from workers.runtime import Runtime


log = structlog.get_logger(__name__)

PATH = '/sip/fallback'


def sip_fallback_route(rt: Runtime) -> Route:
    scripts = CallbackScripts(rt.redis)

    async def receive(request: Request) -> Response:
        return await receive_sip_fallback(rt, scripts, request)

    return Route(PATH, receive, methods=['POST'])


async def receive_sip_fallback(rt: Runtime, scripts: CallbackScripts, request: Request) -> Response:
    settings = rt.settings
    started = time.perf_counter()
    try:
        body, digest = await signed_body(request, settings, settings.sip_fallback_secrets)
        try:
            call = parse_incoming(body)
        except BadRequest as exc:
            raise BadDelivery(400, exc.reason) from None
        try:
            decision = await decide(
                rt, scripts, caller_number(call, settings.callback_region), seen=k.webhook_seen(digest)
            )
        except Replayed:
            raise BadDelivery(401, 'replayed') from None
    except BadDelivery as exc:
        metrics.CALLBACKS.labels(source='sip', verdict=exc.reason).inc()
        log.warning('sip_fallback_refused', reason=exc.reason, status=exc.status)
        return JSONResponse({'error': exc.reason}, status_code=exc.status)
    metrics.CALLBACKS.labels(source='sip', verdict=decision.verdict).inc()
    metrics.CALLBACK_ROUTE_SECONDS.observe(time.perf_counter() - started)
    return JSONResponse(decision.answer)
