"""Every Redis key the dialer writes, in one place.

Each key has an owner that deletes it or a TTL:
- campaign keys are owned by the campaign (``dialer campaign delete`` removes them all);
- limiter keys carry a PEXPIRE set by the Lua script that writes them;
- fleet-wide keys (queue, tracking, claimed, dnc) are bounded by the campaigns they serve.

Campaign and trunk names are restricted to ``[A-Za-z0-9_.-]`` so they can never forge a key.
"""

from typing import Final


PREFIX: Final = 'dialer'

#: arq's queue for dial jobs (a ZSET of job ids, owned by arq).
QUEUE_NAME: Final = 'dialer:queue'

#: SET of campaign names.
CAMPAIGNS: Final = 'dialer:campaigns'
#: SET of E.164 numbers that are never called, in any campaign.
DNC: Final = 'dialer:dnc'
#: HASH E.164 number -> JSON consent evidence of an opt-out made during a call (campaign, call id,
#: attempt, Redis ms, source). Owned by the DNC list: an entry lives exactly as long as its number is
#: on it (``dialer dnc remove`` deletes both), so it has no TTL.
DNC_EVIDENCE: Final = 'dialer:dnc:evidence'
#: ZSET attempt id -> Redis ms when the call is next polled (claimed polls are pushed ahead). Also the
#: pub/sub channel on which scripts announce an entry due soon (trackers sleep until then otherwise).
TRACKING: Final = 'dialer:tracking'
#: ZSET attempt id -> Redis ms after which a claimed, not yet started attempt is re-enqueued.
CLAIMED: Final = 'dialer:claimed'
#: STRING, milliseconds added to Redis TIME by every script; set only by tests to travel in time.
CLOCK_OFFSET: Final = 'dialer:clock:offset_ms'
#: HASH of fleet-wide totals the exporter reads (SIP billed seconds, calls ...), by campaign.
ACCOUNT_SLOTS: Final = 'dialer:account:slots'
#: ZSET ``<attempt id>@<ms>`` -> reserved send time of every Ultravox create, spaced one account interval
#: apart (rate.lua). Renamed when it stopped being a STRING, so an older worker never meets the ZSET.
ACCOUNT_RATE_SECOND: Final = 'dialer:account:rate:sends'
ACCOUNT_RATE_MINUTE: Final = 'dialer:account:rate:m'
#: STRING with a TTL: while it exists, no call is created on the account (429 / breaker back-off).
ACCOUNT_HOLD: Final = 'dialer:account:hold'
ACCOUNT_FAILURES: Final = 'dialer:account:failures'
#: STRING with a TTL: set (NX) by the worker that probes an open fault, so one worker probes per interval.
FAULT_PROBE: Final = 'dialer:account:fault_probe'
#: Value prefix of ``ACCOUNT_HOLD`` while the account itself is unusable (bad key, payment, disabled).
#: Such a hold is refreshed by each failed probe and lifted by the first probe that succeeds.
FAULT_HOLD_PREFIX: Final = 'fault:'
#: STRING with a TTL of twice the safety poll interval, refreshed by every genuine webhook delivery:
#: while it exists, trackers rely on webhooks and poll live calls only as a safety net.
WEBHOOKS_LIVE: Final = 'dialer:webhooks:live'
#: ZSET attempt id -> Redis ms when its create was first seen as ambiguous (quarantined, never
#: re-dialled); members leave when the call is found, recorded, or the quarantine ends.
AMBIGUOUS: Final = 'dialer:ambiguous'
#: HASH trunk name -> JSON of its limits as last applied by a worker (for status and the exporter).
TRUNK_LIMITS: Final = 'dialer:trunks:limits'
#: HASH worker id -> JSON heartbeat (for status); entries expire via a sibling ZSET of deadlines.
WORKERS: Final = 'dialer:workers'


def campaign(name: str) -> str:
    """HASH: ``config`` (JSON), ``state``, and counters maintained atomically by the scripts."""
    return f'dialer:campaign:{name}'


def campaign_contacts(name: str) -> str:
    """HASH E.164 number -> contact record JSON (id, line, name, timezone, template context)."""
    return f'dialer:campaign:{name}:contacts'


def campaign_ids(name: str) -> str:
    """HASH contact id -> E.164 number; only when the CSV brings its own ids (duplicate check)."""
    return f'dialer:campaign:{name}:ids'


def campaign_due(name: str) -> str:
    """ZSET E.164 number -> Redis ms when the contact may next be dialled."""
    return f'dialer:campaign:{name}:due'


def campaign_progress(name: str) -> str:
    """HASH E.164 number -> contact progress JSON (status, attempts, outcome, attempt times)."""
    return f'dialer:campaign:{name}:progress'


def campaign_attempts(name: str) -> str:
    """HASH ``<number>:<n>`` -> attempt record JSON (state, call id, times, outcome, billing)."""
    return f'dialer:campaign:{name}:attempts'


def campaign_loads(name: str) -> str:
    """HASH file digest -> load summary JSON, so loading the same file twice adds nothing."""
    return f'dialer:campaign:{name}:loads'


def campaign_keys(name: str) -> list[str]:
    """Every key a campaign owns."""
    return [
        campaign(name),
        campaign_contacts(name),
        campaign_ids(name),
        campaign_due(name),
        campaign_progress(name),
        campaign_attempts(name),
        campaign_loads(name),
        campaign_inbound(name),
    ]


def campaign_inbound(name: str) -> str:
    """HASH call-back id -> inbound call record JSON (number, call id, state, times, outcome, billing).

    Owned by the campaign (deleted with it): a contact's call-backs are part of its record.
    """
    return f'dialer:campaign:{name}:inbound'


def callback(number: str) -> str:
    """STRING JSON ``{c: campaign, i: contact id, a: attempt id, f: caller id we showed, t: Redis ms}``:
    the campaign that last dialled ``number`` (E.164), so that a call back from it is routed in O(1).

    Written by ``send.lua`` right before each create, with a TTL of ``DIALER_CALLBACK_RETENTION``.
    """
    return f'dialer:callback:{number}'


def trunk_slots(trunk: str) -> str:
    """ZSET holder (attempt id) -> lease deadline ms: the trunk's concurrent-call semaphore."""
    return f'dialer:trunk:{trunk}:slots'


def trunk_rate(trunk: str) -> str:
    """STRING: GCRA theoretical arrival time (ms) for the trunk's calls per second."""
    return f'dialer:trunk:{trunk}:rate'


def trunk_sends(trunk: str) -> str:
    """ZSET ``<attempt id>@<ms>`` -> ms: the creates sent on the trunk in the last second (``send.lua``),
    so that no 1-s window ever holds more than the trunk's calls per second, however late a dial job
    woke for its reserved slot. Trimmed on each send; expires a second after the last."""
    return f'dialer:trunk:{trunk}:sends'


def trunk_hold(trunk: str) -> str:
    """STRING with a TTL: the trunk's circuit breaker is open while it exists."""
    return f'dialer:trunk:{trunk}:hold'


def trunk_held_legs(trunk: str) -> str:
    """ZSET leg member -> when it may be placed again (ms): direct-mode phone legs the provider refused
    with 429, waiting for the trunk's hold to end. New dials on the trunk wait while any is there, so a
    held leg, whose Ultravox call is already waiting, goes first. Members leave when placed again or
    ended (``leg.lua``, ``workers/phone_leg.py``), or ``LEG_GRACE_MS`` after their time (a lost worker)."""
    return f'dialer:trunk:{trunk}:held_legs'


def trunk_failures(trunk: str) -> str:
    """STRING counter of consecutive failures on the trunk (circuit breaker), with a TTL."""
    return f'dialer:trunk:{trunk}:failures'


def trunk_campaigns(trunk: str) -> str:
    """SET of campaigns dialling through the trunk; the pacer serves them in turn. Also the pub/sub
    channel on which a campaign joining it is announced (an idle pacer sleeps until then)."""
    return f'dialer:trunk:{trunk}:campaigns'


def trunk_cursor(trunk: str) -> str:
    """STRING round-robin cursor over the trunk's campaigns (fair share)."""
    return f'dialer:trunk:{trunk}:cursor'


def attempt_id(campaign_name: str, number: str, attempt: int) -> str:
    """The id of one dial attempt: sent to Ultravox as metadata and used as arq job id."""
    return f'{campaign_name}:{number}:{attempt}'


def parse_attempt_id(value: str) -> tuple[str, str, int]:
    """Split an attempt id into (campaign, number, attempt)."""
    campaign_name, number, attempt = value.rsplit(':', 2)
    return campaign_name, number, int(attempt)


def trunk_unsent(trunk: str) -> str:
    """ZSET attempt id -> deadline: claimed attempts whose create has not taken its rate token yet.

    Capping it keeps the pacer from claiming far more contacts than the rate limit lets through.
    """
    return f'dialer:trunk:{trunk}:unsent'


def webhook_seen(digest: str) -> str:
    """STRING with a TTL of twice the webhook max age: a delivery (body + timestamp digest) already seen."""
    return f'dialer:webhook:seen:{digest[:64]}'


# ---------------------------------------------------------------------------------------------- outbox
# Result webhooks (dialer/outbox.py, dialer/lua/_outbox.lua). TTL story: an event lives in EVENTS and
# LOG until it is older than ``DIALER_OUTBOX_RETENTION_HOURS`` and delivered (or given up) at every
# destination (the delivery loop trims it), or until ``DIALER_OUTBOX_MAX_EVENTS`` newer events push
# it out (a pending one is then counted as dropped). A destination's keys hold only undelivered
# events and empty themselves as deliveries succeed; its dead-letter ZSET is trimmed with the log.

#: HASH event id -> event JSON (id, type, Redis ms, per-key sequence, ordering key, data).
OUTBOX_EVENTS: Final = 'dialer:outbox:events'
#: ZSET event id -> Redis ms appended: every retained event, oldest first (trimming, replay).
OUTBOX_LOG: Final = 'dialer:outbox:log'
#: HASH ``seq`` (event counter), ``dropped:<destination>`` (pushed out by the cap while pending).
OUTBOX_STATE: Final = 'dialer:outbox:state'
#: SET of the destination ids delivery loops have served: how the keys of a destination removed from
#: ``DIALER_RESULT_WEBHOOKS`` are found. They are given the retention period as TTL (a loop that serves
#: the destination again takes the TTL off at its start); the id leaves the set once its keys are gone.
OUTBOX_DESTINATIONS: Final = 'dialer:outbox:destinations'


def outbox_queue(destination: str) -> str:
    """ZSET (score 0, lexical) ``<ordering key>|<seq>|<event id>``: events not yet delivered there."""
    return f'dialer:outbox:dest:{destination}:queue'


def outbox_heads(destination: str) -> str:
    """ZSET ordering key -> Redis ms its oldest undelivered event is next tried (leases push it ahead)."""
    return f'dialer:outbox:dest:{destination}:heads'


def outbox_pending(destination: str) -> str:
    """ZSET event id -> Redis ms appended: undelivered events (depth and oldest age)."""
    return f'dialer:outbox:dest:{destination}:pending'


def outbox_tries(destination: str) -> str:
    """HASH event id -> failed deliveries so far (backoff); deleted with the delivery."""
    return f'dialer:outbox:dest:{destination}:tries'


def outbox_dead(destination: str) -> str:
    """ZSET event id -> Redis ms given up (retried for ``DIALER_OUTBOX_RETRY_HOURS``): replayable."""
    return f'dialer:outbox:dest:{destination}:dead'


def outbox_destination_keys(destination: str) -> list[str]:
    """A destination's keys, in the order the outbox scripts take them."""
    return [
        outbox_queue(destination),
        outbox_heads(destination),
        outbox_pending(destination),
        outbox_tries(destination),
        outbox_dead(destination),
    ]
