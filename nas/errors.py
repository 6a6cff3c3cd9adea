"""The one exception type for bad input: its message is a sentence for the user.

Entry points catch :class:`NASError` and print its message alone (no traceback),
so every message says what is wrong and what would be valid.
"""
from __future__ import annotations


class NASError(ValueError):
    """Invalid user input or a corrupted artifact, described in one clear sentence."""
