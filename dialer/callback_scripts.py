"""Typed wrappers of the call-back scripts (``callback_route.lua``, ``callback_track.lua``).

Kept beside ``dialer/scripts.py`` rather than in it: the inbound side has its own small ledger (the
campaign's ``inbound`` hash and ``|in`` tracking members) and shares only the prelude.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dialer import constants as k
from dialer.outbox import NO_OUTBOX, Outbox
from dialer.scripts import register


if TYPE_CHECKING:
    from redis.asyncio import Redis

#: Suffix of the tracking member of an inbound call: ``<campaign>:<callback id>|<call id or ->|in``.
INBOUND_SUFFIX = 'in'
UNKNOWN_CALL = '-'


def inbound_member(campaign: str, callback_id: str, call_id: str = UNKNOWN_CALL) -> str:
    return f'{campaign}:{callback_id}|{call_id}|{INBOUND_SUFFIX}'


def is_inbound_member(member: str) -> bool:
    return member.endswith(f'|{INBOUND_SUFFIX}')


def parse_inbound_member(member: str) -> tuple[str, str, str]:
    """(campaign, callback id, call id or ``-``)."""
    head, call_id, _ = member.split('|')
    campaign, callback_id = head.split(':', 1)
    return campaign, callback_id, call_id


@dataclass(frozen=True, slots=True)
class Routed:
    verdict: str  # route | ended | gone
    now_ms: int
    contact: str | None = None
    progress: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Ended:
    news: bool
    billing_counted: bool


class CallbackScripts:
    def __init__(self, redis: Redis, outbox: Outbox = NO_OUTBOX) -> None:
        self._route = register(redis, 'callback_route')
        self._track = register(redis, 'callback_track')
        #: where a contact closed by an answered call-back announces itself (result webhooks)
        self.outbox = outbox

    async def route(
        self,
        campaign: str,
        number: str,
        callback_id: str,
        *,
        dialled_ms: int,
        window_ms: int,
        first_poll_ms: int,
        attempt_id: str,
    ) -> Routed:
        keys = [
            k.CLOCK_OFFSET,
            k.campaign(campaign),
            k.campaign_contacts(campaign),
            k.campaign_progress(campaign),
            k.campaign_inbound(campaign),
            k.TRACKING,
        ]
        member = inbound_member(campaign, callback_id)
        args = [number, callback_id, dialled_ms, window_ms, first_poll_ms, attempt_id, member]
        result = await self._route(keys=keys, args=[str(a) for a in args])
        verdict, now = str(result[0]), int(result[1])
        if verdict != 'route':
            return Routed(verdict, now)
        return Routed(verdict, now, str(result[2]), json.loads(result[3]) if result[3] else None)

    def _keys(self, campaign: str, trunk: str) -> list[str]:
        return [
            k.CLOCK_OFFSET,
            k.campaign(campaign),
            k.campaign_progress(campaign),
            k.campaign_inbound(campaign),
            k.TRACKING,
            k.campaign_due(campaign),
            k.trunk_campaigns(trunk),
            k.campaign_contacts(campaign),
            *self.outbox.keys(),
        ]

    async def live(self, member: str, call_id: str, trunk: str, next_poll_ms: int) -> bool:
        campaign, callback_id, _ = parse_inbound_member(member)
        args = ['live', campaign, callback_id, member, call_id, inbound_member(campaign, callback_id, call_id)]
        args.append(str(next_poll_ms))
        return bool(await self._track(keys=self._keys(campaign, trunk), args=args))

    async def missing(self, member: str, trunk: str) -> bool:
        campaign, callback_id, _ = parse_inbound_member(member)
        args = ['missing', campaign, callback_id, member]
        return bool(await self._track(keys=self._keys(campaign, trunk), args=args))

    async def end(
        self,
        member: str,
        trunk: str,
        outcome: str,
        fields: dict[str, Any],
        *,
        billing_final: bool,
        close_contact: bool,
        billing_poll_ms: int,
    ) -> Ended:
        campaign, callback_id, _ = parse_inbound_member(member)
        args = [
            'end',
            campaign,
            callback_id,
            member,
            outcome,
            json.dumps(fields, separators=(',', ':')),
            '1' if billing_final else '0',
            '1' if close_contact else '0',
            str(billing_poll_ms),
            *(str(arg) for arg in self.outbox.args()),
        ]
        result = int(await self._track(keys=self._keys(campaign, trunk), args=args))
        return Ended(news=bool(result & 1), billing_counted=bool(result & 2))
