"""``/score`` payloads: Azure ML and TF-Serving style JSON, read against a package's signature.

A request body is a JSON object with exactly one of these fields:

``input_data`` (Azure ML; ``data`` is a synonym), holding
  * a list of rows, for a single-input model: ``{"input_data": [[1.0, 2.0], [3.0, 4.0]]}``;
  * a pandas "split" table: ``{"input_data": {"columns": [...], "index": [...],
    "data": [[...], ...]}}`` (``columns`` and ``index`` optional);
  * an object of named fields: ``{"input_data": {"x": [[...]], "ids": [...]}}``.
``instances`` (TF-Serving rows)
  a list of rows, each either a value or list (single-input models), or an object of
  named fields (``[{"amount": 12.5, "hour": 3, ...}, ...]``).
``inputs`` (TF-Serving columns)
  an object of named fields, or a list of rows for a single-input model.

A *field* is an input's name (its value: that input's rows) or one of the ``columns``
an input declares (its value: one value per row). Columns are put in the declared order
whatever order they come in; every column of an input must be given, and a field that is
neither an input nor a column is refused, naming the fields the model takes. A split
table whose columns match no field feeds a single input without declared columns as
is, in the order given (there are no names to check them against).

Values are cast to each input's declared datatype by the rules of
``shared.protocol.tensor_json`` (JSON integers for a float input are fine; strings for a
numeric input are not). An input of shape ``[-1, 1]`` also takes one scalar per row.
An input that is not given at all is left out, for ``validate_inputs`` to report.

Responses (``encode_score_response``) follow one rule:

* ``predictions`` holds the output of interest: the package's only BYTES output if it
  declares exactly one (a label), else its first declared output;
* ``outputs`` holds every declared output by name, when the package declares more
  than one (so a single-output model answers ``{"predictions": [...]}`` only);
* ``index`` echoes the request's split-table ``index`` when it had one.

BYTES values are written as strings (bytes that are not UTF-8 get U+FFFD, as ``/score``
has no binary form); non-finite floats are written as ``null``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from shared.errors import DecodeError, ExecutionError
from shared.pipeline.dtypes import to_numpy
from shared.pipeline.spec import PackageSpec, TensorSpec
from shared.pipeline.validate import shape_text
from shared.protocol.json_body import dump_json, expect_object, json_type, load_json
from shared.protocol.tensor_json import array_from_json, array_to_json

__all__ = ["ScoreRequest", "decode_score_request", "predictions_output", "encode_score_response"]

_BODY: Final = "the /score body"
_KEYS: Final = ("input_data", "data", "instances", "inputs")
_SPLIT_KEYS: Final = frozenset({"columns", "index", "data"})


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """A decoded ``/score`` request: arrays by input name, in each input's declared
    numpy dtype, and the split table's ``index`` (None when there was none)."""

    inputs: dict[str, np.ndarray]
    index: list[Any] | None = None


def _model(spec: PackageSpec) -> str:
    return f"{spec.name}:{spec.version}"


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def decode_score_request(body: bytes, spec: PackageSpec) -> ScoreRequest:
    """Decode a ``/score`` body against ``spec``'s inputs (see the module docstring for
    the accepted forms). Raises ``DecodeError``."""
    doc = expect_object(load_json(body, what=_BODY), where=_BODY)
    keys = list(doc)
    if len(keys) != 1 or keys[0] not in _KEYS:
        got = ", ".join(keys) if keys else "no fields"
        raise DecodeError(
            f"{_BODY} must be a JSON object with exactly one of {', '.join(_KEYS)}; got {got}"
        )
    key = keys[0]
    payload = doc[key]
    if key == "instances":
        if not isinstance(payload, list):
            raise DecodeError(f"instances must be an array of rows; got {json_type(payload)}")
        if payload and isinstance(payload[0], dict):
            return ScoreRequest(_from_fields(_records(payload, key), spec, where=key))
        return ScoreRequest(_from_rows(payload, spec, where=key))
    if isinstance(payload, list):
        return ScoreRequest(_from_rows(payload, spec, where=key))
    if not isinstance(payload, dict):
        raise DecodeError(f"{key} must be an array of rows or an object; got {json_type(payload)}")
    if key != "inputs" and "data" in payload and payload.keys() <= _SPLIT_KEYS:
        return _from_split(payload, spec, where=key)
    return ScoreRequest(_from_fields(payload, spec, where=key))


def _empty(t: TensorSpec) -> np.ndarray:
    """Zero rows of ``t``, so that the validator reports an empty batch, not a shape."""
    return np.empty((0, *(max(d, 0) for d in t.shape[1:])), dtype=to_numpy(t.datatype))


def _fit(arr: np.ndarray, t: TensorSpec) -> np.ndarray:
    if arr.ndim == 1 and arr.size == 0 and len(t.shape) > 1:
        return _empty(t)
    if arr.ndim == 1 and len(t.shape) == 2 and t.shape[1] == 1:
        return arr[:, np.newaxis]
    return arr


def _from_rows(rows: list[Any], spec: PackageSpec, *, where: str) -> dict[str, np.ndarray]:
    """Unnamed rows: the model's only input."""
    if not rows:
        return {t.name: _empty(t) for t in spec.inputs}
    if len(spec.inputs) != 1:
        names = ", ".join(t.name for t in spec.inputs)
        raise DecodeError(
            f"{where} holds unnamed rows but model {_model(spec)} has "
            f"{len(spec.inputs)} inputs ({names}); name them with an object of inputs, "
            "instances as objects, or a table with columns"
        )
    t = spec.inputs[0]
    arr = array_from_json(rows, t.datatype, tensor=f"input '{t.name}'")
    return {t.name: _fit(arr, t)}


def _records(rows: list[Any], where: str) -> dict[str, list[Any]]:
    """Rows of objects (records) as fields: field name -> one value per row."""
    first: dict[str, Any] = rows[0]
    names = set(first)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DecodeError(
                f"{where}[{i}] is {json_type(row)} but {where}[0] is an object; "
                "rows are all objects or all arrays"
            )
        if row.keys() != names:
            raise DecodeError(
                f"{where}[{i}] has {_fields_text(row)} but {where}[0] has "
                f"{_fields_text(names)}; every row names the same fields"
            )
    return {name: [row[name] for row in rows] for name in first}


def _fields_text(names: Iterable[str]) -> str:
    listed = ", ".join(sorted(names))
    return f"fields {listed}" if listed else "no fields"


def _from_split(table: dict[str, Any], spec: PackageSpec, *, where: str) -> ScoreRequest:
    """A pandas split table: ``columns``, ``index``, ``data``."""
    data = table["data"]
    if not isinstance(data, list):
        raise DecodeError(f"{where}.data must be an array of rows; got {json_type(data)}")
    index = table.get("index")
    if index is not None:
        if not isinstance(index, list):
            raise DecodeError(f"{where}.index must be an array; got {json_type(index)}")
        if len(index) != len(data):
            raise DecodeError(
                f"{where}.index has {len(index)} entries but {where}.data has {len(data)} rows"
            )
    columns = table.get("columns")
    if columns is None:
        return ScoreRequest(_from_rows(data, spec, where=f"{where}.data"), index)
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise DecodeError(f"{where}.columns must be an array of strings")
    repeated = sorted(c for c, n in Counter(columns).items() if n > 1)
    if repeated:
        raise DecodeError(f"{where}.columns names {_quoted(repeated)} more than once")

    known = _field_map(spec)
    only = spec.inputs[0]
    if len(spec.inputs) == 1 and only.columns is None and not any(c in known for c in columns):
        # Nothing to match the names against: the table is the input, as sent.
        return ScoreRequest(_from_rows(data, spec, where=f"{where}.data"), index)

    if not data:
        fields: dict[str, Any] = {c: [] for c in columns}
    else:
        try:
            cells = np.array(data, dtype=object)
        except (ValueError, TypeError, RecursionError):
            cells = np.empty(0, dtype=object)
        if cells.ndim != 2 or cells.shape[1] != len(columns):
            raise DecodeError(
                f"{where}.data must be rows of {len(columns)} values, one per column in "
                f"{where}.columns"
            )
        fields = {c: cells[:, j].tolist() for j, c in enumerate(columns)}
    return ScoreRequest(_from_fields(fields, spec, where=where), index)


def _field_map(spec: PackageSpec) -> dict[str, tuple[TensorSpec, int | None]]:
    """Every field name the model takes -> (its input, its column position or None)."""
    known: dict[str, tuple[TensorSpec, int | None]] = {t.name: (t, None) for t in spec.inputs}
    for t in spec.inputs:
        for j, c in enumerate(t.columns or ()):
            known.setdefault(c, (t, j))
    return known


def _takes(spec: PackageSpec) -> str:
    parts = [f"inputs: {', '.join(t.name for t in spec.inputs)}"]
    parts += [f"columns of {t.name}: {', '.join(t.columns)}" for t in spec.inputs if t.columns]
    return "; ".join(parts)


def _from_fields(fields: dict[str, Any], spec: PackageSpec, *, where: str) -> dict[str, np.ndarray]:
    """Named fields (inputs or columns) -> arrays by input name."""
    known = _field_map(spec)
    unknown = [k for k in fields if k not in known]
    if unknown:
        verb = (
            "is neither an input nor a column"
            if len(unknown) == 1
            else ("are neither inputs nor columns")
        )
        raise DecodeError(
            f"{_quoted(unknown)} in {where} {verb} of model {_model(spec)}; {_takes(spec)}"
        )
    out: dict[str, np.ndarray] = {}
    for t in spec.inputs:
        tensor = f"input '{t.name}'"
        columns = t.columns or ()
        given = [c for c in columns if c in fields and known[c][0] is t]
        if t.name in fields:
            if given:
                raise DecodeError(
                    f"{tensor} is given both by name and by its columns {_quoted(given)} "
                    f"in {where}; send one"
                )
            values = fields[t.name]
            if not isinstance(values, list):
                raise DecodeError(
                    f"{tensor} in {where} must be an array of rows; got {json_type(values)}"
                )
            out[t.name] = _fit(array_from_json(values, t.datatype, tensor=tensor), t)
        elif given:
            missing = [c for c in columns if c not in fields]
            if missing:
                raise DecodeError(
                    f"{tensor} is missing {'column' if len(missing) == 1 else 'columns'} "
                    f"{_quoted(missing)} in {where}; its columns are {', '.join(columns)}"
                )
            out[t.name] = _stack_columns(fields, t, columns, where)
        # An input given neither way is left out: validate_inputs names it as missing.
    return out


def _stack_columns(
    fields: dict[str, Any], t: TensorSpec, columns: tuple[str, ...], where: str
) -> np.ndarray:
    """The columns of ``t`` (all present in ``fields``) side by side, in declared order."""
    cols: list[np.ndarray] = []
    for c in columns:
        tensor = f"column '{c}' of input '{t.name}'"
        values = fields[c]
        if not isinstance(values, list):
            raise DecodeError(
                f"{tensor} in {where} must be an array of one value per row; "
                f"got {json_type(values)}"
            )
        arr = array_from_json(values, t.datatype, tensor=tensor)
        if arr.ndim != 1:
            raise DecodeError(
                f"{tensor} in {where} must hold one value per row; got values nested as "
                f"{shape_text(arr.shape)}"
            )
        cols.append(arr)
    lengths = {len(a) for a in cols}
    if len(lengths) > 1:
        counts = ", ".join(f"{c} {len(a)}" for c, a in zip(columns, cols, strict=True))
        raise DecodeError(f"the columns of input '{t.name}' in {where} differ in length: {counts}")
    if not cols[0].size:
        return _empty(t)
    return np.stack(cols, axis=-1)


def predictions_output(spec: PackageSpec) -> str:
    """The output ``predictions`` holds: the package's only BYTES output if it declares
    exactly one (a label), else its first declared output."""
    labels = [t.name for t in spec.outputs if t.datatype == "BYTES"]
    return labels[0] if len(labels) == 1 else spec.outputs[0].name


def encode_score_response(
    outputs: Mapping[str, np.ndarray], spec: PackageSpec, index: list[Any] | None = None
) -> bytes:
    """The ``/score`` response body for ``outputs`` (see the module docstring for the
    rule). Raises ``ExecutionError`` when a declared output is not in ``outputs``."""
    missing = [t.name for t in spec.outputs if t.name not in outputs]
    if missing:
        raise ExecutionError(
            f"model {_model(spec)} produced no {_quoted(missing)}; "
            f"it produced {_quoted(list(outputs)) or 'nothing'}"
        )
    values = {
        t.name: array_to_json(
            np.asarray(outputs[t.name]),
            tensor=f"output '{t.name}'",
            flat=False,
            errors="replace",
        )
        for t in spec.outputs
    }
    doc: dict[str, Any] = {"predictions": values[predictions_output(spec)]}
    if len(spec.outputs) > 1:
        doc["outputs"] = values
    if index is not None:
        doc["index"] = index
    return dump_json(doc)
