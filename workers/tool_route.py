"""``POST /tools/outcome``: the dialer's outcome tool, invoked by Ultravox during a call.

The body is the tool's parameters (see ``dialer/tools.py``): ``disposition``, ``notes`` and
``callbackAt`` from the model, ``attemptId`` (static) and ``callId`` (``KNOWN_PARAM_CALL_ID``); the
``X-Dialer-Tool-Token`` header (static) is the HMAC of the attempt id under ``DIALER_TOOL_SECRET``.

| request                                                  | answer | effect                      |
|----------------------------------------------------------|--------|-----------------------------|
| no tool secret configured                                | 404    | none                        |
| token missing, wrong, or another attempt's               | 401    | none                        |
| too large (413), too slow (408), malformed (400)         | 4xx    | none                        |
| disposition not in the campaign's list, bad callbackAt   | 422    | none (the model may retry)  |
| unknown campaign or attempt                              | 404    | none                        |
| a call id that is not the attempt's call                 | 409    | none                        |
| valid                                                    | 200    | recorded once (by digest)   |

It answers fast (one Redis script), because the conversation is frozen while a tool runs. The
answer is short text for the model; nothing the caller said is logged.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from starlette.responses import JSONResponse
from starlette.routing import Route

from dialer import constants as k
from dialer import metrics
from dialer.dispositions import DispositionReport, Recorded, record_disposition
from dialer.logs import masked_attempt
from dialer.models import CampaignConfig
from dialer.tools import (
    NOTES_LIMIT,
    PARAM_ATTEMPT,
    PARAM_CALL,
    PARAM_CALLBACK_AT,
    PARAM_DISPOSITION,
    PARAM_NOTES,
    TOKEN_HEADER,
    TOOL_PATH,
    token_matches,
)
from workers.inbound import ATTEMPT_ID, CALL_ID, BadDelivery, read_body


if TYPE_CHECKING:
    from starlette.requests import Request

    from workers.runtime import Runtime


log = structlog.get_logger(__name__)

#: A tool call is a few hundred bytes; anything much larger is not one.
MAX_BODY = 16 * 1024


class Refused(Exception):  # noqa: N818 - the verdict it is
    def __init__(self, status: int, reason: str, text: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.text = text or reason.replace('_', ' ')


async def _body(request: Request, deadline: float) -> dict[str, Any]:
    try:
        raw = await read_body(request, MAX_BODY, deadline)
    except BadDelivery as exc:
        raise Refused(exc.status, exc.reason) from None
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        raise Refused(400, 'malformed') from None
    if not isinstance(payload, dict):
        raise Refused(400, 'malformed')
    return payload


def _callback_ms(value: Any) -> int | None:
    if value in (None, ''):
        return None
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        at = None
    if at is None or at.tzinfo is None or at.utcoffset() is None:
        raise Refused(422, 'bad_callback_time', 'callbackAt must be an ISO 8601 time with a UTC offset')
    return int(at.timestamp() * 1000)


def _report(payload: dict[str, Any], config: CampaignConfig, attempt_id: str) -> DispositionReport:
    call_id, disposition, notes = payload.get(PARAM_CALL), payload.get(PARAM_DISPOSITION), payload.get(PARAM_NOTES)
    if not isinstance(call_id, str) or not CALL_ID.fullmatch(call_id):
        raise Refused(400, 'malformed')
    if disposition not in config.dispositions:
        raise Refused(422, 'unknown_disposition', f'disposition must be one of: {", ".join(config.dispositions)}')
    if notes is not None and not isinstance(notes, str):
        raise Refused(422, 'bad_notes', 'notes must be text')
    return DispositionReport(
        attempt_id=attempt_id,
        call_id=call_id,
        disposition=str(disposition),
        notes=(notes or '').strip()[:NOTES_LIMIT] or None,
        callback_at_ms=_callback_ms(payload.get(PARAM_CALLBACK_AT)),
    )


async def _config(rt: Runtime, name: str) -> CampaignConfig:
    raw = await rt.redis.hget(k.campaign(name), 'config')
    if raw is None:
        raise Refused(404, 'unknown_campaign')
    return CampaignConfig.model_validate_json(raw)


async def _handle(rt: Runtime, request: Request) -> tuple[str, DispositionReport, Recorded]:
    """Authenticate, validate and record one invocation; ``Refused`` says why not."""
    settings = rt.settings
    if settings.tool_secret is None:
        raise Refused(404, 'not_configured')
    payload = await _body(request, settings.webhook_body_timeout)
    attempt_id = payload.get(PARAM_ATTEMPT)
    # the token is checked before anything is read from Redis: a forgery learns nothing
    if not isinstance(attempt_id, str) or not ATTEMPT_ID.fullmatch(attempt_id):
        raise Refused(401, 'bad_token')
    if not token_matches(settings.tool_secret, attempt_id, request.headers.get(TOKEN_HEADER)):
        raise Refused(401, 'bad_token')
    name = k.parse_attempt_id(attempt_id)[0]
    config = await _config(rt, name)
    report = _report(payload, config, attempt_id)
    recorded = await record_disposition(rt.redis, report, rt.scripts.outbox)
    if not recorded.accepted:
        raise Refused(409 if recorded.verdict == 'foreign_call' else 404, recorded.verdict)
    return name, report, recorded


async def receive_tool_call(rt: Runtime, request: Request) -> JSONResponse:
    try:
        name, report, recorded = await _handle(rt, request)
    except Refused as exc:
        metrics.TOOL_CALLS.labels(verdict=exc.reason).inc()
        log.warning('tool_call_refused', reason=exc.reason, status=exc.status)
        return JSONResponse({'error': exc.reason, 'result': exc.text}, status_code=exc.status)
    metrics.TOOL_CALLS.labels(verdict=recorded.verdict).inc()
    if recorded.verdict != 'duplicate':
        metrics.DISPOSITIONS.labels(campaign=name, disposition=report.disposition).inc()
        if report.opts_out:
            metrics.OPT_OUTS.labels(campaign=name).inc()
    log.info(
        'disposition_recorded',
        attempt_id=masked_attempt(report.attempt_id),
        call_id=report.call_id,
        disposition=report.disposition,
        verdict=recorded.verdict,
    )
    return JSONResponse({'result': f'Recorded: {report.disposition}.'})


def tool_route(rt: Runtime) -> Route:
    """The route ``dialer webhooks`` mounts (``build_webhook_app``)."""

    async def outcome_tool(request: Request) -> JSONResponse:
        return await receive_tool_call(rt, request)

    return Route(TOOL_PATH, outcome_tool, methods=['POST'])
