import pytest

from registry.numbers import ascii_int


@pytest.mark.parametrize(
    ("text", "number"),
    [("0", 0), ("42", 42), ("9" * 18, 10**18 - 1), ("", None), ("9" * 19, None), ("-1", None),
     ("1.5", None), (" 1", None), ("\u00b2", None), ("\u0663", None), ("1\u00b2", None)],
)  # fmt: skip
def test_ascii_int_takes_only_ascii_digits_a_bigint_holds(text, number):
    assert ascii_int(text) == number


def test_ascii_int_takes_a_tighter_digit_limit():
    assert (ascii_int("123", max_digits=3), ascii_int("1234", max_digits=3)) == (123, None)
