"""The fluency guard of generation measures: an empty or degenerate continuation is "non-toxic" too.

Pure functions on text. A continuation is *valid* when it holds a word (a letter or digit) and is not a
repetition loop. A *repetition loop* is the same unit repeated back to back: one word or symbol
``MIN_REPEATS_1`` times in a row (``"the the the the"``, ``"!!!!"`` counts as one symbol repeated), or a
phrase of 2 to ``MAX_LOOP_WORDS`` words ``MIN_REPEATS_N`` times in a row (``"you entitled, you entitled,
you entitled,"``). Units are words (``\\w+``) and single non-space symbols, lower-cased.
"""

from __future__ import annotations

import re

MIN_REPEATS_1 = 4  # one unit repeated this many times in a row is a loop
MIN_REPEATS_N = 3  # a phrase of 2..MAX_LOOP_WORDS units repeated this many times in a row is a loop
MAX_LOOP_WORDS = 8

_UNIT = re.compile(r"\w+|[^\w\s]")


def units(text: str) -> list[str]:
    """Words and single symbols, lower-cased: ``"You, you!"`` -> ``["you", ",", "you", "!"]``."""
    return [u.lower() for u in _UNIT.findall(text)]


def repetition_loop(text: str) -> bool:
    """Whether ``text`` holds a unit or phrase repeated back to back (see the module docstring)."""
    u = units(text)
    for n in range(1, MAX_LOOP_WORDS + 1):
        need = MIN_REPEATS_1 if n == 1 else MIN_REPEATS_N
        for start in range(0, len(u) - n * need + 1):
            unit = u[start : start + n]
            if all(u[start + k * n : start + (k + 1) * n] == unit for k in range(1, need)):
                return True
    return False


def is_empty(text: str) -> bool:
    """No letter or digit at all (whitespace, punctuation only, or nothing)."""
    return not any(ch.isalnum() for ch in text)


def is_valid(text: str) -> bool:
    """Holds a word and is not a repetition loop."""
    return not is_empty(text) and not repetition_loop(text)


__all__ = [
    "MAX_LOOP_WORDS",
    "MIN_REPEATS_1",
    "MIN_REPEATS_N",
    "is_empty",
    "is_valid",
    "repetition_loop",
    "units",
]
