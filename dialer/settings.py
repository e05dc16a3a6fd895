"""Process settings, from ``DIALER_*`` environment variables and an optional ``.env`` file."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dialer.outbox import ResultWebhook


#: Ultravox account limits per plan (NOTES.md): creations per second, per minute, concurrent calls.
PLAN_LIMITS: dict[str, tuple[float, int, int | None]] = {
    'paygo': (5, 30, 5),
    'pro': (10, 120, None),
    'scale': (30, 360, None),
}


class AccountLimits:
    """The account-wide limits in force: the plan's, overridden by any explicit setting."""

    def __init__(self, calls_per_second: float, calls_per_minute: int, max_concurrent: int | None) -> None:
        self.calls_per_second = calls_per_second
        self.calls_per_minute = calls_per_minute
        self.max_concurrent = max_concurrent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix='DIALER_', env_file='.env', extra='ignore')

    redis_url: str = 'redis://127.0.0.1:6379/0'
    #: Sentinel hosts ``host:port,host:port``; when set, ``redis_url`` only gives db and password.
    redis_sentinels: str | None = None
    redis_sentinel_master: str = 'mymaster'

    ultravox_api_key: SecretStr = SecretStr('')
    ultravox_base_url: str = 'https://api.ultravox.ai'
    ultravox_connect_timeout: float = Field(default=5.0, gt=0)
    ultravox_read_timeout: float = Field(default=15.0, gt=0)
    ultravox_max_connections: int = Field(default=200, ge=1)

    trunks_file: Path = Path('trunks.toml')

    #: Provider REST APIs for direct-mode trunks (dialer/providers/); tests point them at the simulator.
    twilio_base_url: str = 'https://api.twilio.com'
    telnyx_base_url: str = 'https://api.telnyx.com'
    plivo_base_url: str = 'https://api.plivo.com'

    account_plan: Literal['paygo', 'pro', 'scale'] = 'pro'
    account_calls_per_second: float | None = Field(default=None, gt=0)
    account_calls_per_minute: int | None = Field(default=None, ge=1)
    account_max_concurrent: int | None = Field(default=None, ge=1)

    #: Fraction by which calls-per-second spacing is widened, so that network jitter between our
    #: decision and the request's arrival never packs more creations into a carrier's 1 s window.
    rate_safety_margin: float = Field(default=0.05, ge=0, lt=0.5)
    #: Extra seconds a trunk slot's lease outlives ``joinTimeout + maxDuration``.
    slot_lease_margin: float = Field(default=120.0, ge=0)
    #: How long a claimed attempt may wait for its dial job before it is re-enqueued.
    claim_lease: float = Field(default=60.0, gt=0)
    #: After a create whose response was lost, wait this long before looking the call up by its
    #: metadata, so that a request Ultravox is still processing is found rather than dialled again.
    ambiguous_create_delay: float = Field(default=10.0, ge=0)
    #: An ambiguous create is looked up (with backoff from ``ambiguous_create_delay``) for this long
    #: before the attempt may be dialled again: it must cover any plausible server-side completion.
    ambiguous_quarantine: float = Field(default=600.0, ge=0)
    #: While the account (bad key, payment) or a campaign's agent is unusable, one worker of the fleet
    #: probes Ultravox this often; dialling resumes on the first probe that succeeds.
    fault_probe_interval: float = Field(default=15.0, gt=0)
    #: A dial job waits in place for a rate token at most this long; longer waits hand it back.
    max_rate_wait: float = Field(default=2.0, ge=0)

    #: Seconds between polls of a live call; the first poll waits ``poll_initial``.
    poll_initial: float = Field(default=5.0, gt=0)
    poll_interval: float = Field(default=5.0, gt=0)
    #: While the webhook receiver has delivered recently, live calls are polled only this often, as a
    #: safety net for a lost webhook (and at once when a call outlives its longest possible end).
    poll_safety_interval: float = Field(default=60.0, gt=0)
    #: How long after its last delivery the webhook receiver counts as delivering. A fleet that was quiet
    #: for less than this starts a new campaign on safety polls at once; after a longer silence, new calls
    #: are polled every ``poll_interval`` until the next webhook. Safe at any length: a lost webhook (or a
    #: receiver that went away) costs at most a safety interval per call.
    webhooks_live_window: float = Field(default=900.0, gt=0)
    #: A claimed poll comes back to the fleet after this long if its worker vanished.
    poll_visibility: float = Field(default=30.0, gt=0)
    #: How long to keep polling an ended call for Ultravox's final billing before computing it.
    billing_wait: float = Field(default=120.0, ge=0)

    #: Longest a dial job may run (token waits, create retries); a job cut off by a crash is re-run
    #: by arq only after this + 10 s, so it also bounds recovery time.
    dial_job_timeout: float = Field(default=90.0, gt=0)
    #: How long commands keep retrying while Redis is unreachable (a restart or failover).
    redis_retry_seconds: float = Field(default=60.0, ge=0)

    #: ``/healthz`` fails (503) when the worker's main loop has not turned for this long.
    health_stall_seconds: float = Field(default=60.0, gt=0)

    worker_max_jobs: int = Field(default=200, ge=1)
    #: How often an idle worker looks for jobs other workers enqueued, or deferred ones (its own pacer's
    #: jobs start at once).
    worker_poll_delay: float = Field(default=0.2, gt=0)
    #: Seconds a stopping worker (SIGTERM) lets running dial jobs finish before handing them back.
    worker_shutdown_grace: float = Field(default=20.0, ge=0)
    pacer_interval: float = Field(default=0.05, gt=0)
    tracker_concurrency: int = Field(default=200, ge=1)

    #: Address and port for each process's ``/metrics``; port 0 disables it.
    metrics_host: str = '127.0.0.1'
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    exporter_port: int = Field(default=9101, ge=0, le=65535)

    webhook_secrets: list[SecretStr] = Field(default_factory=list)
    webhook_max_age: float = Field(default=60.0, gt=0)
    webhook_max_body: int = Field(default=256 * 1024, gt=0)
    #: Seconds a client may take to send a request's headers, then its body (slow clients are cut off).
    webhook_header_timeout: float = Field(default=10.0, gt=0)
    webhook_body_timeout: float = Field(default=10.0, gt=0)
    #: Connections (and requests) the receiver serves at once; more get 503.
    webhook_max_connections: int = Field(default=200, ge=1)

    #: Public base URL of ``dialer webhooks`` as Ultravox reaches it (``https://hooks.example.com``): when
    #: set, every call gets the dialer's outcome tool (``POST {base}/tools/outcome``). Unset: no tool.
    tool_base_url: str | None = Field(default=None, pattern=r'^https?://[^\s?#]+$')
    #: Key of the per-call tool tokens (HMAC of the attempt id); required with ``tool_base_url``.
    tool_secret: SecretStr | None = None

    #: Call-backs (workers/sip_fallback.py): how long the number -> campaign index keeps each dialled
    #: number after its last dial, in seconds (0: no index is written, call-backs reach the defaults).
    callback_retention: float = Field(default=30 * 86400.0, ge=0)
    #: Secrets of the SIP fallback handler (``dialer sip fallback set``): JSON list, several for rotation.
    sip_fallback_secrets: list[SecretStr] = Field(default_factory=list)
    #: Agent that answers a caller no campaign dialled (unset: the call is rejected with the reject code).
    callback_default_agent: str | None = Field(default=None, pattern=r'^[A-Za-z0-9-]{1,64}$')
    #: Agent that answers a caller on the DNC list (an opt-out line; unset: rejected with the reject code).
    callback_dnc_agent: str | None = Field(default=None, pattern=r'^[A-Za-z0-9-]{1,64}$')
    #: SIP code of a refused call-back (603 Decline; any 400-699).
    callback_reject_code: int = Field(default=603, ge=400, le=699)
    #: Region used to read a caller id written without a country code (``5551234567``), as phonenumbers does.
    callback_region: str = Field(default='US', pattern=r'^[A-Z]{2}$')
    #: Seconds ``dialer webhooks`` gives Ultravox to create a call-back's call on a provider number before
    #: answering the provider with a polite hang-up: under the provider's own webhook timeout (Twilio's
    #: is 15 s), so the caller hears our message, not the provider's error.
    provider_answer_deadline: float = Field(default=10.0, gt=0, le=60)

    #: Result webhooks (dialer/outbox.py): JSON list of ``{"url": ..., "secret": ...}`` (``secret`` may be a
    #: list, for rotation; an optional ``name`` labels the destination's metrics). Empty: no events.
    result_webhooks: list[ResultWebhook] = Field(default_factory=list)
    #: Events kept in Redis at most (the oldest go first; one still undelivered is counted as dropped).
    outbox_max_events: int = Field(default=500_000, ge=100)
    #: How long an undelivered event is retried (exponential backoff) before it is given up (replayable).
    outbox_retry_hours: float = Field(default=24.0, gt=0)
    #: Longest pause between two tries of one event (the backoff doubles from 1 s up to this).
    outbox_backoff_cap: float = Field(default=900.0, gt=0)
    #: Delivered events are kept this long for ``dialer outbox replay``; at least the retry window.
    outbox_retention_hours: float = Field(default=72.0, gt=0)
    #: Deliveries one worker runs at once, and the timeout of each (connect and read, seconds).
    outbox_concurrency: int = Field(default=16, ge=1)
    outbox_timeout: float = Field(default=10.0, gt=0)

    breaker_threshold: int = Field(default=5, ge=1)
    breaker_cooldown: float = Field(default=30.0, gt=0)

    log_level: Literal['debug', 'info', 'warning', 'error'] = 'info'
    log_format: Literal['console', 'json'] = 'console'

    @model_validator(mode='after')
    def _outbox_retention_covers_retries(self) -> Settings:
        if self.outbox_retention_hours < self.outbox_retry_hours:
            raise ValueError('DIALER_OUTBOX_RETENTION_HOURS must be at least DIALER_OUTBOX_RETRY_HOURS')
        names = [hook.destination_id for hook in self.result_webhooks]
        if len(set(names)) != len(names):
            raise ValueError('DIALER_RESULT_WEBHOOKS: two destinations share a url or name')
        return self

    @model_validator(mode='after')
    def _tool_secret_with_url(self) -> Settings:
        secret = self.tool_secret.get_secret_value() if self.tool_secret is not None else ''
        if self.tool_base_url and len(secret) < 16:
            raise ValueError('DIALER_TOOL_SECRET (16 characters or more) is required with DIALER_TOOL_BASE_URL')
        return self

    @cached_property
    def account_limits(self) -> AccountLimits:
        per_second, per_minute, concurrent = PLAN_LIMITS[self.account_plan]
        return AccountLimits(
            calls_per_second=self.account_calls_per_second or per_second,
            calls_per_minute=self.account_calls_per_minute or per_minute,
            max_concurrent=self.account_max_concurrent or concurrent,
        )
