"""The life of a simulated call, planned once at creation and rendered lazily from timestamps.

A call's whole future (ring, answer, hang-up, billing) is decided when it is created; each GET just
compares the plan with the clock, so the simulator needs no per-call timers. ``created`` is the real
receipt time; ``joined``/``ended`` shown on the Call are ``created`` plus *simulated* seconds (so talk
time and billed durations agree), while they become visible after the *scaled* real delay.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from simulator.config import SimOutcome, SimulatorConfig


DEFAULT_JOIN_TIMEOUT = 30.0
DEFAULT_MAX_DURATION = 3600.0
BILLING_UNIT = 6  # deciminutes: billed per started 6 seconds
NIL_AGENT = {'agentId': '00000000-0000-0000-0000-000000000000', 'name': 'ad-hoc'}

_TERMINATION = {
    SimOutcome.ANSWERED: 'SIP_TERMINATION_NORMAL',
    SimOutcome.VOICEMAIL: 'SIP_TERMINATION_NORMAL',
    SimOutcome.NO_ANSWER: 'SIP_TERMINATION_TIMEOUT',
    SimOutcome.BUSY: 'SIP_TERMINATION_BUSY',
    SimOutcome.INVALID_NUMBER: 'SIP_TERMINATION_INVALID_NUMBER',
    SimOutcome.REJECTED: 'SIP_TERMINATION_REJECTED',
    SimOutcome.UNAVAILABLE: 'SIP_TERMINATION_DESTINATION_UNAVAILABLE',
    SimOutcome.CONNECTION_ERROR: 'SIP_TERMINATION_UNKNOWN',
    SimOutcome.SYSTEM_ERROR: 'SIP_TERMINATION_UNKNOWN',
}
# How long unanswered outcomes take before the call ends (simulated seconds, uniform range).
_QUICK_END = {
    SimOutcome.BUSY: (1.0, 4.0),
    SimOutcome.INVALID_NUMBER: (0.3, 1.5),
    SimOutcome.UNAVAILABLE: (0.5, 3.0),
    SimOutcome.CONNECTION_ERROR: (0.5, 5.0),
    SimOutcome.SYSTEM_ERROR: (0.5, 5.0),
}


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec='microseconds').replace('+00:00', 'Z')


def duration(seconds: float) -> str:
    """Ultravox's duration string: ``"42s"``, ``"12.5s"``."""
    text = f'{seconds:.3f}'.rstrip('0').rstrip('.')
    return f'{text}s'


def parse_duration(value: str | None, default: float) -> float:
    return float(value[:-1]) if value else default


def billed_seconds(seconds: float) -> int:
    """Rounded up to the next started deciminute."""
    return math.ceil(round(seconds, 6) / BILLING_UNIT) * BILLING_UNIT if seconds > 0 else 0


@dataclass(slots=True)
class CallPlan:
    """Everything decided about one call at creation; times are epoch seconds."""

    call_id: str
    seq: int
    created: float  # real
    metadata: dict[str, str]
    to: str | None
    user: str | None
    host: str | None
    outcome: SimOutcome
    end_reason: str
    termination: str
    joined_sim: float | None  # simulated offsets from created
    ended_sim: float
    talk_sim: float
    time_scale: float
    billing_delay_sim: float
    base: dict[str, Any] = field(repr=False)  # the static part of the Call object
    #: The agent's HTTP tool call is under way: the conversation (and so the call) waits for it.
    tool_pending: bool = False
    #: The agent's HTTP tool calls: arguments sent, answer status, real epoch time the answer came back.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    #: 'sip', or the provider of a provider medium (no SIP details on the Call; see simulator/providers.py)
    medium: str = 'sip'
    deleted: bool = False
    #: The create request's templateContext (not part of the Call object; provider incoming calls show it).
    template_context: dict[str, Any] = field(default_factory=dict)
    #: When the create request reached the simulator (before its body was read and checked): what a
    #: carrier's calls-per-second window counts. 0 = ``created``.
    arrived: float = 0.0

    def real(self, offset_sim: float | None) -> float | None:
        return None if offset_sim is None else self.created + offset_sim * self.time_scale

    @property
    def joined_real(self) -> float | None:
        return self.real(self.joined_sim)

    @property
    def ended_real(self) -> float:
        return self.created + self.ended_sim * self.time_scale

    @property
    def billed_real(self) -> float:
        return self.created + (self.ended_sim + self.billing_delay_sim) * self.time_scale

    @property
    def billed(self) -> int:
        return billed_seconds(self.talk_sim)

    def view(self, now: float) -> dict[str, Any]:
        """The Call object as the API shows it at real time ``now``."""
        call = dict(self.base)
        joined_real = self.joined_real
        if joined_real is not None and now >= joined_real:
            call['joined'] = iso(self.created + (self.joined_sim or 0.0))
        if now >= self.ended_real and not self.tool_pending:
            call['ended'] = iso(self.created + self.ended_sim)
            call['endReason'] = self.end_reason
            if self.medium == 'sip':
                call['sipDetails'] = {'billedDuration': None, 'terminationReason': self.termination}
            if self.outcome is SimOutcome.VOICEMAIL:
                call['shortSummary'] = 'The call reached voicemail.'
            elif self.outcome is SimOutcome.ANSWERED:
                call['shortSummary'] = 'The callee answered and talked with the agent.'
                call['summary'] = f'Simulated conversation of {duration(self.talk_sim)} ending with {self.end_reason}.'
        if now >= self.billed_real and not self.tool_pending:
            billed = duration(self.billed)
            call['billedDuration'] = billed
            if self.medium == 'sip':
                call['sipDetails'] = {'billedDuration': billed, 'terminationReason': self.termination}
            answered = self.talk_sim > 0
            call['billingStatus'] = (
                'BILLING_STATUS_BILLED' if answered else 'BILLING_STATUS_FREE_ZERO_EFFECTIVE_DURATION'
            )
        return call

    def record(self) -> dict[str, Any]:
        """The simulator's own record of the call (real epoch times, as planned)."""
        return {
            'callId': self.call_id,
            'metadata': self.metadata,
            'to': self.to,
            'sip_host': self.host,
            'created': self.created,
            'joined': self.joined_real,
            'ended': self.ended_real,
            'outcome': str(self.outcome),
            'endReason': self.end_reason,
            'terminationReason': self.termination,
            'sip_billed_seconds': self.billed if self.medium == 'sip' else 0,
            'agent_billed_seconds': self.billed,
            'medium': self.medium,
            'tool_calls': self.tool_calls,
            'recordingEnabled': bool(self.base.get('recordingEnabled')),
        }


def _strip_secrets(medium: Any) -> Any:
    outgoing = ((medium or {}).get('sip') or {}).get('outgoing') if isinstance(medium, dict) else None
    if not isinstance(outgoing, dict) or 'password' not in outgoing:
        return medium
    return {
        **medium,
        'sip': {**medium['sip'], 'outgoing': {k: v for k, v in outgoing.items() if k != 'password'}},
    }


def base_call(call_id: str, created: float, body: dict[str, Any], agent_id: str | None) -> dict[str, Any]:
    """The Call fields that never change, with the live/final fields at their initial values."""
    settings = body.get('firstSpeakerSettings') or {'agent': {}}
    user_first = 'user' in settings or body.get('firstSpeaker') == 'FIRST_SPEAKER_USER'
    output = body.get('initialOutputMedium')
    return {
        'callId': call_id,
        'clientVersion': None,
        'created': iso(created),
        'joined': None,
        'ended': None,
        'endReason': None,
        'billedDuration': None,
        'billedSideInputTokens': None,
        'billedSideOutputTokens': None,
        'billingStatus': 'BILLING_STATUS_PENDING',
        'firstSpeaker': 'FIRST_SPEAKER_USER' if user_first else 'FIRST_SPEAKER_AGENT',
        'firstSpeakerSettings': settings,
        'inactivityMessages': body.get('inactivityMessages', []),
        'initialOutputMedium': output if output == 'MESSAGE_MEDIUM_TEXT' else 'MESSAGE_MEDIUM_VOICE',
        'joinTimeout': body.get('joinTimeout', '30s'),
        'joinUrl': None,
        'languageHint': body.get('languageHint'),
        'maxDuration': body.get('maxDuration', '3600s'),
        'medium': _strip_secrets(body.get('medium')),
        'model': body.get('model', 'ultravox-v0.7'),
        'recordingEnabled': body.get('recordingEnabled', False),
        'retentionPolicy': None,
        'systemPrompt': body.get('systemPrompt'),
        'temperature': body.get('temperature', 0.0),
        'timeExceededMessage': body.get('timeExceededMessage'),
        'voice': body.get('voice'),
        'transcriptOptional': body.get('transcriptOptional', True),
        'vadSettings': body.get('vadSettings'),
        'shortSummary': None,
        'summary': None,
        'agent': {'agentId': agent_id, 'name': f'sim-agent-{agent_id[:8]}'} if agent_id else NIL_AGENT,
        'agentId': agent_id,
        'experimentalSettings': body.get('experimentalSettings', {}),
        'metadata': body.get('metadata', {}),
        'initialState': body.get('initialState', {}),
        'requestContext': {},
        'sipDetails': {'billedDuration': None, 'terminationReason': None},
    }


class Planner:
    """Chooses each call's outcome and timings, deterministically from the seed and the call's identity."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()  # identity key -> calls so far (duplicates differ by count)
        self.forced_used: Counter[str] = Counter()

    def rng_for(self, seed: int, to: str | None, metadata: dict[str, str], seq: int) -> random.Random:
        identity = f'{to}|{sorted(metadata.items())}' if (to or metadata) else f'#{seq}'
        occurrence = self.seen[identity]
        self.seen[identity] += 1
        # A str seed is hashed (SHA-512) by Random itself: stable across runs, unlike hash().
        return random.Random(f'{seed}|{identity}|{occurrence}')  # noqa: S311  simulation, not crypto

    def outcome(self, config: SimulatorConfig, rng: random.Random, user: str | None) -> SimOutcome:
        if user is not None and user in config.forced_outcomes:
            forced = config.forced_outcomes[user]
            index = self.forced_used[user]
            self.forced_used[user] += 1
            if index < len(forced):
                return forced[index]
        pick = rng.random()
        outcome = SimOutcome.ANSWERED
        for candidate, weight in config.outcome_weights:
            pick -= weight
            if pick < 0:
                outcome = candidate
                break
        if outcome is SimOutcome.ANSWERED and config.voicemail_rate and rng.random() < config.voicemail_rate:
            return SimOutcome.VOICEMAIL
        return outcome

    def timings(
        self, config: SimulatorConfig, rng: random.Random, outcome: SimOutcome, body: dict[str, Any]
    ) -> tuple[SimOutcome, float | None, float, float, str]:
        """``(outcome, joined, ended, talk, endReason)`` in simulated seconds from creation."""
        join_timeout = parse_duration(body.get('joinTimeout'), DEFAULT_JOIN_TIMEOUT)
        max_duration = parse_duration(body.get('maxDuration'), DEFAULT_MAX_DURATION)
        ring = rng.uniform(config.ring_min, config.ring_max)
        answered = outcome in {SimOutcome.ANSWERED, SimOutcome.VOICEMAIL}
        if answered and ring >= join_timeout:
            outcome = SimOutcome.NO_ANSWER  # the callee would have picked up after Ultravox gave up
        elif answered:
            if config.talk_distribution == 'lognormal':
                median = math.sqrt(max(config.talk_min, 1.0) * max(config.talk_max, 1.0))
                talk = min(max(rng.lognormvariate(math.log(median), 0.6), config.talk_min), config.talk_max)
            else:
                talk = rng.uniform(config.talk_min, config.talk_max)
            reason = 'agent_hangup' if rng.random() < config.agent_hangup_share else 'hangup'
            if outcome is SimOutcome.VOICEMAIL:
                reason = 'agent_hangup'  # leaveVoicemail ends the call
            if talk >= max_duration:
                talk, reason = max_duration, 'timeout'
            return outcome, ring, ring + talk, talk, reason
        if outcome is SimOutcome.NO_ANSWER:
            give_up = config.no_answer_seconds if config.no_answer_seconds is not None else config.ring_max
            return outcome, None, min(join_timeout, give_up), 0.0, 'unjoined'
        if outcome is SimOutcome.REJECTED:
            return outcome, None, min(ring, join_timeout), 0.0, 'unjoined'
        low, high = _QUICK_END[outcome]
        reason = str(outcome) if outcome in {SimOutcome.CONNECTION_ERROR, SimOutcome.SYSTEM_ERROR} else 'unjoined'
        return outcome, None, min(rng.uniform(low, high), join_timeout), 0.0, reason


class SlidingWindow:
    """Creation times within the last ``width`` seconds, for rate limits."""

    def __init__(self, width: float) -> None:
        self.width = width
        self.times: deque[float] = deque()

    def retry_after(self, now: float, limit: int | None) -> int | None:
        """Seconds to wait (>= 1) if one more event now would exceed ``limit``, else None."""
        if limit is None:
            return None
        while self.times and self.times[0] <= now - self.width:
            self.times.popleft()
        if len(self.times) < limit:
            return None
        return max(1, math.ceil(self.times[-limit] + self.width - now))

    def add(self, now: float) -> None:
        self.times.append(now)


@dataclass
class CallStore:
    """All calls, indexed for GET by id and listing by metadata, plus live-call tracking for limits."""

    calls: list[CallPlan] = field(default_factory=list)
    by_id: dict[str, CallPlan] = field(default_factory=dict)
    by_metadata: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    live_ends: list[float] = field(default_factory=list)  # heap of real end times of live calls
    planner: Planner = field(default_factory=Planner)

    def live_count(self, now: float) -> int:
        while self.live_ends and self.live_ends[0] <= now:
            heapq.heappop(self.live_ends)
        return len(self.live_ends)

    def next_end(self) -> float | None:
        return self.live_ends[0] if self.live_ends else None

    def create(
        self,
        config: SimulatorConfig,
        body: dict[str, Any],
        now: float,
        agent_id: str | None,
        to_parts: tuple[str, str] | None,
        arrived: float = 0.0,
    ) -> CallPlan:
        seq = len(self.calls)
        call_id = str(uuid.uuid4())
        metadata: dict[str, str] = body.get('metadata') or {}
        to = (((body.get('medium') or {}).get('sip') or {}).get('outgoing') or {}).get('to')
        user, host = to_parts or (None, None)
        rng = self.planner.rng_for(config.seed, to, metadata, seq)
        chosen = self.planner.outcome(config, rng, user)
        outcome, joined, ended, talk, reason = self.planner.timings(config, rng, chosen, body)
        plan = CallPlan(
            call_id=call_id,
            seq=seq,
            created=now,
            metadata=metadata,
            to=to,
            user=user,
            host=host,
            outcome=outcome,
            end_reason=reason,
            termination=_TERMINATION[outcome],
            joined_sim=joined,
            ended_sim=ended,
            talk_sim=talk,
            time_scale=config.time_scale,
            billing_delay_sim=config.billing_delay,
            base=base_call(call_id, now, body, agent_id),
            template_context=dict(body.get('templateContext') or {}),
            arrived=arrived or now,
        )
        self.calls.append(plan)
        self.by_id[call_id] = plan
        for pair in metadata.items():
            self.by_metadata.setdefault(pair, []).append(seq)
        heapq.heappush(self.live_ends, plan.ended_real)
        return plan

    def matching(self, filters: dict[str, str], from_time: float | None, to_time: float | None) -> list[int]:
        """Sequence numbers (ascending) of calls whose metadata has every pair and created in range."""
        if filters:
            postings = sorted((self.by_metadata.get(pair, []) for pair in filters.items()), key=len)
            first, rest = postings[0], postings[1:]
            seqs = [s for s in first if all(self.calls[s].metadata.get(k) == v for k, v in filters.items())]
            del rest
        else:
            seqs = list(range(len(self.calls)))
        if from_time is not None or to_time is not None:
            low = from_time if from_time is not None else -math.inf
            high = to_time if to_time is not None else math.inf
            seqs = [s for s in seqs if low <= self.calls[s].created <= high]
        return seqs


# --- statistics over the record -----------------------------------------------------------------------


def max_concurrent(intervals: list[tuple[float, float]]) -> int:
    """Most intervals ``[start, end)`` overlapping at any instant (an end at t frees before a start at t)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


def max_in_window(times: list[float], width: float = 1.0) -> int:
    """Most events inside any half-open window ``[t, t + width)``."""
    ordered = sorted(times)
    best = 0
    for i, start in enumerate(ordered):
        best = max(best, bisect.bisect_left(ordered, start + width, lo=i) - i)
    return best
