"""Input validation against a package's signature, once, at the edge of the pipeline.

Checks names, datatypes (with the package's allowed casts), rank and fixed dimensions,
rows (present, and the same for every input), and NaN/inf. Every refusal is an
``InputError`` subclass naming the input, what came and what is allowed.

``Validator`` is the per-request entry point: compiled once per package, it accepts
inputs that already fit exactly (a dict of numpy arrays of the declared dtypes, ranks and
fixed dims) with attribute comparisons only, and hands anything else to
``validate_inputs``, the one place where casts are made and errors are worded. The
NaN/inf check can be left to ``check_finite`` on a whole batch (``defer_finite``): the
dynamic batcher does that once per batch on its worker, and re-checks request by request
only when the batch holds a bad value, so the error still reaches exactly its request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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

__all__ = ["Validated", "Validator", "validate_inputs", "shape_text"]

_isfinite = np.isfinite
_all = np.logical_and.reduce


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    """``[2, 8]``-style text for messages."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _all_finite(arr: np.ndarray) -> bool:
    """True when no element is NaN or infinite.

    One element-wise ``isfinite`` and one reduction, called as ufuncs (``ndarray.all``'s
    Python wrapper costs more than the check of a few rows). Exact for every float dtype:
    no sum that could overflow, and no floating-point warnings.
    """
    return bool(_all(_isfinite(arr), None))


def _non_finite_error(arr: np.ndarray, name: str, model: str) -> NonFiniteError:
    bad = int(np.argwhere(~np.isfinite(arr))[0][0])
    return NonFiniteError(
        name,
        f"input '{name}' holds NaN or infinity (first at row {bad}); "
        f"model {model} accepts finite values only",
    )


def _check_one(
    arr: np.ndarray, t: TensorSpec, spec: PackageSpec, model: str, check_finite: bool
) -> np.ndarray:
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
        check_finite
        and not spec.input_policy.allow_non_finite
        and arr.dtype.kind == "f"
        and not _all_finite(arr)
    ):
        raise _non_finite_error(arr, t.name, model)
    return arr


def validate_inputs(
    inputs: Mapping[str, np.ndarray], spec: PackageSpec, *, check_finite: bool = True
) -> dict[str, np.ndarray]:
    """Return the inputs, cast where the package allows, or raise an ``InputError``.

    ``check_finite=False`` leaves the NaN/inf check to the caller (``check_finite``).
    """
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
        try:
            arr = np.asarray(inputs[t.name])
        except ValueError as exc:  # nested lists of different lengths
            raise ShapeError(
                t.name,
                f"input '{t.name}' is not a rectangular array (nested lists of different "
                f"lengths); model {model} expects shape {shape_text(t.shape)} (-1 = any size)",
            ) from exc
        arr = _check_one(arr, t, spec, model, check_finite)
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


#: One declared input, compiled for the exact-fit test: name, numpy dtype, and its
#: trailing dims (the first, rows, is dynamic and all others are fixed).
_Compiled = tuple[str, np.dtype[Any], tuple[int, ...]]


class Validated(dict[str, np.ndarray]):
    """Inputs the validator's fast path accepted, with what the batcher needs to queue
    them: ``rows`` and ``signature`` (input name, dtype and trailing shape of each input,
    sorted by name), known from the package without looking at the arrays again."""

    __slots__ = ("rows", "signature")

    rows: int
    signature: tuple[_Compiled, ...]


_ndarray = np.ndarray


class Validator:
    """``validate_inputs`` for one package, with a fast path for inputs that already fit.

    The fast path only *accepts*: it compares types, dtypes, rows and trailing dims by
    attribute, and anything it does not accept outright (a cast to make, a wrong name or
    shape, a list instead of an array, a package with a dynamic or fixed dim it cannot
    compare as a tuple...) goes to ``validate_inputs``, which casts or raises the same
    typed error as always. ``validate`` is the same call with positional arguments only,
    for hot paths (a keyword argument and ``__call__`` each cost a little more).
    """

    __slots__ = ("_fast", "_finite", "_model", "_signature", "spec")

    def __init__(self, spec: PackageSpec) -> None:
        self.spec = spec
        self._model = f"{spec.name}:{spec.version}"
        fast: list[_Compiled] = []
        for t in spec.inputs:
            trailing = tuple(t.shape[1:])
            if len(t.shape) >= 1 and t.shape[0] == -1 and all(d != -1 for d in trailing):
                fast.append((t.name, to_numpy(t.datatype), trailing))
        #: None when some input's shape needs the general check.
        self._fast: tuple[_Compiled, ...] | None = (
            tuple(fast) if len(fast) == len(spec.inputs) else None
        )
        #: The batcher's grouping key of every request the fast path accepts.
        self._signature = tuple(sorted(fast, key=lambda c: c[0]))
        #: Inputs the NaN/inf check applies to (floating-point ones, unless allowed).
        self._finite = tuple(
            t.name
            for t in spec.inputs
            if not spec.input_policy.allow_non_finite and to_numpy(t.datatype).kind == "f"
        )

    @property
    def checks_finite(self) -> bool:
        """True when the package refuses NaN/inf in at least one input."""
        return bool(self._finite)

    def __call__(
        self, inputs: Mapping[str, np.ndarray], *, defer_finite: bool = False
    ) -> dict[str, np.ndarray]:
        """Validated (and safely cast) inputs, or an ``InputError``.

        With ``defer_finite`` the NaN/inf check is left out: the caller must run
        ``check_finite`` on these inputs (or on a batch holding them) before running them.
        """
        return self.validate(inputs, defer_finite)

    def validate(
        self, inputs: Mapping[str, np.ndarray], defer_finite: bool = False
    ) -> dict[str, np.ndarray]:
        """``__call__`` with positional arguments."""
        fast = self._fast
        kind = type(inputs)
        if fast is not None and (kind is dict or kind is Validated) and len(inputs) == len(fast):
            out = Validated()
            rows = 0
            for name, dtype, trailing in fast:
                arr = inputs.get(name)
                if type(arr) is not _ndarray or arr.dtype is not dtype:
                    break
                shape = arr.shape
                # shape[1:] == trailing also fixes the rank, except for a 0-d array.
                if shape[1:] != trailing or not shape:
                    break
                n = shape[0]
                if not n or (rows and n != rows):
                    break
                rows = n
                out[name] = arr
            else:
                if not defer_finite:
                    for name in self._finite:
                        if not _all_finite(out[name]):
                            raise _non_finite_error(out[name], name, self._model)
                out.rows = rows
                out.signature = self._signature
                return out
        return validate_inputs(inputs, self.spec, check_finite=not defer_finite)

    def check_finite(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Raise ``NonFiniteError`` when a checked input of validated ``inputs`` holds
        NaN or infinity (the row in the message counts within ``inputs``)."""
        for name in self._finite:
            arr = inputs[name]
            if not _all_finite(arr):
                raise _non_finite_error(arr, name, self._model)
