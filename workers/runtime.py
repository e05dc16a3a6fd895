"""What one worker process shares between its dial jobs, pacer and tracker."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from campaigns.lifecycle import read_config
from dialer import constants as k
from dialer.logs import register_secrets
from dialer.outbox import Outbox
from dialer.scripts import Scripts, SlotLimits
from dialer.tools import ToolEndpoint
from dialer.trunks import Trunk, TrunkRegistry
from dialer.ultravox import UltravoxClient
from workers.wakeups import longest_sleep


if TYPE_CHECKING:
    from dialer.models import CampaignConfig
    from dialer.provider_trunks import ProviderTrunk
    from dialer.settings import Settings
    from workers.serving import Health

#: Campaign settings are re-read this often, so live edits reach every worker within seconds.
CONFIG_TTL = 2.0


def redis_client(settings: Settings, *, decode: bool = True) -> Redis:
    """A client for the configured Redis (or the master named by Sentinel)."""
    if settings.redis_sentinels:
        from redis.asyncio.sentinel import Sentinel  # noqa: PLC0415  only for Sentinel setups

        hosts = [(h.rsplit(':', 1)[0], int(h.rsplit(':', 1)[1])) for h in settings.redis_sentinels.split(',')]
        probe = Redis.from_url(settings.redis_url)
        kwargs = probe.connection_pool.connection_kwargs
        return Sentinel(hosts, decode_responses=decode).master_for(
            settings.redis_sentinel_master, db=kwargs.get('db', 0), password=kwargs.get('password')
        )
    return Redis.from_url(
        settings.redis_url,
        decode_responses=decode,
        health_check_interval=30,
        retry=redis_retry(settings),
        retry_on_error=RETRIED_ERRORS,
    )


#: Errors a Redis command retries on. OSError covers "connection refused" while Redis restarts,
#: which redis-py raises from connect() before its own ConnectionError wrapping.
RETRIED_ERRORS: list[type[Exception]] = [RedisConnectionError, RedisTimeoutError, OSError]


def redis_retry(settings: Settings) -> Retry:
    """Ride out a Redis restart or failover: every command retries with backoff for a while.

    Re-running a script whose reply was lost is safe: each ledger step is idempotent or detected
    (a second ``begin`` sees the attempt as ambiguous and resolves it by lookup, never by a redial).
    """
    return Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=max(1, int(settings.redis_retry_seconds / 1.5)))


@dataclass
class ConfigCache:
    redis: Redis
    _entries: dict[str, tuple[float, CampaignConfig]] = field(default_factory=dict)

    async def get(self, name: str) -> CampaignConfig:
        now = time.monotonic()
        entry = self._entries.get(name)
        if entry is None or now - entry[0] > CONFIG_TTL:
            entry = (now, await read_config(self.redis, name))
            self._entries[name] = entry
        return entry[1]


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    scripts: Scripts
    trunks: TrunkRegistry
    ultravox: UltravoxClient
    configs: ConfigCache
    #: Where the run loops report progress (``/healthz``); None outside a worker process.
    health: Health | None = None
    #: False when the Ultravox pool belongs to the process and outlives this runtime.
    owns_ultravox: bool = True
    #: True while webhooks are being delivered (the tracker refreshes it): polls become a safety net.
    webhooks_live: bool = False

    @classmethod
    def create(
        cls, settings: Settings, *, ultravox: UltravoxClient | None = None, health: Health | None = None
    ) -> Runtime:
        trunks = TrunkRegistry(settings.trunks_file)
        register_secrets(secret_values(settings, trunks))
        redis = redis_client(settings)
        return cls(
            settings=settings,
            redis=redis,
            # scripts that record facts append their result-webhook events (closed without destinations)
            # soon-due polls are announced to trackers sleeping longer than that (workers/wakeups.py)
            scripts=Scripts(
                redis, Outbox.from_settings(settings), wake_horizon_ms=math.ceil(longest_sleep(settings) * 1000)
            ),
            trunks=trunks,
            ultravox=ultravox or UltravoxClient.from_settings(settings),
            configs=ConfigCache(redis),
            health=health,
            owns_ultravox=ultravox is None,
        )

    def reload_trunks(self) -> bool:
        """Re-read the trunks file if it changed; new passwords are masked in logs at once."""
        if not self.trunks.refresh():
            return False
        register_secrets(secret_values(self.settings, self.trunks))
        return True

    async def close(self) -> None:
        if self.owns_ultravox:
            await self.ultravox.aclose()
        await self.redis.aclose()

    def slot_limits(self, trunk: Trunk) -> SlotLimits:
        return SlotLimits(trunk=trunk.max_concurrent, account=self.settings.account_limits.max_concurrent or 0)

    def call_lease_ms(self, config: CampaignConfig) -> int:
        """A held slot outlives the longest call Ultravox can run for this campaign."""
        seconds = config.join_timeout_seconds + config.max_duration_seconds + self.settings.slot_lease_margin
        return math.ceil(seconds * 1000)

    @property
    def tool_endpoint(self) -> ToolEndpoint | None:
        """Where calls reach the dialer's outcome tool (None: ``DIALER_TOOL_BASE_URL`` unset)."""
        return ToolEndpoint.from_settings(self.settings)

    @property
    def live_poll_ms(self) -> int:
        """Time between two polls of a live call (or of an ended call's billing)."""
        settings = self.settings
        return int((settings.poll_safety_interval if self.webhooks_live else settings.poll_interval) * 1000)

    @property
    def first_poll_ms(self) -> int:
        return self.live_poll_ms if self.webhooks_live else int(self.settings.poll_initial * 1000)

    @property
    def claim_lease_ms(self) -> int:
        return math.ceil(self.settings.claim_lease * 1000)

    def unsent_cap(self, trunk: Trunk) -> int:
        """How many claimed-but-unsent attempts a trunk may have: a quarter second of its rate."""
        return max(trunk.burst, math.ceil(trunk.calls_per_second * 0.25))

    @property
    def send_window_ms(self) -> int:
        """A carrier's 1-s window as ``send.lua`` counts it: widened by the safety margin, as the spacing is."""
        return math.ceil(1000 * (1 + self.settings.rate_safety_margin))

    def _interval_ms(self, per_second: float) -> float:
        """Spacing between two sends at ``per_second``, widened by the safety margin."""
        return 1000 / per_second * (1 + self.settings.rate_safety_margin)

    async def take_rate_token(self, trunk: Trunk, attempt_id: str) -> int:
        """Reserve the attempt's creation slot (see ``Scripts.take_rate_token`` for the answer).

        Waits longer than ``DIALER_MAX_RATE_WAIT`` are not reserved, so a handed-back attempt holds no slot.
        """
        account = self.settings.account_limits
        return await self.scripts.take_rate_token(
            trunk.name,
            attempt_id,
            trunk_interval_ms=self._interval_ms(trunk.calls_per_second),
            trunk_burst=trunk.burst,
            account_interval_ms=self._interval_ms(account.calls_per_second),
            account_per_minute=account.calls_per_minute,
            max_wait_ms=math.ceil(self.settings.max_rate_wait * 1000),
        )

    async def take_leg_rate_token(self, trunk: ProviderTrunk, leg_ref: str) -> int:
        """Reserve a slot under the trunk's rate alone for a phone leg placed again after the provider's
        429 (the attempt's own reservation was spent on the first try; the account's limits are for
        Ultravox creates and are left alone). Answers as :meth:`take_rate_token` does."""
        return await self.scripts.take_rate_token(
            trunk.name,
            leg_ref,
            trunk_interval_ms=self._interval_ms(trunk.calls_per_second),
            trunk_burst=trunk.burst,
            account_interval_ms=0,
            account_per_minute=0,
            max_wait_ms=math.ceil(self.settings.max_rate_wait * 1000),
        )

    @property
    def trunk_breaker(self) -> tuple[int, int]:
        """(failed calls in a row, cooldown ms) after which a trunk stops being dialled for a while."""
        return self.settings.breaker_threshold, math.ceil(self.settings.breaker_cooldown * 1000)

    async def record_create_failure(self) -> bool:
        """Count a failed create against the account's breaker; True when it just opened."""
        return await self.scripts.record_failure(
            k.ACCOUNT_FAILURES,
            k.ACCOUNT_HOLD,
            threshold=self.settings.breaker_threshold,
            window_ms=math.ceil(self.settings.breaker_cooldown * 1000),
            cooldown_ms=math.ceil(self.settings.breaker_cooldown * 1000),
        )


def secret_values(settings: Settings, trunks: TrunkRegistry) -> list[str]:
    values = [settings.ultravox_api_key.get_secret_value()]
    values += [s.get_secret_value() for s in settings.webhook_secrets]
    values += [s.get_secret_value() for s in settings.sip_fallback_secrets]
    if settings.tool_secret is not None:
        values.append(settings.tool_secret.get_secret_value())
    for hook in settings.result_webhooks:
        values += [secret.get_secret_value() for secret in hook.secret]
    for trunk in trunks.trunks.values():
        values += [secret.get_secret_value() for secret in trunk.secrets()]
    return values
