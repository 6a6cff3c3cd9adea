"""The one exception type for bad input: its message is a sentence for the user.

Entry points catch :class:`NASError` and print its message alone (no traceback),
so every message says what is wrong and what would be valid.
"""
from __future__ import annotations


class NASError(ValueError):
    """Invalid user input or a corrupted artifact, described in one clear sentence."""


def whole_number(name: str, value: object, minimum: int = 0) -> int:
    """``value`` as an int ``>= minimum``, or a :class:`NASError` naming the setting ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise NASError(f"{name} must be a whole number >= {minimum}, got {value!r}.")
    return value


def positive_number(name: str, value: object) -> float:
    """``value`` as a float ``> 0``, or a :class:`NASError` naming the setting ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise NASError(f"{name} must be a positive number, got {value!r}.")
    return float(value)
