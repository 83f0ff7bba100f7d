"""Which file columns feed which model input, and which are passed through as ids.

An input with ``columns`` (shape ``[-1, k]``) takes those k columns, stacked in that
order. An input of shape ``[-1]`` takes the column named like the input. An input of
shape ``[-1, k]`` without ``columns`` takes one list column named like the input (each
value a list of k numbers: Parquet lists, JSON arrays; CSV cannot hold lists).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.errors import BatchInputError
from shared.pipeline.dtypes import to_numpy
from shared.pipeline.spec import PackageSpec

__all__ = ["InputBinding", "bind_inputs", "model_columns", "check_columns", "pick_id_columns"]


@dataclass(frozen=True, slots=True)
class InputBinding:
    """One model input and the file columns that fill it."""

    name: str
    datatype: str
    columns: tuple[str, ...]
    list_width: int | None
    """k for an input filled from one list column of k values; None otherwise."""
    rank: int

    @property
    def dtype(self) -> np.dtype[Any]:
        """numpy dtype of the input."""
        return to_numpy(self.datatype)


def bind_inputs(spec: PackageSpec) -> list[InputBinding]:
    """The bindings of every input of ``spec``; ``BatchInputError`` for an input that no
    file column layout can fill (rank above 2, or dynamic feature dimensions)."""
    model = f"{spec.name}:{spec.version}"
    out: list[InputBinding] = []
    for t in spec.inputs:
        if t.columns is not None:
            out.append(InputBinding(t.name, t.datatype, tuple(t.columns), None, 2))
        elif len(t.shape) == 1:
            out.append(InputBinding(t.name, t.datatype, (t.name,), None, 1))
        elif len(t.shape) == 2 and t.shape[1] > 0:
            out.append(InputBinding(t.name, t.datatype, (t.name,), t.shape[1], 2))
        else:
            raise BatchInputError(
                f"model {model}: input '{t.name}' has shape {list(t.shape)} and no columns; "
                "batch scoring fills inputs of shape [-1], [-1, k] with columns, or [-1, k] "
                "from one list column"
            )
    return out


def model_columns(bindings: Sequence[InputBinding]) -> list[str]:
    """Every file column the model reads, in input order."""
    return [c for b in bindings for c in b.columns]


def check_columns(
    available: Sequence[str], bindings: Sequence[InputBinding], *, where: str, model: str
) -> None:
    """``BatchInputError`` naming the missing columns, what the file has and what the
    model needs, unless every model column is in ``available``."""
    have = set(available)
    needed = model_columns(bindings)
    missing = [c for c in needed if c not in have]
    if missing:
        raise BatchInputError(
            f"{where}: column(s) {', '.join(missing)} missing; the file has "
            f"{', '.join(available) or 'no columns'}; model {model} needs {', '.join(needed)}"
        )


def pick_id_columns(
    available: Sequence[str], bindings: Sequence[InputBinding], configured: str, *, where: str
) -> list[str]:
    """The columns copied to predictions: ``configured`` (comma-separated), or every
    column the model does not read. A configured column that is absent is refused."""
    names = [c.strip() for c in configured.split(",") if c.strip()]
    if not names:
        used = set(model_columns(bindings))
        return [c for c in available if c not in used]
    missing = [c for c in names if c not in available]
    if missing:
        raise BatchInputError(
            f"{where}: id column(s) {', '.join(missing)} (SCOREFN_BATCH_ID_COLUMNS) not in "
            f"the file; it has {', '.join(available)}"
        )
    return names
