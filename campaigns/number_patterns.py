"""A quick path through phonenumbers' own metadata for the plainly written numbers most rows hold.

``phonenumbers.parse`` plus ``is_valid_number`` costs 45-65 µs per number, most of it in layers of
generic handling (vanity letters, RFC 3966, carrier codes, extension syntaxes) that a number such as
"+44 20 7946 0958" or "(415) 555-2671" never reaches. For those, this module takes the same steps
with the same metadata patterns, compiled once per region, in a few microseconds.

It only ever *accepts*: wherever phonenumbers might do something this path does not (strip a
national prefix, an international dialling prefix or a country code written without "+", or read a
non-geographic code) it answers None and the caller asks phonenumbers. A number this path calls
invalid goes to phonenumbers too, which also gives the reason. ``tests/test_numbers_dnc.py`` checks
the two agree (the E.164 form and the number type) on many thousands of numbers in every region's
formats.

The number type comes from the same single match that validates: the type patterns are one
alternation of named groups in phonenumbers' order of precedence (premium rate first, fixed line and
mobile last), so the group that matched is the type ``phonenumbers.number_type`` would give.
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
    #: (general pattern, the types' alternation, the mobile pattern or None)
    _Patterns = tuple[_FullMatch, _FullMatch, _FullMatch | None]


#: A number written with digits, spaces, dots, dashes and brackets only, "+" allowed in front.
_PLAIN = re.compile(r'\+?[0-9 ().\-]+')
_SEPARATORS = str.maketrans('', '', ' ().-+')
#: phonenumbers' bounds on a national significant number and on a country calling code.
_MIN_NATIONAL, _MAX_NATIONAL, _MAX_CODE = 2, 17, 3
_NON_GEOGRAPHIC = '001'
#: phonenumbers' ``_number_type_helper`` order; the names are PhoneNumberType's, lower-case.
_TYPE_ORDER = (
    'premium_rate', 'toll_free', 'shared_cost', 'voip', 'personal_number', 'pager', 'uan', 'voicemail',
    'fixed_line', 'mobile',
)  # fmt: skip


def _has_length(desc: PhoneNumberDesc, length: int) -> bool:
    # as phonenumbers' _is_number_matching_desc: a desc that lists no lengths takes any length
    return not desc.possible_length or length in desc.possible_length


@dataclass(frozen=True, slots=True)
class _RegionPlan:
    """One region's numbering plan, compiled: what phonenumbers reads from ``PhoneMetadata``."""

    code: int
    #: national number length -> patterns (see ``_Patterns``), for lengths that can be valid
    by_length: dict[int, _Patterns]
    same_mobile_and_fixed_line: bool
    leading_digits: re.Pattern[str] | None
    national_prefix: re.Pattern[str] | None
    international_prefix: re.Pattern[str] | None

    def number_type(self, national: str) -> str | None:
        """phonenumbers' ``_number_type_helper`` (lower-case name), None for UNKNOWN or where unsure."""
        patterns = self.by_length.get(len(national))
        if patterns is None or patterns[0](national) is None:
            return None
        match = patterns[1](national)
        if match is None:
            return None
        kind = match.lastgroup
        if kind == 'fixed_line':
            mobile = patterns[2]
            if self.same_mobile_and_fixed_line or (mobile is not None and mobile(national) is not None):
                return 'fixed_line_or_mobile'
        elif kind == 'mobile' and self.same_mobile_and_fixed_line:
            return None  # phonenumbers does not read such a number as mobile: let it decide
        return kind


def _by_length(metadata: PhoneMetadata) -> dict[int, _Patterns]:
    general = metadata.general_desc
    # a desc without a pattern never matches in phonenumbers
    types = [(name, desc) for name in _TYPE_ORDER if (desc := getattr(metadata, name)) is not None]
    types = [(name, desc) for name, desc in types if desc.national_number_pattern]
    by_length: dict[int, _Patterns] = {}
    if general is None or not general.national_number_pattern:
        return by_length
    general_pattern: re.Pattern[str] = re.compile(general.national_number_pattern)
    mobile = metadata.mobile
    for length in range(_MIN_NATIONAL, _MAX_NATIONAL + 1):
        if not _has_length(general, length):
            continue
        # one alternation instead of ten patterns tried in turn: the regex engine does the loop, and
        # the first alternative that matches whole (phonenumbers' precedence) names the type
        alternatives = [
            f'(?P<{name}>{desc.national_number_pattern})' for name, desc in types if _has_length(desc, length)
        ]
        if alternatives:
            any_type: re.Pattern[str] = re.compile('|'.join(alternatives))
            mobile_match: _FullMatch | None = None
            if mobile is not None and mobile.national_number_pattern and _has_length(mobile, length):
                mobile_match = re.compile(mobile.national_number_pattern).fullmatch
            by_length[length] = (general_pattern.fullmatch, any_type.fullmatch, mobile_match)
    return by_length


@cache
def _plan(region: str) -> _RegionPlan | None:
    metadata = PhoneMetadata.metadata_for_region(region, None)
    if metadata is None or metadata.country_code is None:
        return None
    return _RegionPlan(
        code=metadata.country_code,
        by_length=_by_length(metadata),
        same_mobile_and_fixed_line=bool(metadata.same_mobile_and_fixed_line_pattern),
        leading_digits=re.compile(metadata.leading_digits) if metadata.leading_digits else None,
        national_prefix=re.compile(metadata.national_prefix_for_parsing)
        if metadata.national_prefix_for_parsing
        else None,
        international_prefix=re.compile(metadata.international_prefix) if metadata.international_prefix else None,
    )


def _number_type(code: int, national: str) -> str | None:
    """phonenumbers' ``number_type`` of a number ``is_valid_number`` accepts, else None: find the
    number's region among those sharing its code (by leading digits where the metadata has them, else
    by full validation), then type it there."""
    for region in COUNTRY_CODE_TO_REGION_CODE.get(code, ()):
        plan = _plan(region)
        if plan is None:
            continue
        if plan.leading_digits is not None:
            if plan.leading_digits.match(national):
                return plan.number_type(national)
        else:
            kind = plan.number_type(national)
            if kind is not None:
                return kind
    return None


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


def quick_number(text: str, region: str) -> tuple[str, str] | None:
    """(E.164, number type) of ``text`` when it is plainly written and valid, else None (ask phonenumbers).

    ``text`` is stripped; ``region`` is the region numbers without a country code belong to. The type
    is ``phonenumbers.PhoneNumberType``'s name in lower case (``fixed_line_or_mobile``, ``premium_rate``).
    """
    if not _PLAIN.fullmatch(text):
        return None
    split = _code_and_national(text.translate(_SEPARATORS), text.startswith('+'), region)
    if split is None:
        return None
    code, national = split
    if _MIN_NATIONAL <= len(national) <= _MAX_NATIONAL:
        kind = _number_type(code, national)
        if kind is not None:
            return f'+{code}{national}', kind
    return None


def quick_e164(text: str, region: str) -> str | None:
    """``text`` as E.164 when it is plainly written and valid, else None (see ``quick_number``)."""
    quick = quick_number(text, region)
    return None if quick is None else quick[0]
