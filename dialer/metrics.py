"""Prometheus metrics each worker process exports about its own work.

Fleet-wide state that lives in Redis (contacts by state, slots in use, queue depth) is *not* here:
the exporter process reads it once per scrape, so it is never multiplied by the number of workers.
Labels are bounded: trunk, campaign, outcome, status class. Never a phone number or a call id.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram


CALLS_CREATED = Counter(
    'dialer_calls_created_total', 'Calls created at Ultravox (one per attempt).', ['trunk', 'campaign']
)
CALLS_ENDED = Counter('dialer_calls_ended_total', 'Calls seen to end, by outcome.', ['trunk', 'campaign', 'outcome'])
SIP_BILLED_SECONDS = Counter(
    'dialer_sip_billed_seconds_total',
    'SIP seconds billed (answered time, per started 6 s), counted once when billing is final.',
    ['trunk', 'campaign'],
)
AGENT_BILLED_SECONDS = Counter(
    'dialer_agent_billed_seconds_total',
    'Ultravox agent (call) seconds billed, counted once when billing is final.',
    ['trunk', 'campaign'],
)
CALL_SETUP_SECONDS = Histogram(
    'dialer_call_setup_seconds',
    'From claiming a contact to Ultravox answering the create request.',
    ['trunk'],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CALL_DURATION_SECONDS = Histogram(
    'dialer_call_duration_seconds',
    'Answered call duration (joined to ended).',
    ['trunk'],
    buckets=(1, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600),
)
CALLS_IN_FLIGHT = Gauge(
    'dialer_worker_calls_in_flight', 'Creates and polls this worker process has under way right now.'
)
LIMITER_WAITS = Counter(
    'dialer_limiter_waits_total',
    'Times dialling had to wait for capacity, by the limit that was reached.',
    ['trunk', 'limit'],
)
ULTRAVOX_RESPONSES = Counter(
    'dialer_ultravox_responses_total',
    'Responses from the Ultravox API by endpoint and status class (2xx, 4xx, 429, 5xx, error).',
    ['endpoint', 'status_class'],
)
RETRIES_SCHEDULED = Counter(
    'dialer_retries_scheduled_total',
    'Contacts scheduled for another attempt, by outcome.',
    ['campaign', 'outcome'],
)
ATTEMPTS_HANDED_BACK = Counter(
    'dialer_attempts_handed_back_total',
    'Attempts returned to the queue without consuming an attempt (429, pause, hours, breaker).',
    ['trunk', 'reason'],
)
WEBHOOKS_RECEIVED = Counter(
    'dialer_webhooks_received_total', 'Webhook deliveries by event and verdict.', ['event', 'verdict']
)
WORKER_JOBS = Counter('dialer_worker_jobs_total', 'Dial jobs run by this worker, by result.', ['result'])
WORKER_UP = Gauge('dialer_worker_up', 'Always 1 while the worker process serves metrics.')
WORKER_REDIS_UP = Gauge('dialer_worker_redis_up', '1 while this process reaches Redis, 0 while it is reconnecting.')
WORKER_RESTARTS = Counter(
    'dialer_worker_restarts_total', 'Times this worker restarted its run loop after losing Redis.'
)
AMBIGUOUS_CREATES = Counter(
    'dialer_ambiguous_creates_total',
    'Creates whose answer was lost, by how the lookup resolved them (found, absent after quarantine).',
    ['trunk', 'resolution'],
)
ACCOUNT_FAULTS = Counter(
    'dialer_account_faults_total',
    'Responses that said the account or agent is unusable (dialling held, no attempt spent), by reason.',
    ['reason'],
)
WEBHOOK_MISMATCHES = Counter(
    'dialer_webhook_foreign_calls_total',
    "Signed webhooks naming a call that is not their attempt's recorded call (ignored).",
    ['event'],
)
TOOL_CALLS = Counter(
    'dialer_tool_calls_total',
    "Invocations of the dialer's outcome tool by verdict (recorded, duplicate, refused reasons).",
    ['verdict'],
)
DISPOSITIONS = Counter(
    'dialer_dispositions_total',
    "Dispositions agents reported, by campaign and disposition (one of the campaign's list: bounded).",
    ['campaign', 'disposition'],
)
OPT_OUTS = Counter('dialer_opt_outs_total', 'Numbers put on the DNC list by an opt-out during a call.', ['campaign'])
VOICEMAILS = Counter(
    'dialer_voicemails_total',
    'Answered calls that reached voicemail, by whether a message was left ("true"/"false").',
    ['campaign', 'left'],
)

# --- provider trunks (dialer/provider_trunks.py); labelled by trunk kind: sip, twilio, telnyx, plivo ----
BILLED_SECONDS_BY_KIND = Counter(
    'dialer_billed_seconds_by_kind_total',
    'Billed seconds by trunk kind and meter: agent and sip (Ultravox), provider (the provider own leg).',
    ['kind', 'meter'],
)
PROVIDER_PRICE = Counter(
    'dialer_provider_price_total',
    'Price the provider reported for direct-mode phone legs, in its currency.',
    ['kind', 'currency'],
)
PROVIDER_LEGS = Counter(
    'dialer_provider_legs_total',
    'Direct-mode phone legs by trunk kind and result (placed, found, failed, rate_limited, ended).',
    ['kind', 'result'],
)
PROVIDER_CALLBACKS = Counter(
    'dialer_provider_callbacks_total',
    'Provider status callbacks received, by trunk kind and verdict.',
    ['kind', 'verdict'],
)

# --- result webhooks (dialer/outbox.py); depth and age of the outbox come from the exporter -----------
OUTBOX_DELIVERIES = Counter(
    'dialer_outbox_deliveries_total',
    'Result-webhook deliveries tried by this worker, by destination and result (delivered, failed, dead).',
    ['destination', 'result'],
)
OUTBOX_DELIVERY_SECONDS = Histogram(
    'dialer_outbox_delivery_seconds',
    'Time one result-webhook POST took, whatever its answer.',
    ['destination'],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# Call-backs (workers/sip_fallback.py, workers/provider_inbound.py, workers/callback_tracking.py).
# ``direction`` (outbound / inbound) appears on these new metrics only; the older ones stay outbound.
CALLBACKS = Counter(
    'dialer_callbacks_total',
    'Incoming calls answered by the fallback handler or a provider inbound webhook, by route taken.',
    ['source', 'verdict'],
)
CALLBACK_ROUTE_SECONDS = Histogram(
    'dialer_callback_route_seconds',
    'Time to answer a fallback-handler request (signature to answer).',
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CALLS_BY_DIRECTION = Counter(
    'dialer_calls_by_direction_total', 'Calls seen to end, by direction and outcome.', ['direction', 'outcome']
)
BILLED_SECONDS_BY_DIRECTION = Counter(
    'dialer_billed_seconds_by_direction_total',
    'Billed seconds counted once final, by direction and meter (sip, agent).',
    ['direction', 'meter'],
)
