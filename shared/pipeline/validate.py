"""Input validation against a package's signature, once, at the edge of the pipeline.

Checks names, datatypes (with the package's allowed casts), rank and fixed dimensions,
rows (present, and the same for every input), and NaN/inf. Every refusal is an
``InputError`` subclass naming the input, what came and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from shared.errors import (
    DtypeError,
    EmptyBatchError,
    MissingInputError,
    NonFiniteError,
    ShapeError,
    UnexpectedInputError,
)
from shared.pipeline.dtypes import from_numpy, to_numpy
from shared.pipeline.spec import PackageSpec, TensorSpec

__all__ = ["validate_inputs", "shape_text"]


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    """``[2, 8]``-style text for messages."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _all_finite(arr: np.ndarray) -> bool:
    """True when no element is NaN or infinite.

    NaN and +-inf propagate into a sum, so for FP16/FP32 a float64 sum (which cannot
    overflow for them) decides with one reduction and no temporary array; FP64 sums could
    overflow, so those take the element-wise check.
    """
    if arr.dtype.itemsize < 8:
        return bool(np.isfinite(arr.sum(dtype=np.float64)))
    return bool(np.isfinite(arr).all())


def _check_one(arr: np.ndarray, t: TensorSpec, spec: PackageSpec, model: str) -> np.ndarray:
    got = from_numpy(arr.dtype)
    if got != t.datatype:
        if got is not None and (got, t.datatype) in spec.input_policy.casts:
            arr = arr.astype(to_numpy(t.datatype), copy=False)
        else:
            casts = sorted(f for f, to in spec.input_policy.casts if to == t.datatype)
            also = f" (or {', '.join(casts)}, cast safely)" if casts else ""
            raise DtypeError(
                t.name,
                f"input '{t.name}' has datatype {got or arr.dtype}; "
                f"model {model} expects {t.datatype}{also}",
            )
    if arr.ndim != len(t.shape) or any(
        want != -1 and have != want for have, want in zip(arr.shape, t.shape, strict=False)
    ):
        raise ShapeError(
            t.name,
            f"input '{t.name}' has shape {shape_text(arr.shape)}; model {model} expects "
            f"{shape_text(t.shape)} (-1 = any size)",
        )
    if (
        not spec.input_policy.allow_non_finite
        and arr.dtype.kind == "f"
        and not _all_finite(arr)
    ):
        bad = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise NonFiniteError(
            t.name,
            f"input '{t.name}' holds NaN or infinity (first at row {bad}); "
            f"model {model} accepts finite values only",
        )
    return arr


def validate_inputs(inputs: Mapping[str, np.ndarray], spec: PackageSpec) -> dict[str, np.ndarray]:
    """Return the inputs, cast where the package allows, or raise an ``InputError``."""
    model = f"{spec.name}:{spec.version}"
    declared = spec.inputs
    if len(inputs) != len(declared) or any(t.name not in inputs for t in declared):
        names = ", ".join(t.name for t in declared)
        for name in inputs:
            if spec.input(name) is None:
                raise UnexpectedInputError(
                    name, f"input '{name}' is not an input of model {model}; its inputs are {names}"
                )
        for t in declared:
            if t.name not in inputs:
                raise MissingInputError(
                    t.name, f"input '{t.name}' is missing; model {model} needs {names}"
                )
    out: dict[str, np.ndarray] = {}
    rows: int | None = None
    first = ""
    for t in declared:
        arr = _check_one(np.asarray(inputs[t.name]), t, spec, model)
        if arr.ndim == 0 or arr.shape[0] == 0:
            raise EmptyBatchError(
                t.name, f"input '{t.name}' has 0 rows; model {model} needs at least 1"
            )
        if rows is None:
            rows, first = arr.shape[0], t.name
        elif arr.shape[0] != rows:
            raise ShapeError(
                t.name,
                f"inputs disagree on rows: '{first}' has {rows}, '{t.name}' has {arr.shape[0]}",
            )
        out[t.name] = arr
    return out
