"""A quick path through phonenumbers' own metadata for the plainly written numbers most rows hold.

``phonenumbers.parse`` plus ``is_valid_number`` costs 45-65 µs per number, most of it in layers of
generic handling (vanity letters, RFC 3966, carrier codes, extension syntaxes) that a number such as
"+44 20 7946 0958" or "(415) 555-2671" never reaches. For those, this module takes the same steps
with the same metadata patterns, compiled once per region, in a few microseconds.

It only ever *accepts*: wherever phonenumbers might do something this path does not (strip a
national prefix, an international dialling prefix or a country code written without "+", or read a
non-geographic code) it answers None and the caller asks phonenumbers. A number this path calls
invalid goes to phonenumbers too, which also gives the reason. ``tests/test_numbers_dnc.py`` checks
the two agree on many thousands of numbers in every region's formats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata


if TYPE_CHECKING:
    from collections.abc import Callable

    from phonenumbers import PhoneNumberDesc


#: A number written with digits, spaces, dots, dashes and brackets only, "+" allowed in front.
_PLAIN = re.compile(r'\+?[0-9 ().\-]+')
_SEPARATORS = str.maketrans('', '', ' ().-+')
#: phonenumbers' bounds on a national significant number and on a country calling code.
_MIN_NATIONAL, _MAX_NATIONAL, _MAX_CODE = 2, 17, 3
_NON_GEOGRAPHIC = '001'

_Matcher = tuple[frozenset[int], 'Callable[[str], re.Match[str] | None]']


def _matcher(desc: PhoneNumberDesc | None) -> _Matcher | None:
    if desc is None or not desc.national_number_pattern:
        return None
    return frozenset(desc.possible_length), re.compile(desc.national_number_pattern).fullmatch


def _matches(matcher: _Matcher, national: str) -> bool:
    # as phonenumbers' _is_number_matching_desc: no listed lengths means "any length"
    lengths, fullmatch = matcher
    return (not lengths or len(national) in lengths) and fullmatch(national) is not None


@dataclass(frozen=True, slots=True)
class _RegionPlan:
    """One region's numbering plan, compiled: what phonenumbers reads from ``PhoneMetadata``."""

    code: int
    general: _Matcher | None
    types: tuple[_Matcher, ...]
    leading_digits: re.Pattern[str] | None
    national_prefix: re.Pattern[str] | None
    international_prefix: re.Pattern[str] | None

    def accepts(self, national: str) -> bool:
        """phonenumbers' ``_number_type_helper(...) != UNKNOWN``: the general pattern and any type's."""
        if self.general is None or not _matches(self.general, national):
            return False
        return any(_matches(matcher, national) for matcher in self.types)


@cache
def _plan(region: str) -> _RegionPlan | None:
    metadata = PhoneMetadata.metadata_for_region(region, None)
    if metadata is None:
        return None
    descs = (
        metadata.premium_rate, metadata.toll_free, metadata.shared_cost, metadata.voip,
        metadata.personal_number, metadata.pager, metadata.uan, metadata.voicemail,
        metadata.fixed_line, metadata.mobile,
    )  # fmt: skip
    return _RegionPlan(
        code=metadata.country_code,
        general=_matcher(metadata.general_desc),
        types=tuple(matcher for matcher in map(_matcher, descs) if matcher is not None),
        leading_digits=re.compile(metadata.leading_digits) if metadata.leading_digits else None,
        national_prefix=re.compile(metadata.national_prefix_for_parsing)
        if metadata.national_prefix_for_parsing
        else None,
        international_prefix=re.compile(metadata.international_prefix) if metadata.international_prefix else None,
    )


def _is_valid(code: int, national: str) -> bool:
    """phonenumbers' ``is_valid_number``: find the number's region among those sharing its code (by
    leading digits where the metadata has them, else by full validation), then validate there."""
    for region in COUNTRY_CODE_TO_REGION_CODE.get(code, ()):
        plan = _plan(region)
        if plan is None:
            continue
        if plan.leading_digits is not None:
            if plan.leading_digits.match(national):
                return plan.accepts(national)
        elif plan.accepts(national):
            return True
    return False


def _split_international(digits: str) -> tuple[int, str] | None:
    """(country code, national number) of the digits after "+", as phonenumbers splits them."""
    if digits.startswith('0'):
        return None
    for size in range(1, _MAX_CODE + 1):
        code = int(digits[:size])
        if code in COUNTRY_CODE_TO_REGION_CODE:
            regions = COUNTRY_CODE_TO_REGION_CODE[code]
            return None if _NON_GEOGRAPHIC in regions else (code, digits[size:])
    return None


def _code_and_national(digits: str, international: bool, region: str) -> tuple[int, str] | None:
    """Split as phonenumbers' parse would, where that is plain; None where it might do more."""
    if international:
        split = _split_international(digits)
        if split is None:
            return None
        code, national = split
        # parse strips a national prefix written after the country code too ("+44 (0)20 ...")
        plan = _plan(COUNTRY_CODE_TO_REGION_CODE[code][0])
    else:
        plan = _plan(region)
        if plan is None or digits.startswith(str(plan.code)):
            return None  # maybe the country code written without "+": phonenumbers decides
        if plan.international_prefix is not None and plan.international_prefix.match(digits):
            return None
        code, national = plan.code, digits
    if plan is None or (plan.national_prefix is not None and plan.national_prefix.match(national)):
        return None
    return code, national


def quick_e164(text: str, region: str) -> str | None:
    """``text`` as E.164 when it is plainly written and valid, else None (ask phonenumbers).

    ``text`` is stripped; ``region`` is the region numbers without a country code belong to.
    """
    if not _PLAIN.fullmatch(text):
        return None
    split = _code_and_national(text.translate(_SEPARATORS), text.startswith('+'), region)
    if split is None:
        return None
    code, national = split
    if _MIN_NATIONAL <= len(national) <= _MAX_NATIONAL and _is_valid(code, national):
        return f'+{code}{national}'
    return None
