"""Tensor data as JSON values: the one place that decides which JSON values a datatype takes.

Both wire formats (``/v2/.../infer`` and ``/score``) read tensors from parsed JSON with
``array_from_json`` and write them with ``array_to_json``, so the rules are the same:

============  ==========================================================================
datatype      JSON values accepted
============  ==========================================================================
BOOL          ``true`` / ``false``
INT*, UINT*   integers within the datatype's range (a ``true`` mixed in with integers
              reads as 1, as numpy reads it)
FP16/32/64    numbers (integers or decimals) within the datatype's range
BYTES         strings, stored as UTF-8 ``bytes`` in a numpy object array
============  ==========================================================================

Values may be nested lists, as long as they are rectangular. The type of the values is
read from the array numpy infers, so fixed-size datatypes never visit elements in Python;
BYTES elements are Python objects, so their conversion necessarily does.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final, cast

import numpy as np

from shared.errors import DecodeError
from shared.pipeline.dtypes import to_numpy

__all__ = ["array_from_json", "array_to_json", "utf8_strings"]

# What numpy infers for a list of JSON values, by dtype kind, in words.
_FOUND: Final[dict[str, str]] = {
    "b": "booleans",
    "i": "integers",
    "u": "integers",
    "f": "decimal numbers",
    "U": "strings",
    "O": "nulls, objects or integers beyond 64 bits",
}

# What each kind of datatype takes, in words.
_ALLOWED: Final[dict[str, str]] = {
    "b": "true or false",
    "i": "JSON integers",
    "u": "JSON integers",
    "f": "JSON numbers",
    "O": "JSON strings",
}

# JSON value types in words, for BYTES data holding something other than strings.
_PY_FOUND: Final[dict[type[object], str]] = {
    bool: "booleans",
    int: "numbers",
    float: "numbers",
    type(None): "nulls",
    dict: "objects",
    list: "lists",
}


def array_from_json(values: Any, datatype: str, *, tensor: str) -> np.ndarray:
    """An array of ``datatype`` from parsed JSON ``values`` (a scalar or nested lists).

    The shape is the nesting of ``values``. ``tensor`` names the tensor in messages,
    e.g. ``"input 'x'"`` or ``"column 'amount' of input 'x'"``. Raises ``DecodeError``
    for ragged nesting, values the datatype does not take, and numbers out of its range.
    """
    dtype = to_numpy(datatype)
    if dtype.kind == "O":
        return _bytes_from_json(values, datatype, tensor)
    try:
        raw = np.asarray(values)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise DecodeError(
            f"{tensor} data is not a rectangular nested list: {_numpy_reason(exc)}"
        ) from exc
    if raw.size == 0:
        return np.empty(raw.shape, dtype=dtype)
    kind = dtype.kind
    found = raw.dtype.kind
    if datatype == "UINT64" and found == "f":
        # numpy reads integers past 2**63 mixed with smaller ones as float64, losing
        # digits: read those with the exact integers instead.
        return _uint64_from_json(values, raw.shape, tensor)
    accepted = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}[kind]
    if found not in accepted:
        what = _FOUND.get(found, str(raw.dtype))
        if kind in "iu" and found in "fO":
            what = "numbers that are not integers"
        raise DecodeError(
            f"{tensor} has datatype '{datatype}' but its data holds {what}; "
            f"{datatype} data are {_ALLOWED[kind]}{_range_text(dtype)}"
        )
    if kind in "iu":
        info = _iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise DecodeError(
                f"{tensor} has datatype '{datatype}' but its data holds integers outside "
                f"[{info.min}, {info.max}]"
            )
        return raw.astype(dtype, copy=False)
    if kind == "f":
        with np.errstate(over="ignore"):
            arr = raw.astype(dtype, copy=False)
        if not np.isfinite(arr).all():
            limit = np.finfo(cast("np.dtype[np.floating[Any]]", dtype)).max
            raise DecodeError(
                f"{tensor} has datatype '{datatype}' but its data holds numbers beyond "
                f"±{limit:.6g}, the {datatype} range"
            )
        return arr
    return raw


def _uint64_from_json(values: Any, shape: tuple[int, ...], tensor: str) -> np.ndarray:
    info = _iinfo(np.dtype(np.uint64))
    flat = np.array(values, dtype=object).reshape(-1)
    if not set(map(type, flat)) <= {int, bool}:
        raise DecodeError(
            f"{tensor} has datatype 'UINT64' but its data holds numbers that are not "
            f"integers; UINT64 data are JSON integers within [{info.min}, {info.max}]"
        )
    try:
        return np.array(flat.tolist(), dtype=np.uint64).reshape(shape)
    except OverflowError as exc:
        raise DecodeError(
            f"{tensor} has datatype 'UINT64' but its data holds integers outside "
            f"[{info.min}, {info.max}]"
        ) from exc


def _bytes_from_json(values: Any, datatype: str, tensor: str) -> np.ndarray:
    # dtype=object keeps strings intact (numpy's '<U' strips trailing NULs) but also
    # accepts ragged lists, which then show up as list elements below.
    try:
        raw = np.array(values, dtype=object)
    except (ValueError, TypeError, RecursionError) as exc:
        raise DecodeError(
            f"{tensor} data is not a rectangular nested list: {_numpy_reason(exc)}"
        ) from exc
    flat = raw.reshape(-1)
    kinds = Counter(map(type, flat))
    if list in kinds:
        raise DecodeError(f"{tensor} data is not a rectangular nested list: its rows differ")
    others = [t for t in kinds if t is not str]
    if others:
        what = _PY_FOUND.get(others[0], "non-string values")
        raise DecodeError(
            f"{tensor} has datatype '{datatype}' but its data holds {what}; "
            f"{datatype} data are JSON strings"
        )
    try:
        encoded = np.fromiter((s.encode("utf-8") for s in flat), dtype=object, count=flat.size)
    except UnicodeEncodeError as exc:
        raise DecodeError(
            f"{tensor} has datatype '{datatype}' but its data holds a string that is not "
            f"valid Unicode ({exc.reason})"
        ) from exc
    return encoded.reshape(raw.shape)


def _iinfo(dtype: np.dtype[Any]) -> np.iinfo[Any]:
    return np.iinfo(cast("np.dtype[np.integer[Any]]", dtype))


def _range_text(dtype: np.dtype[Any]) -> str:
    if dtype.kind in "iu":
        info = _iinfo(dtype)
        return f" within [{info.min}, {info.max}]"
    return ""


def _numpy_reason(exc: BaseException) -> str:
    text = str(exc)
    if "inhomogeneous" in text:
        return "its rows differ in length or depth"
    if "maximum number of dimension" in text:
        return "it nests deeper than 64 levels"
    return text


def utf8_strings(arr: np.ndarray, *, tensor: str, errors: str = "strict") -> np.ndarray:
    """BYTES elements (``bytes``, ``str`` or anything ``str()`` takes) as an object array of
    ``str``, same shape. With ``errors="strict"`` bytes that are not UTF-8 raise
    ``DecodeError`` naming the tensor; ``"replace"`` substitutes U+FFFD instead.
    """
    flat = np.asarray(arr, dtype=object).reshape(-1)
    text = np.empty(flat.size, dtype=object)
    text[:] = _utf8_list(flat.tolist(), tensor=tensor, errors=errors)
    return text.reshape(np.shape(arr))


def _utf8_list(values: list[Any], *, tensor: str, errors: str) -> list[str]:
    try:
        return [v.decode("utf-8", errors) if isinstance(v, bytes) else str(v) for v in values]
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"{tensor} holds bytes that are not valid UTF-8, which JSON cannot carry; "
            "ask for it as binary data (parameters.binary_data: true)"
        ) from exc


def array_to_json(arr: np.ndarray, *, tensor: str, flat: bool, errors: str = "strict") -> Any:
    """A JSON-ready value for ``arr``: a numpy array ``orjson`` serialises directly
    (``OPT_SERIALIZE_NUMPY``), or, for BYTES, a list of ``str``. ``flat`` gives the
    row-major 1-D form; otherwise the nesting follows the shape. Non-finite floats come
    out as JSON ``null`` (JSON has no NaN). ``errors`` is as for ``utf8_strings``.
    """
    if arr.dtype.kind in "OUS":
        if flat:
            # The common case (v2 responses): build the list directly, without the
            # intermediate object array of utf8_strings.
            values = np.asarray(arr, dtype=object).reshape(-1).tolist()
            return _utf8_list(values, tensor=tensor, errors=errors)
        return utf8_strings(arr, tensor=tensor, errors=errors).tolist()
    if arr.ndim == 0 and not flat:
        return arr.item()
    out = arr.reshape(-1) if flat else arr
    # orjson takes native-endian, C-contiguous arrays only. Model outputs almost always
    # are both already: skip building a new dtype and calling numpy for them.
    if out.dtype.isnative and out.flags.c_contiguous:
        return out
    return np.ascontiguousarray(out, dtype=out.dtype.newbyteorder("="))
