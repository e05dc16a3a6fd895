"""Building the SIP ``to`` URI Ultravox dials: ``sip:+15551234567@host[:port][;transport=tcp|tls]``."""

from __future__ import annotations

import re
from typing import Literal


Transport = Literal['udp', 'tcp', 'tls']

# A hostname (RFC 1123 labels), an IPv4 address or a bracketed IPv6 address, with an optional port.
_HOST = re.compile(
    r'^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)'
    r'(?::(?P<port>\d{1,5}))?$'
)
_E164 = re.compile(r'^\+[1-9]\d{6,14}$')


def check_sip_host(value: str) -> str:
    """Accept ``host``, ``host:port``, ``1.2.3.4:5060`` or ``[::1]:5061``; reject anything else."""
    match = _HOST.match(value)
    if not match:
        raise ValueError(f'{value!r} is not a SIP host (expected a domain or IP with an optional :port)')
    port = match.group('port')
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f'port {port} in {value!r} is out of range')
    return value


def sip_uri(number: str, host: str, transport: Transport = 'udp') -> str:
    """The URI for an E.164 number on a trunk; UDP is SIP's default so it gets no parameter."""
    if not _E164.match(number):
        raise ValueError(f'{number!r} is not an E.164 number')
    uri = f'sip:{number}@{host}'
    return uri if transport == 'udp' else f'{uri};transport={transport}'


def sip_host_of(uri: str) -> str:
    """The ``host[:port]`` part of a SIP URI (the simulator uses it to tell trunks apart)."""
    rest = uri.removeprefix('sip:').removeprefix('sips:')
    return rest.split('@', 1)[-1].split(';', 1)[0]
