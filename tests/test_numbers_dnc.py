"""Phone-number normalisation (campaigns/numbers.py) and the do-not-call list (campaigns/dnc.py)."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from campaigns import dnc, numbers
from campaigns.number_patterns import quick_number
from campaigns.numbers import InvalidNumber, normalise_number, normalise_typed
from dialer import constants


@pytest.mark.parametrize(
    ('raw', 'region', 'expected'),
    [
        ('(415) 555-2671', 'US', '+14155552671'),
        ('415.555.2671', 'US', '+14155552671'),
        ('415-555-2671', 'US', '+14155552671'),
        ('1 415 555 2671', 'US', '+14155552671'),
        ('+1 (415) 555-2671', 'GB', '+14155552671'),
        ('  +14155552671  ', 'US', '+14155552671'),
        ('\u00a0+1 415 555 2671\ufeff', 'US', '+14155552671'),
        ('+44 20 7946 0958', 'US', '+442079460958'),
        ('020 7946 0958', 'GB', '+442079460958'),
        ('00 44 20 7946 0958', 'GB', '+442079460958'),
        ('00 44 20 7946 0958', 'US', '+442079460958'),  # US dials abroad with 011, 00 still understood
        ('011 44 20 7946 0958', 'US', '+442079460958'),
        ('030 1234567', 'DE', '+49301234567'),
        ('+49 151 23456789', 'US', '+4915123456789'),
        ('98765 43210', 'IN', '+919876543210'),
    ],
)
def test_common_formats_normalise_to_e164(raw, region, expected):
    assert normalise_number(raw, region) == expected


WRITTEN_FORMATS = (
    PhoneNumberFormat.E164,
    PhoneNumberFormat.INTERNATIONAL,
    PhoneNumberFormat.NATIONAL,
    PhoneNumberFormat.RFC3966,
)


def _written_forms(rng: random.Random) -> list[tuple[str, str]]:
    """(text, campaign region): each region's example numbers, some digits changed, in many forms."""
    forms = [(text, region) for text in ('+', '+1', '00', '011', '0114', '()', '-', '1') for region in ('US', 'GB')]
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.TOLL_FREE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            code, national = example.country_code, phonenumbers.national_significant_number(example)
            for _ in range(3):
                cut = rng.randint(0, min(3, len(national)))
                tail = ''.join(rng.choice('0123456789') for _ in range(max(0, cut + rng.choice((-1, 0, 0, 1)))))
                digits = national[: len(national) - cut] + tail
                try:
                    number = phonenumbers.parse(f'+{code}{digits}', None)
                except phonenumbers.NumberParseException:
                    continue
                texts = [phonenumbers.format_number(number, f) for f in WRITTEN_FORMATS]
                texts += [f'+{code} {digits}', digits, f'0{digits}', f'{code}{digits}', f'({digits[:3]}) {digits[3:]}']
                texts += [f'00 {code} {digits}', f'011 {code} {digits}', f'00{code}0{digits}', f'810{code}{digits}']
                forms += [(text, home) for text in texts for home in (region, 'US', 'GB', 'IN')]
    return forms


def test_the_quick_path_agrees_with_phonenumbers_on_every_number_it_answers(monkeypatch):
    # the E.164 form and the number type (which the loader checks against the campaign's number_types)
    forms = _written_forms(random.Random(20261122))
    answered: dict[tuple[str, str], tuple[str, str] | str] = {}
    for text, region in forms:
        quick = quick_number(text, region)
        if quick is not None:
            answered[text, region] = quick
    assert {kind for _, kind in answered.values()} >= {'fixed_line', 'mobile', 'premium_rate', 'toll_free'}
    monkeypatch.setattr(numbers, 'quick_number', lambda _text, _region: None)
    mismatches = []
    for (text, region), quick in answered.items():
        slow: tuple[str, str] | str
        try:
            slow = normalise_typed(text, region)
        except InvalidNumber as exc:
            slow = f'rejected: {exc.reason}'
        if slow != quick:
            mismatches.append((text, region, quick, slow))
    assert not mismatches
    assert len(answered) > len(forms) / 5, 'the quick path answers the common forms'


@pytest.mark.parametrize(
    ('raw', 'region', 'reason'),
    [
        ('', 'US', 'empty'),
        ('   ', 'US', 'empty'),
        ('N/A', 'US', 'not a phone number'),
        ('John Smith', 'US', 'not a phone number'),
        ('1-800-FLOWERS', 'US', 'not a phone number'),
        ('12', 'US', 'too short'),
        ('4155552671999999', 'US', 'too long'),
        ('1' * 80, 'US', 'too long'),
        ('+44 1234', 'US', 'not a valid number for region GB'),
        ('030 1234567', 'US', 'not a valid number for region US'),
        ('+999 123456', 'US', 'unknown country code'),
        ('415-555-2671 ext. 12', 'US', 'extension'),
        ('415 555 2671 x12', 'US', 'extension'),
        ('+1 415 555 2671 #12', 'US', 'extension'),
        ('+1 415 555 2671;ext=12', 'US', 'extension'),
    ],
)
def test_invalid_numbers_are_rejected_with_a_reason(raw, region, reason):
    with pytest.raises(InvalidNumber) as caught:
        normalise_number(raw, region)
    assert reason in caught.value.reason
    assert isinstance(caught.value, ValueError)


async def test_added_numbers_are_blocked_in_any_format(redis):
    added = await dnc.add_numbers(redis, ['(415) 555-2671', '+44 20 7946 0958'], 'US')
    assert added == 2
    assert await dnc.is_blocked(redis, '+14155552671')
    assert await dnc.is_blocked(redis, '+442079460958')
    assert not await dnc.is_blocked(redis, '+14155552672')
    assert await redis.smembers(constants.DNC) == {'+14155552671', '+442079460958'}


async def test_adding_a_listed_number_again_counts_nothing(redis):
    await dnc.add_numbers(redis, ['+14155552671'], 'US')
    assert await dnc.add_numbers(redis, ['415.555.2671', '(415) 555-2671'], 'US') == 0


async def test_add_with_an_invalid_number_adds_nothing_and_names_it(redis):
    with pytest.raises(InvalidNumber, match=r'#2.*not a phone number'):
        await dnc.add_numbers(redis, ['+14155552671', 'call me'], 'US')
    assert await redis.scard(constants.DNC) == 0


async def test_removed_numbers_are_no_longer_blocked(redis):
    await dnc.add_numbers(redis, ['+14155552671', '+14155552672'], 'US')
    assert await dnc.remove_numbers(redis, ['(415) 555-2671', '(415) 555-2679'], 'US') == 1
    assert not await dnc.is_blocked(redis, '+14155552671')
    assert await dnc.is_blocked(redis, '+14155552672')


async def test_blocked_among_finds_listed_numbers_across_batches(redis):
    listed = [f'+1415555{n:04d}' for n in range(0, 2500, 2)]
    await dnc.add_numbers(redis, listed, 'US')
    candidates = [f'+1415555{n:04d}' for n in range(2500)]
    assert await dnc.blocked_among(redis, candidates) == set(listed)


async def test_import_plain_list_skips_blanks_and_comments_and_reports_invalid_lines(redis, tmp_path):
    path = tmp_path / 'dnc.txt'
    path.write_text(
        '# exported from the CRM\n'
        '+1 415 555 2671\n'
        '\n'
        '(415) 555-2672\n'
        'not a number\n'
        '   # indented comment\n'
        '415.555.2671\n'
        '12\n',
        encoding='utf-8',
    )
    summary = await dnc.import_file(redis, path, 'US')
    assert summary.added == 2
    assert summary.already_listed == 1
    assert summary.invalid == [(5, 'not a phone number (contains letters)'), (8, 'too short')]
    assert summary.invalid_count == 2
    assert await redis.smembers(constants.DNC) == {'+14155552671', '+14155552672'}


async def test_import_csv_uses_the_phone_column(redis, tmp_path):
    path = tmp_path / 'dnc.csv'
    path.write_text(
        '\ufeffName,Phone,Note\n'
        'Ann,(415) 555-2671,asked twice\n'
        '\n'
        '"Bob, Jr.",+44 20 7946 0958,"multi\nline note"\n'
        'Cy,,no number\n'
        '# a comment row\n'
        'Di,415 555 2673,\n',
        encoding='utf-8',
    )
    summary = await dnc.import_file(redis, path, 'US')
    assert summary.added == 3
    assert summary.invalid == [(6, 'empty')]
    assert await redis.smembers(constants.DNC) == {'+14155552671', '+442079460958', '+14155552673'}


async def test_import_csv_without_a_phone_column_is_an_error_naming_the_line(redis, tmp_path):
    path = tmp_path / 'dnc.csv'
    path.write_text('# header follows\nname,email\nAnn,ann@example.com\n', encoding='utf-8')
    with pytest.raises(ValueError, match=r'dnc\.csv:2: CSV header has no phone column'):
        await dnc.import_file(redis, path, 'US')


async def test_import_of_a_large_file_adds_every_number_in_batches(redis, tmp_path):
    path = tmp_path / 'big.txt'
    numbers = [f'+1415{n:07d}' for n in range(5551000, 5551000 + 2 * dnc.BATCH + 17)]
    path.write_text('\n'.join(numbers) + '\n', encoding='utf-8')
    summary = await dnc.import_file(redis, path, 'US')
    assert summary.added == len(numbers)
    assert summary.invalid_count == 0
    assert await redis.scard(constants.DNC) == len(numbers)
    again = await dnc.import_file(redis, path, 'US')
    assert (again.added, again.already_listed) == (0, len(numbers))


async def test_import_reports_only_the_first_invalid_lines_but_counts_all(redis, tmp_path):
    path = tmp_path / 'junk.txt'
    path.write_text('x\n' * (dnc.MAX_REPORTED_INVALID + 50), encoding='utf-8')
    summary = await dnc.import_file(redis, path, 'US')
    assert summary.invalid_count == dnc.MAX_REPORTED_INVALID + 50
    assert len(summary.invalid) == dnc.MAX_REPORTED_INVALID
    assert summary.invalid[0] == (1, 'not a phone number (contains letters)')
    assert await redis.scard(constants.DNC) == 0


async def test_import_survives_bytes_that_are_not_utf8(redis, tmp_path):
    path = tmp_path / 'latin1.txt'
    path.write_bytes(b'+14155552671\n\xe9t\xe9\n+14155552672\n')
    summary = await dnc.import_file(redis, path, 'US')
    assert summary.added == 2
    assert [line for line, _ in summary.invalid] == [2]
