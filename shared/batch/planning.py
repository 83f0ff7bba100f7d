"""Chunk plans, as pure functions of what the planner learned from ranged reads.

CSV and JSONL: the body (after a CSV header) is cut into byte ranges of about
``target`` bytes (cut at the first line end after each multiple of ``target``), each
ending just after a line end (or at the end of the file), so a worker reads exactly its
own lines with one ranged read. A cut never looks at quoting:
a quoted CSV field holding a line break that straddles a cut is split in two rows, each
of which then fails parsing and lands in ``errors.jsonl`` with its reason (documented
limitation; line breaks inside quoted fields elsewhere parse normally).

Parquet: whole row groups are gathered until ``target`` rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["RowGroupRange", "chunk_target", "line_chunks", "row_group_chunks"]


def chunk_target(total: int, target: int, max_chunks: int) -> int:
    """The chunk size to use: ``target``, grown so that ``total`` needs at most
    ``max_chunks`` chunks."""
    return max(target, math.ceil(total / max_chunks), 1)


def line_chunks(
    size: int,
    body_start: int,
    target: int,
    next_line_end: Callable[[int], int],
    *,
    each: Callable[[Callable[[int], int], Iterable[int]], Iterable[int]] = map,
) -> list[tuple[int, int]]:
    """Byte ranges ``[start, end)`` covering ``[body_start, size)`` in order.

    ``next_line_end(pos)`` is the offset just after the first ``\\n`` at or after ``pos``,
    or ``size`` when there is none. Every range but the last ends just after a ``\\n``.
    Cuts are looked for every ``target`` bytes from ``body_start``, independently of each
    other, so ``each`` (``map`` by default) may be a thread pool's ``map`` running the
    ranged reads at once; a line longer than ``target`` makes one chunk hold it whole.
    """
    if target < 1:
        raise ValueError(f"target must be at least 1 byte, got {target}")
    grid = range(body_start + target - 1, size, target)
    ranges: list[tuple[int, int]] = []
    start = body_start
    for found in each(next_line_end, grid):
        end = min(size, found)
        if end > start:
            ranges.append((start, end))
            start = end
    if start < size:
        ranges.append((start, size))
    return ranges


@dataclass(frozen=True, slots=True)
class RowGroupRange:
    """Row groups ``[first, first + count)`` holding rows ``[first_row, first_row + rows)``."""

    first: int
    count: int
    first_row: int
    rows: int


def row_group_chunks(group_rows: Sequence[int], target: int) -> list[RowGroupRange]:
    """Consecutive row groups gathered until each chunk holds at least ``target`` rows
    (the last may hold fewer); every group belongs to exactly one chunk."""
    chunks: list[RowGroupRange] = []
    first = first_row = rows = 0
    for index, count in enumerate(group_rows):
        rows += count
        if rows >= target:
            chunks.append(RowGroupRange(first, index + 1 - first, first_row, rows))
            first, first_row, rows = index + 1, first_row + rows, 0
    if first < len(group_rows):
        chunks.append(RowGroupRange(first, len(group_rows) - first, first_row, rows))
    return chunks
