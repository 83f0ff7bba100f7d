"""Whether a job whose chunks all ended succeeded: a pure decision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["Decision", "decide"]


@dataclass(frozen=True, slots=True)
class Decision:
    """A job's final status and, when failed, why."""

    status: Literal["succeeded", "failed"]
    reason: str = ""


def decide(
    rows: int, error_rows: int, failed_chunks: Mapping[int, str], threshold: float
) -> Decision:
    """Failed when any chunk failed (its rows were not scored), or when the share of
    error rows is over ``threshold`` (``-1``: never for error rows)."""
    if failed_chunks:
        listed = ", ".join(str(c) for c in sorted(failed_chunks)[:20])
        more = "" if len(failed_chunks) <= 20 else f" and {len(failed_chunks) - 20} more"
        return Decision("failed", f"{len(failed_chunks)} chunk(s) failed: {listed}{more}")
    if threshold >= 0 and rows > 0 and error_rows / rows > threshold:
        return Decision(
            "failed",
            f"{error_rows} of {rows} rows failed ({error_rows / rows:.1%}), over "
            f"error_threshold {threshold:.1%}",
        )
    return Decision("succeeded")
