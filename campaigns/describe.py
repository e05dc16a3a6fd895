"""``dialer campaign show``: a campaign's settings as plain data (``--json``) and as aligned lines.

Only settings: no phone number of a contact and never a trunk password (the trunk's caller ID and
host are configuration the operator wrote, shown so that a wrong trunk is easy to spot).
"""

from __future__ import annotations

from datetime import time
from typing import TYPE_CHECKING, Any

from dialer.models import Weekday


if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from dialer.models import CallingHours, CampaignConfig
    from dialer.trunks import Trunk


def _hhmm(value: time) -> str:
    return '24:00' if value == time.max else f'{value:%H:%M}'


def _days(days: tuple[Weekday, ...]) -> str:
    week = list(Weekday)
    if list(days) == week:
        return 'every day'
    indices = sorted(week.index(d) for d in days)
    if indices == list(range(indices[0], indices[-1] + 1)) and len(indices) > 2:
        return f'{week[indices[0]].value}-{week[indices[-1]].value}'
    return ','.join(week[i].value for i in indices)


def _duration(seconds: float) -> str:
    for unit, size in (('d', 86400), ('h', 3600), ('m', 60)):
        if seconds >= size and seconds % size == 0:
            return f'{int(seconds // size)}{unit}'
    return f'{seconds:g}s'


def _hours(hours: CallingHours) -> dict[str, Any]:
    return {
        'start': _hhmm(hours.start),
        'end': _hhmm(hours.end),
        'days': [d.value for d in hours.days],
        'legal_bound': hours.legal_bound,
    }


def describe_campaign(config: CampaignConfig, data: Mapping[str, str], trunk: Trunk | None) -> dict[str, Any]:
    """The campaign's settings, state and size; ``trunk`` is None when the trunks file does not know it."""
    described: dict[str, Any] = config.model_dump(mode='json')
    described['hours'] = _hours(config.hours)
    described['state'] = data.get('state', '?')
    described['loading'] = 'loading' in data
    described['contacts'] = int(data.get('contacts') or 0)
    described['trunk_details'] = (
        None
        if trunk is None
        else {
            'host': trunk.host,
            'transport': trunk.transport,
            'from': trunk.caller_id,
            'max_concurrent': trunk.max_concurrent,
            'calls_per_second': trunk.calls_per_second,
            'burst': trunk.burst,
        }
    )
    return described


def describe_lines(described: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(label, value) lines for the terminal; an empty label is a heading."""
    state = described['state'] + (', loading contacts' if described['loading'] else '')
    yield '', f'campaign {described["name"]} ({state}, {described["contacts"]} contacts)'
    trunk = described['trunk_details']
    yield (
        'trunk',
        described['trunk']
        + (
            ' (not in this trunks file)'
            if trunk is None
            else f': {trunk["host"]} ({trunk["transport"]}), from {trunk["from"]}, '
            f'{trunk["max_concurrent"]} concurrent, {trunk["calls_per_second"]:g}/s (burst {trunk["burst"]})'
        ),
    )
    if described['agent_id']:
        yield 'agent', described['agent_id']
    else:
        yield 'agent', f'ad-hoc system prompt ({len(described["system_prompt"])} characters)'
    hours = described['hours']
    bound = '' if hours['legal_bound'] else ', outside the legal 08:00-21:00 bound allowed'
    days = _days(tuple(Weekday(d) for d in hours['days']))
    yield 'calling hours', f"{hours['start']}-{hours['end']} {days}, in each contact's local time{bound}"
    yield 'default region', described['default_region']
    yield 'default zone', described['default_timezone'] or '-'
    retry = described['retry']
    if retry['retry_on']:
        delays = ', '.join(f'{o} after {_duration(retry["delays"][o])}' for o in retry['retry_on'])
        yield 'retries', f'{delays}'
    else:
        yield 'retries', 'none'
    yield 'attempts', f'at most {retry["max_attempts"]} per contact, {retry["max_per_24h"]} in any 24 h'
    yield 'first speaker', described['first_speaker']
    max_duration, join_timeout = described['max_duration'], described['join_timeout']
    yield 'max duration', _duration(max_duration) if max_duration else 'Ultravox default (1h)'
    yield 'join timeout', _duration(join_timeout) if join_timeout else 'Ultravox default (30s)'
    yield 'throttle', described['throttle'] or '-'
    yield 'dispositions', ', '.join(described['dispositions'])
    redial = retry['retry_dispositions']
    yield (
        'redials',
        ', '.join(f'{d} after {_duration(retry["disposition_delays"][d])} (or when asked)' for d in redial) or 'none',
    )
    if not described['agent_id']:
        yield 'voicemail message', described['voicemail_message'] or "the agent's own"
    callbacks = described['callbacks']
    answered_by = callbacks['agent_id'] or 'the campaign agent'
    closing = 'closing' if callbacks['close_contact'] else 'not closing'
    window = _duration(callbacks['route_after_end'])
    yield 'call-backs', f'answered by {answered_by}, {closing} the contact, routed for {window} after the campaign ends'
    yield 'recording', 'on' if described['recording'] else 'off'
