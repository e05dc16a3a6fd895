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

    _FullMatch = Callable[[str], re.Match[str] | None]


#: A number written with digits, spaces, dots, dashes and brackets only, "+" allowed in front.
_PLAIN = re.compile(r'\+?[0-9 ().\-]+')
_SEPARATORS = str.maketrans('', '', ' ().-+')
#: phonenumbers' bounds on a national significant number and on a country calling code.
_MIN_NATIONAL, _MAX_NATIONAL, _MAX_CODE = 2, 17, 3
_NON_GEOGRAPHIC = '001'


def _has_length(desc: PhoneNumberDesc, length: int) -> bool:
    # as phonenumbers' _is_number_matching_desc: a desc that lists no lengths takes any length
    return not desc.possible_length or length in desc.possible_length


@dataclass(frozen=True, slots=True)
class _RegionPlan:
    """One region's numbering plan, compiled: what phonenumbers reads from ``PhoneMetadata``."""

    code: int
    #: national number length -> (the general pattern, any type's pattern), for lengths that can be valid
    by_length: dict[int, tuple[_FullMatch, _FullMatch]]
    leading_digits: re.Pattern[str] | None
    national_prefix: re.Pattern[str] | None
    international_prefix: re.Pattern[str] | None

    def accepts(self, national: str) -> bool:
        """phonenumbers' ``_number_type_helper(...) != UNKNOWN``: the general pattern and any type's."""
        patterns = self.by_length.get(len(national))
        return patterns is not None and patterns[0](national) is not None and patterns[1](national) is not None


def _by_length(metadata: PhoneMetadata) -> dict[int, tuple[_FullMatch, _FullMatch]]:
    general = metadata.general_desc
    descs = (
        metadata.premium_rate, metadata.toll_free, metadata.shared_cost, metadata.voip,
        metadata.personal_number, metadata.pager, metadata.uan, metadata.voicemail,
        metadata.fixed_line, metadata.mobile,
    )  # fmt: skip
    # a desc without a pattern never matches in phonenumbers
    types = [desc for desc in descs if desc is not None and desc.national_number_pattern]
    by_length: dict[int, tuple[_FullMatch, _FullMatch]] = {}
    if general is None or not general.national_number_pattern:
        return by_length
    general_pattern: re.Pattern[str] = re.compile(general.national_number_pattern)
    for length in range(_MIN_NATIONAL, _MAX_NATIONAL + 1):
        if not _has_length(general, length):
            continue
        # one alternation instead of ten patterns tried in turn: the regex engine does the loop
        alternatives = [f'(?:{desc.national_number_pattern})' for desc in types if _has_length(desc, length)]
        if alternatives:
            any_type: re.Pattern[str] = re.compile('|'.join(alternatives))
            by_length[length] = (general_pattern.fullmatch, any_type.fullmatch)
    return by_length


@cache
def _plan(region: str) -> _RegionPlan | None:
    metadata = PhoneMetadata.metadata_for_region(region, None)
    if metadata is None or metadata.country_code is None:
        return None
    return _RegionPlan(
        code=metadata.country_code,
        by_length=_by_length(metadata),
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
    if len(digits) <= _MIN_NATIONAL or digits.startswith('0'):
        return None  # parse: too short after the "+", or no country code starts with 0
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
        if plan is None:
            return None
        idd = plan.international_prefix.match(digits) if plan.international_prefix is not None else None
        if idd is not None:
            # "011 44 ..." from the US: parse reads what follows the prefix as after a "+"
            return _code_and_national(digits[idd.end() :], True, region)  # noqa: FBT003
        if digits.startswith(str(plan.code)):
            return None  # maybe the country code written without "+": phonenumbers decides
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
