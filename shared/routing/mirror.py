"""Mirror decisions as pure functions: whether a request is copied, and whether the copy's
answer agrees with the primary's.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

__all__ = ["mirror_target", "same_body"]


def mirror_target(
    mirror: Mapping[str, int], primary: str, draw: float, *, pinned: bool
) -> str | None:
    """The deployment that receives a copy of this request, or ``None``.

    ``draw`` is uniform in ``[0, 1)``; a deployment with mirror percentage ``p`` gets a
    copy when ``draw * 100 < p``. Pinned requests are never mirrored, and a deployment
    never mirrors to itself. With several positive percentages (refused when settings are
    written) the first in order wins.
    """
    if pinned:
        return None
    for name, percent in mirror.items():
        if percent > 0 and name != primary and draw * 100 < percent:
            return name
    return None


def same_body(primary: bytes, shadow: bytes) -> bool:
    """Whether two response bodies say the same: equal JSON values, or equal bytes."""
    if primary == shadow:
        return True
    try:
        return bool(orjson.loads(primary) == orjson.loads(shadow))
    except orjson.JSONDecodeError:
        return False
