"""Tensor datatypes: the Open Inference Protocol names, and their numpy / ONNX forms.

The package format and the wire protocol both use the protocol's names (``FP32``,
``INT64``, ``BYTES`` ...); numpy and ONNX types are translated here and nowhere else.
"""

from __future__ import annotations

from typing import Final

import numpy as np

__all__ = [
    "DATATYPES",
    "to_numpy",
    "from_numpy",
    "from_onnx",
    "from_ort_type",
]

#: Protocol datatype -> numpy dtype. BYTES are numpy object arrays of ``bytes``/``str``.
DATATYPES: Final[dict[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

_BY_NUMPY: Final[dict[np.dtype[np.generic], str]] = {v: k for k, v in DATATYPES.items()}

# ONNX TensorProto.DataType enum values (stable across onnx releases).
_ONNX: Final[dict[int, str]] = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "BYTES",
    9: "BOOL",
    10: "FP16",
    11: "FP64",
    12: "UINT32",
    13: "UINT64",
}

# onnxruntime NodeArg.type strings.
_ORT: Final[dict[str, str]] = {
    "tensor(float)": "FP32",
    "tensor(uint8)": "UINT8",
    "tensor(int8)": "INT8",
    "tensor(uint16)": "UINT16",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(string)": "BYTES",
    "tensor(bool)": "BOOL",
    "tensor(float16)": "FP16",
    "tensor(double)": "FP64",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
}


def to_numpy(datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype for a protocol datatype; ``KeyError`` if unknown."""
    return DATATYPES[datatype]


def from_numpy(dtype: np.dtype[np.generic]) -> str | None:
    """The protocol datatype for a numpy dtype (``<U``/``S`` strings are ``BYTES``), or None."""
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    return _BY_NUMPY.get(dtype)


def from_onnx(elem_type: int) -> str | None:
    """The protocol datatype for an ONNX ``TensorProto`` element type, or None."""
    return _ONNX.get(elem_type)


def from_ort_type(type_str: str) -> str | None:
    """The protocol datatype for an onnxruntime ``NodeArg.type`` string, or None."""
    return _ORT.get(type_str)
