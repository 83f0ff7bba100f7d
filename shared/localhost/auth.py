"""Function keys and the decision whether an HTTP request may call a function.

Azure Functions checks ``authLevel`` with keys sent in the ``x-functions-key`` header or the
``code`` query parameter: ``anonymous`` needs none, ``function`` needs a function (or host)
key or the master key, ``admin`` needs the master key. Core Tools does not check keys at all
when running locally; this host does the same unless it is given keys. Once it has any key,
it enforces every level, and ``admin`` functions accept only the master key (so with no
master key configured they answer 401).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["KEY_HEADER", "KEY_QUERY_PARAMETER", "HostKeys"]

KEY_HEADER = "x-functions-key"
"""Request header carrying a key."""
KEY_QUERY_PARAMETER = "code"
"""Query parameter carrying a key."""


@dataclass(frozen=True, slots=True)
class HostKeys:
    """The keys a host accepts. With none at all, nothing is enforced."""

    function_keys: frozenset[str] = frozenset()
    master_key: str | None = None

    @classmethod
    def of(cls, function_keys: Iterable[str] = (), master_key: str | None = None) -> HostKeys:
        """Keys from plain strings; empty strings are ignored."""
        return cls(frozenset(key for key in function_keys if key), master_key or None)

    @property
    def enforced(self) -> bool:
        """Whether any key is configured (and so auth levels are checked)."""
        return bool(self.function_keys) or self.master_key is not None

    def allows(self, auth_level: str, presented: str | None) -> bool:
        """Whether a request presenting ``presented`` (or no key) may call a function of
        ``auth_level`` (``anonymous``, ``function`` or ``admin``; other values count as
        ``admin``)."""
        level = auth_level.lower()
        if level == "anonymous" or not self.enforced:
            return True
        if presented is None:
            return False
        if self.master_key is not None and _same(presented, self.master_key):
            return True
        if level != "function":
            return False
        # Compare against every key so timing does not reveal which one nearly matched.
        matched = False
        for key in self.function_keys:
            matched |= _same(presented, key)
        return matched


def _same(presented: str, key: str) -> bool:
    return hmac.compare_digest(presented.encode(), key.encode())
