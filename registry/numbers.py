"""Integers spelt in request text: ASCII digits only, and few enough for a database column.

str.isdigit() also takes '²' and other Unicode digits that int() refuses, which turned a
field-level 400 into a ValueError (a 500, or a batch that failed as a whole); and int()
refuses more than 4,300 digits. A bigint holds 18 digits whatever they are.
"""

from __future__ import annotations


def ascii_int(text: str, *, max_digits: int = 18) -> int | None:
    """The non-negative integer `text` spells in at most `max_digits` ASCII digits, or None."""
    if not 0 < len(text) <= max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)
