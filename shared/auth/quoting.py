"""How values sent by a caller appear inside error messages: quoted and cut short.

Tokens are attacker-controlled; echoing a claim verbatim would let a caller put
kilobytes or control characters into logs and headers. ``repr`` escapes control
characters and the length is capped.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_SHOWN", "quoted"]

MAX_SHOWN: Final = 80
"""Longest piece of a caller's value shown in a message, in characters."""


def quoted(value: object) -> str:
    """``value`` as it appears in a message: ``'abc'`` for strings, ``repr`` otherwise,
    cut to ``MAX_SHOWN`` characters with ``...``."""
    if isinstance(value, str):
        if len(value) > MAX_SHOWN:
            value = value[:MAX_SHOWN] + "..."
        return repr(value)
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."
