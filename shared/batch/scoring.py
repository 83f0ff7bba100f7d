"""Score the good rows of a chunk in batches of the package's ``max_batch_size``.

Each batch is validated and run as a whole. When validation refuses a batch (a NaN, a
value out of policy) each of its rows is validated alone, so only the bad rows become
error rows; when the run fails on a batch, its rows are run alone the same way. Errors
that are not about the rows (a broken session, storage) propagate and the chunk is
retried.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from shared.batch.reading import ChunkRows
from shared.errors import ExecutionError, InputError
from shared.pipeline.dtypes import to_numpy
from shared.pipeline.model import Model
from shared.pipeline.spec import TensorSpec

__all__ = ["ScoredChunk", "score_chunk", "output_columns", "ROW_COLUMN"]

ROW_COLUMN = "row"
"""First column of predictions: the row's number in the input file (from 0)."""


@dataclass
class ScoredChunk:
    """Predictions of a chunk (``row`` holds chunk-local numbers) and its error rows."""

    table: pa.Table
    errors: list[tuple[int, str]]


def output_columns(spec: TensorSpec, width: int) -> list[str]:
    """Column names of an output: its name for ``[-1]``, its ``columns`` or
    ``<name>_<j>`` for ``[-1, k]``."""
    if width == 0:
        return [spec.name]
    if spec.columns is not None and len(spec.columns) == width:
        return list(spec.columns)
    return [f"{spec.name}_{j}" for j in range(width)]


def _take(inputs: dict[str, np.ndarray], rows: np.ndarray | slice) -> dict[str, np.ndarray]:
    return {name: array[rows] for name, array in inputs.items()}


def _run_rows(
    model: Model, inputs: dict[str, np.ndarray], errors: dict[int, str]
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Run ``inputs`` (positions 0..n-1), falling back to one row at a time; returns the
    positions that ran and their outputs. Bad positions are added to ``errors``."""
    n = len(next(iter(inputs.values())))
    try:
        return np.arange(n), model.run(model.validate(inputs))
    except InputError:
        pass
    except ExecutionError:
        pass
    kept: list[int] = []
    outputs: list[dict[str, np.ndarray]] = []
    for i in range(n):
        try:
            outputs.append(model.run(model.validate(_take(inputs, slice(i, i + 1)))))
        except (InputError, ExecutionError) as exc:
            errors[i] = str(exc)
            continue
        kept.append(i)
    if not kept:
        return np.zeros(0, dtype=np.int64), None
    merged = {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}
    return np.asarray(kept, dtype=np.int64), merged


def score_chunk(model: Model, chunk: ChunkRows) -> ScoredChunk:
    """Predictions for the good rows of ``chunk``, and every error row (reading's too)."""
    size = model.spec.batching.max_batch_size
    n = len(chunk.index)
    errors = dict(chunk.errors)
    kept_parts: list[np.ndarray] = []
    output_parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n, size):
        stop = min(n, start + size)
        local: dict[int, str] = {}
        kept, outputs = _run_rows(model, _take(chunk.inputs, slice(start, stop)), local)
        for position, reason in local.items():
            errors[int(chunk.index[start + position])] = reason
        if outputs is not None:
            kept_parts.append(kept + start)
            output_parts.append(outputs)
    positions = np.concatenate(kept_parts) if kept_parts else np.zeros(0, dtype=np.int64)
    columns: dict[str, pa.Array] = {ROW_COLUMN: pa.array(chunk.index[positions], type=pa.int64())}
    ids = chunk.ids.take(pa.array(positions, type=pa.int64()))
    for name in ids.column_names:
        columns[name] = ids[name].combine_chunks()
    for spec in model.spec.outputs:
        array = (
            np.concatenate([o[spec.name] for o in output_parts]) if output_parts else _empty(spec)
        )
        width = int(np.prod(array.shape[1:], dtype=np.int64))
        flat = array.reshape(len(array), width) if array.ndim > 1 else array
        names = output_columns(spec, flat.shape[1] if flat.ndim > 1 else 0)
        for j, column in enumerate(names):
            values = flat[:, j] if flat.ndim > 1 else flat
            columns[column] = _arrow(values)
    return ScoredChunk(pa.table(columns), sorted(errors.items()))


def _empty(spec: TensorSpec) -> np.ndarray:
    width = [d if d > 0 else 1 for d in spec.shape[1:]]
    return np.zeros((0, *width), dtype=to_numpy(spec.datatype))


def _arrow(values: np.ndarray) -> pa.Array:
    if values.dtype == object or values.dtype.kind in "SU":
        try:  # str / UTF-8 bytes: converted in C, no Python loop
            return pa.array(values, type=pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        return pa.array(
            [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values],
            type=pa.string(),
        )
    return pa.array(values)
