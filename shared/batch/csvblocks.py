"""CSV predictions as blocks of the final blob, staged by chunk and committed in order.

A chunk's predictions (``row`` chunk-local) become CSV text with file-wide row numbers
once its first input row is known; the text is staged as uncommitted blocks of the final
``predictions.csv`` whose ids name the chunk, its first row and the block's place. The
worker whose ledger update places a chunk (``JobLedger.mark_done``) stages it while other
chunks are still being scored; the commit stages whatever is missing (a worker died
between the two steps) and commits one block list. Block ids depend only on the chunk,
its first row and its text, so staging a chunk twice writes the same blocks.
"""

from __future__ import annotations

import base64
import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobClient

from shared.batch.scoring import ROW_COLUMN

__all__ = ["BLOCK_BYTES", "block_id", "csv_text", "stage_chunk", "staged_runs"]

BLOCK_BYTES = 64 * 1024 * 1024
"""Largest block staged (a chunk's text is split into such blocks)."""


def block_id(chunk: int, first_row: int, index: int, count: int) -> str:
    """Block ``index`` of ``count`` of ``chunk`` whose first input row is ``first_row``
    (every id of a blob has the same length, as Azure requires)."""
    raw = f"c{chunk:08d}r{first_row:013d}b{index:04d}n{count:04d}"
    return base64.b64encode(raw.encode()).decode()


def csv_text(table: pa.Table, chunk: int, first_row: int) -> bytes:
    """The CSV lines of a chunk's predictions with file-wide row numbers; chunk 0 starts
    with the header."""
    rows = pc.add(table[ROW_COLUMN], pa.scalar(first_row, pa.int64()))
    buffer = io.BytesIO()
    pacsv.write_csv(
        table.set_column(0, ROW_COLUMN, rows),
        buffer,
        write_options=pacsv.WriteOptions(include_header=chunk == 0),
    )
    return buffer.getvalue()


def stage_chunk(target: BlobClient, table: pa.Table, chunk: int, first_row: int) -> list[str]:
    """Stage a chunk's CSV text as blocks of ``target``; returns their ids, in order
    (none for a chunk without text)."""
    text = csv_text(table, chunk, first_row)
    view = memoryview(text)
    # the common case, one block, is the text itself; larger ones are sliced (copies)
    parts = [text] if len(text) <= BLOCK_BYTES else [
        bytes(view[start : start + BLOCK_BYTES]) for start in range(0, len(text), BLOCK_BYTES)
    ]
    parts = [part for part in parts if part]
    ids = [block_id(chunk, first_row, j, len(parts)) for j in range(len(parts))]
    for block, part in zip(ids, parts, strict=True):
        target.stage_block(block, part)
    return ids


def staged_runs(target: BlobClient) -> dict[tuple[int, int], list[str]]:
    """The complete runs of blocks of ``target`` (committed or not): ``(chunk, first row)``
    -> block ids in order. A partial run (a worker died while staging) is left out."""
    try:
        committed, uncommitted = target.get_block_list("all")
    except ResourceNotFoundError:
        return {}
    seen: dict[tuple[int, int, int], set[int]] = {}
    for block in [*committed, *uncommitted]:
        parsed = _parse(block.id)
        if parsed is not None:
            chunk, first, index, count = parsed
            seen.setdefault((chunk, first, count), set()).add(index)
    runs: dict[tuple[int, int], list[str]] = {}
    for (chunk, first, count), indexes in seen.items():
        if len(indexes) == count:
            runs[(chunk, first)] = [block_id(chunk, first, j, count) for j in range(count)]
    return runs


def _parse(block: str) -> tuple[int, int, int, int] | None:
    """``(chunk, first row, index, count)`` of one of our block ids, else None."""
    try:
        raw = base64.b64decode(block).decode()
    except ValueError:
        return None
    if len(raw) != 33 or raw[0] != "c" or raw[9] != "r" or raw[23] != "b" or raw[28] != "n":
        return None
    try:
        return int(raw[1:9]), int(raw[10:23]), int(raw[24:28]), int(raw[29:33])
    except ValueError:
        return None
