"""Phone-number normalisation shared by the CSV loader and the do-not-call list.

Every number the dialer stores, compares or dials is E.164 (``+14155552671``), so a contact and a DNC
entry written in different formats ("(415) 555-2671", "+1 415.555.2671") still match.

Extensions ("x12", "ext. 12", "#12") are rejected, not stripped: the dialer cannot dial an extension,
and dropping it would put the call through to a switchboard instead of the person who gave the number.
Letters (vanity numbers such as 1-800-FLOWERS, or a name typed in the wrong column) are rejected too:
silently mapping letters to digits hides data-entry mistakes.
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType, ValidationResult

from campaigns.number_patterns import quick_number


class InvalidNumber(ValueError):  # noqa: N818  the name reads as the reason a row is rejected
    """A raw value that is not a dialable phone number; ``reason`` is short and user-facing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# phonenumbers compiles its metadata patterns through re.compile on every use; its own cache of
# compiled patterns saves about a fifth of a CSV load's parsing time.
phonenumbers.re_util.enable_pattern_cache()

#: Longer than any phone number with generous formatting; guards the parser against junk cells.
MAX_RAW_LENGTH = 64

_EXTENSION = re.compile(r'(?:;\s*ext=|\bext(?:ension)?\.?|\bx|#)\s*\d+\s*$', re.IGNORECASE)
_LETTER = re.compile(r'[^\W\d_]')
_PARSE_ERRORS = {
    NumberParseException.INVALID_COUNTRY_CODE: 'unknown country code',
    NumberParseException.NOT_A_NUMBER: 'not a phone number',
    NumberParseException.TOO_SHORT_AFTER_IDD: 'too short',
    NumberParseException.TOO_SHORT_NSN: 'too short',
    NumberParseException.TOO_LONG: 'too long',
}
#: PhoneNumberType value -> its name in lower case, as campaign settings spell number types.
TYPE_NAMES = {
    value: name.lower() for name, value in vars(PhoneNumberType).items() if name.isupper() and isinstance(value, int)
}
_LENGTH_ERRORS = {
    ValidationResult.TOO_SHORT: 'too short',
    ValidationResult.TOO_LONG: 'too long',
    ValidationResult.INVALID_LENGTH: 'wrong number of digits',
    ValidationResult.INVALID_COUNTRY_CODE: 'unknown country code',
}


def normalise_number(raw: str, region: str) -> str:
    """Return ``raw`` as E.164, reading numbers without a country code as numbers of ``region``.

    Raises ``InvalidNumber`` with a reason such as 'empty', 'not a phone number', 'too long' or
    'not a valid number for region GB'.
    """
    return normalise_typed(raw, region)[0]


def normalise_typed(raw: str, region: str) -> tuple[str, str]:
    """(E.164, number type) of ``raw``, as ``normalise_number`` reads it; the type is phonenumbers'
    ``PhoneNumberType`` name in lower case (``mobile``, ``premium_rate``, ...)."""
    text = raw.strip()
    if not text:
        raise InvalidNumber('empty')
    if len(text) > MAX_RAW_LENGTH:
        raise InvalidNumber('too long')
    quick = quick_number(text, region)
    if quick is None and text.startswith('00') and phonenumbers.country_code_for_region(region) == 1:
        quick = quick_number('+' + re.sub(r'\D', '', text)[2:], region)  # see _read_00_as_international
    if quick is not None:
        return quick
    number = _slow_parse(text, region)
    return phonenumbers.format_number(number, PhoneNumberFormat.E164), TYPE_NAMES[phonenumbers.number_type(number)]


def _slow_parse(text: str, region: str) -> phonenumbers.PhoneNumber:
    if _EXTENSION.search(text):
        raise InvalidNumber('has an extension (extensions cannot be dialled)')
    if _LETTER.search(text):
        raise InvalidNumber('not a phone number (contains letters)')
    if text.startswith('00') and phonenumbers.country_code_for_region(region) == 1:
        international = _read_00_as_international(text, region)
        if international is not None:
            return international
    number = _parse(text, region)
    if number.extension:
        raise InvalidNumber('has an extension (extensions cannot be dialled)')
    if not phonenumbers.is_valid_number(number):
        # "00 44 ..." is the international form in most of the world; when the campaign's region
        # dials abroad with another prefix (011 in the US) the parser reads it as a national number.
        digits = re.sub(r'\D', '', text)
        if digits.startswith('00') and not text.startswith('+'):
            retry = _parse('+' + digits[2:], region)
            if phonenumbers.is_valid_number(retry) and not retry.extension:
                return retry
        raise InvalidNumber(_invalid_reason(number, region))
    return number


def _read_00_as_international(text: str, region: str) -> phonenumbers.PhoneNumber | None:
    # "00 44 ..." is the international form in most of the world; North America dials abroad
    # with 011, so the parser reads it as a national number, which there never starts with 0:
    # read it as international straight away instead of parsing it twice.
    number = _try_parse('+' + re.sub(r'\D', '', text)[2:], region)
    if number is not None and not number.extension and phonenumbers.is_valid_number(number):
        return number
    return None


def _try_parse(text: str, region: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region)
    except NumberParseException:
        return None


def _parse(text: str, region: str) -> phonenumbers.PhoneNumber:
    try:
        return phonenumbers.parse(text, region)
    except NumberParseException as exc:
        raise InvalidNumber(_PARSE_ERRORS.get(exc.error_type, 'not a phone number')) from None


def _invalid_reason(number: phonenumbers.PhoneNumber, region: str) -> str:
    length = phonenumbers.is_possible_number_with_reason(number)
    if length in _LENGTH_ERRORS:
        return _LENGTH_ERRORS[length]
    number_region = phonenumbers.region_code_for_country_code(number.country_code or 0)
    if number_region in {'ZZ', '001'}:
        number_region = region
    return f'not a valid number for region {number_region}'
