"""One chunk of an input file -> model columns for its good rows, bad rows set aside.

Rows are numbered from 0 within the chunk, counting records and skipping empty lines
(as pyarrow's CSV reader does). A row that cannot become model input (wrong field
count, a value that is not a number, an empty value, bad JSON, a missing key) is an
error row with its reason; it never fails the chunk. The fast paths are pyarrow's CSV
reader and Parquet reader; a CSV chunk that pyarrow refuses is re-read with Python's
``csv`` module, row by row, to find the bad rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shared.batch.mapping import InputBinding, model_columns

__all__ = ["ChunkRows", "read_csv_chunk", "read_jsonl_chunk", "read_parquet_chunk", "arrow_type"]

RowError = tuple[int, str]


@dataclass
class ChunkRows:
    """The rows of one chunk: model inputs of the good rows, and the bad rows."""

    rows: int
    """Rows in the chunk, good and bad."""
    index: np.ndarray
    """Chunk-local row number of each good row (ascending)."""
    inputs: dict[str, np.ndarray]
    ids: pa.Table
    """Id columns of the good rows."""
    errors: list[RowError] = field(default_factory=list)


def arrow_type(datatype: str) -> pa.DataType:
    """The Arrow type a column of a ``datatype`` input is read as."""
    if datatype == "BYTES":
        return pa.string()
    if datatype == "BOOL":
        return pa.bool_()
    return pa.from_numpy_dtype(np.dtype(_NUMPY[datatype]))


_NUMPY = {
    "FP16": "float16", "FP32": "float32", "FP64": "float64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
}  # fmt: skip


def _scalar(value: Any, datatype: str) -> Any:
    """``value`` as one element of a ``datatype`` input, or ``ValueError`` saying why."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("is empty")
    if datatype == "BYTES":
        if isinstance(value, str):
            return value
        raise ValueError(f"{value!r} is not a string")
    if datatype == "BOOL":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise ValueError(f"{value!r} is not a boolean")
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number ({datatype})")
    integer = datatype.startswith(("INT", "UINT"))
    try:
        number = int(value) if integer and not isinstance(value, float) else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number ({datatype})") from None
    if integer and isinstance(number, float):
        raise ValueError(f"{value!r} is not an integer ({datatype})")
    return number


def _element(value: Any, binding: InputBinding) -> Any:
    if binding.list_width is None:
        return _scalar(value, binding.datatype)
    if not isinstance(value, list | tuple):
        raise ValueError(f"is not a list of {binding.list_width} values")
    if len(value) != binding.list_width:
        raise ValueError(f"holds {len(value)} values; expected {binding.list_width}")
    return [_scalar(v, binding.datatype) for v in value]


class _RowCollector:
    """Builds a chunk from records (dicts of raw values), row by row."""

    def __init__(self, bindings: Sequence[InputBinding], id_columns: Sequence[str]) -> None:
        self.bindings = bindings
        self.id_columns = list(id_columns)
        self.columns = model_columns(bindings)
        self.values: dict[str, list[Any]] = {c: [] for c in self.columns}
        self.ids: dict[str, list[Any]] = {c: [] for c in self.id_columns}
        self.index: list[int] = []
        self.errors: list[RowError] = []
        self.rows = 0

    def bad(self, reason: str) -> None:
        self.errors.append((self.rows, reason))
        self.rows += 1

    def add(self, record: dict[str, Any], id_value: Callable[[Any], Any]) -> None:
        converted: dict[str, Any] = {}
        problems: list[str] = []
        for binding in self.bindings:
            for column in binding.columns:
                if column not in record:
                    problems.append(f"column '{column}' is missing")
                    continue
                try:
                    converted[column] = _element(record[column], binding)
                except ValueError as exc:
                    problems.append(f"column '{column}' {exc}")
        if problems:
            self.bad("; ".join(problems))
            return
        for column, value in converted.items():
            self.values[column].append(value)
        for column in self.id_columns:
            self.ids[column].append(id_value(record.get(column)))
        self.index.append(self.rows)
        self.rows += 1

    def finish(self, id_types: dict[str, pa.DataType] | None = None) -> ChunkRows:
        inputs = {
            b.name: _stack(b, [self.values[c] for c in b.columns], len(self.index))
            for b in self.bindings
        }
        ids = pa.table(
            {
                c: pa.array(self.ids[c], type=(id_types or {}).get(c, pa.string()))
                for c in self.id_columns
            }
        )
        return ChunkRows(
            self.rows, np.asarray(self.index, dtype=np.int64), inputs, ids, self.errors
        )


def _stack(binding: InputBinding, columns: list[list[Any]], rows: int) -> np.ndarray:
    dtype = binding.dtype
    if binding.list_width is not None:
        return np.asarray(columns[0], dtype=dtype).reshape(rows, binding.list_width)
    if binding.rank == 1:
        return np.asarray(columns[0], dtype=dtype).reshape(rows)
    return np.asarray(columns, dtype=dtype).reshape(len(columns), rows).T.copy()


def _id_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode("utf-8")


# ----------------------------------------------------------------------------- CSV
def read_csv_chunk(
    header: bytes, body: bytes, bindings: Sequence[InputBinding], id_columns: Sequence[str]
) -> ChunkRows:
    """Rows of a CSV chunk (``header`` is the file's header line, ``body`` whole lines)."""
    columns = model_columns(bindings)
    types: dict[str, pa.DataType] = {c: pa.string() for c in id_columns}
    for b in bindings:
        if b.list_width is None:
            types.update({c: arrow_type(b.datatype) for c in b.columns})
    try:
        table = pacsv.read_csv(
            pa.py_buffer(header + body),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=[*columns, *(c for c in id_columns if c not in columns)],
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:
        return _read_csv_rows(header, body, bindings, id_columns)
    if any(table[c].null_count for c in columns):
        return _read_csv_rows(header, body, bindings, id_columns)
    rows = table.num_rows
    inputs = {b.name: _stack_arrow(b, [table[c] for c in b.columns], rows) for b in bindings}
    return ChunkRows(rows, np.arange(rows, dtype=np.int64), inputs, table.select(list(id_columns)))


def _stack_arrow(binding: InputBinding, columns: list[pa.ChunkedArray], rows: int) -> np.ndarray:
    arrays = [_numpy(c) for c in columns]
    if binding.rank == 1:
        return arrays[0].astype(binding.dtype, copy=False)
    return np.column_stack(arrays).astype(binding.dtype, copy=False).reshape(rows, len(arrays))


def _numpy(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return np.asarray(column.to_pylist(), dtype=object)
    array: np.ndarray = column.to_numpy()
    return array


def _read_csv_rows(
    header: bytes, body: bytes, bindings: Sequence[InputBinding], id_columns: Sequence[str]
) -> ChunkRows:
    collector = _RowCollector(bindings, id_columns)
    names = next(csv.reader([header.decode("utf-8", "replace").rstrip("\r\n")]), [])
    for record in csv.reader(io.StringIO(body.decode("utf-8", "replace"), newline="")):
        if not record:
            continue  # an empty line is not a row
        if len(record) != len(names):
            collector.bad(f"row has {len(record)} fields; the header has {len(names)}")
            continue
        collector.add(dict(zip(names, record, strict=True)), _id_text)
    return collector.finish()


# ----------------------------------------------------------------------------- JSONL
def read_jsonl_chunk(
    body: bytes, bindings: Sequence[InputBinding], id_columns: Sequence[str]
) -> ChunkRows:
    """Rows of a JSON Lines chunk: one object per non-empty line."""
    collector = _RowCollector(bindings, id_columns)
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            collector.bad(f"not valid JSON: {exc}")
            continue
        if not isinstance(record, dict):
            collector.bad(f"expected a JSON object, got {type(record).__name__}")
            continue
        collector.add(record, _id_text)
    return collector.finish()


# ----------------------------------------------------------------------------- Parquet
def read_parquet_chunk(
    file: pq.ParquetFile,
    first: int,
    end: int,
    bindings: Sequence[InputBinding],
    id_columns: Sequence[str],
) -> ChunkRows:
    """Rows of row groups ``[first, end)`` of a Parquet file."""
    columns = model_columns(bindings)
    wanted = [*columns, *(c for c in id_columns if c not in columns)]
    table = file.read_row_groups(list(range(first, end)), columns=wanted)
    rows = table.num_rows
    try:
        inputs = {b.name: _parquet_input(b, table, rows) for b in bindings}
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, _NeedsRows):
        collector = _RowCollector(bindings, id_columns)
        for record in table.select(wanted).to_pylist():
            collector.add(record, lambda v: v)
        return collector.finish({c: table.schema.field(c).type for c in id_columns})
    return ChunkRows(rows, np.arange(rows, dtype=np.int64), inputs, table.select(list(id_columns)))


class _NeedsRows(Exception):
    """A column has nulls: find the bad rows one by one."""


def _parquet_input(binding: InputBinding, table: pa.Table, rows: int) -> np.ndarray:
    target = arrow_type(binding.datatype)
    if binding.list_width is None:
        columns = []
        for name in binding.columns:
            column = table[name]
            if column.null_count:
                raise _NeedsRows
            columns.append(pc.cast(column, target))
        return _stack_arrow(binding, columns, rows)
    column = table[binding.columns[0]]
    if column.null_count or (
        not pa.types.is_list(column.type) and not pa.types.is_fixed_size_list(column.type)
    ):
        raise _NeedsRows
    lengths = pc.list_value_length(column)
    if pc.any(pc.not_equal(lengths, binding.list_width)).as_py():
        raise _NeedsRows
    flat = pc.cast(pc.list_flatten(column), target)
    if flat.null_count:
        raise _NeedsRows
    array: np.ndarray = flat.to_numpy().astype(binding.dtype, copy=False)
    return array.reshape(rows, binding.list_width)
