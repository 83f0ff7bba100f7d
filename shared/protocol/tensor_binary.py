"""Tensor data as raw bytes: the element layout of the binary tensor data extension.

Fixed-size datatypes are little-endian, row-major, without padding; a BOOL is one byte,
0 or 1. A BYTES element is a 4-byte little-endian unsigned length followed by that many
bytes, elements back to back (tritonclient's ``serialize_byte_tensor`` and
``deserialize_bytes_tensor``).

Fixed-size tensors are read with ``np.frombuffer``: the arrays are read-only views over
the request body, no copy. BYTES elements are Python objects, so their codec necessarily
visits each element (and reading them is sequential: each length says where the next
element starts).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from itertools import chain
from typing import Final

import numpy as np

from shared.errors import DecodeError, ExecutionError
from shared.pipeline.dtypes import to_numpy
from shared.pipeline.validate import shape_text

__all__ = ["array_from_bytes", "array_to_bytes", "pack_bytes", "unpack_bytes", "reshape_tensor"]

_LEN: Final = struct.Struct("<I")
_MAX_ELEMENT: Final = 0xFFFFFFFF


def array_from_bytes(
    buf: bytes | memoryview, datatype: str, shape: Sequence[int], *, tensor: str
) -> np.ndarray:
    """The tensor of ``datatype`` and ``shape`` held in ``buf``, which must be exactly its
    size. ``tensor`` names it in messages (``"input 'x'"``). Raises ``DecodeError``."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return reshape_tensor(unpack_bytes(buf, count, tensor=tensor), shape, tensor=tensor)
    dtype = to_numpy(datatype)
    need = count * dtype.itemsize
    if len(buf) != need:
        raise DecodeError(
            f"{tensor} has datatype '{datatype}' and shape {shape_text(list(shape))}, "
            f"which take {need} bytes, but its binary_data_size is {len(buf)}"
        )
    if datatype == "BOOL":
        raw = np.frombuffer(buf, dtype=np.uint8)
        if raw.size and int(raw.max()) > 1:
            at = int(np.argmax(raw > 1))
            raise DecodeError(
                f"{tensor} has datatype 'BOOL' but byte {at} of its binary data is "
                f"{int(raw[at])}; BOOL elements are 0 or 1"
            )
        return reshape_tensor(raw.view(np.bool_), shape, tensor=tensor)
    flat = np.frombuffer(buf, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)
    return reshape_tensor(flat, shape, tensor=tensor)


def reshape_tensor(arr: np.ndarray, shape: Sequence[int], *, tensor: str) -> np.ndarray:
    """``arr`` (of the right size) in ``shape``; ``DecodeError`` when numpy cannot hold
    that shape (an empty tensor whose other dimensions multiply past 2**63)."""
    try:
        return arr.reshape(tuple(shape))
    except ValueError as exc:
        raise DecodeError(
            f"{tensor} has shape {shape_text(list(shape))}, which is too large to hold"
        ) from exc


def unpack_bytes(buf: bytes | memoryview, count: int, *, tensor: str) -> np.ndarray:
    """``count`` length-prefixed BYTES elements from ``buf``, as a 1-D object array of
    ``bytes``. ``buf`` must hold exactly those elements. Raises ``DecodeError``."""
    view = memoryview(buf)
    size = len(view)
    # Every element has a 4-byte prefix: this bounds the loop below by the body size,
    # whatever shape was claimed.
    if size < 4 * count:
        raise DecodeError(
            f"{tensor} has datatype 'BYTES' and {count} elements, which take at least "
            f"{4 * count} bytes, but its binary_data_size is {size}"
        )
    items: list[bytes] = []
    offset = 0
    for i in range(count):
        if offset + 4 > size:
            raise DecodeError(
                f"{tensor}: BYTES element {i} starts at byte {offset} but only "
                f"{size - offset} bytes remain; an element starts with a 4-byte length"
            )
        (length,) = _LEN.unpack_from(view, offset)
        offset += 4
        if offset + length > size:
            raise DecodeError(
                f"{tensor}: BYTES element {i} is {length} bytes long but only "
                f"{size - offset} bytes remain"
            )
        items.append(view[offset : offset + length].tobytes())
        offset += length
    if offset != size:
        raise DecodeError(
            f"{tensor} has {count} BYTES elements, which end at byte {offset}, "
            f"but its binary_data_size is {size}"
        )
    return np.fromiter(items, dtype=object, count=count)


def _to_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")


def pack_bytes(arr: np.ndarray, *, tensor: str) -> bytes:
    """The BYTES elements of ``arr`` (``bytes``, ``str``, or anything ``str()`` takes),
    row-major, each with its 4-byte length. Raises ``ExecutionError`` for an element
    over 4 GiB, which the format cannot carry."""
    items = [_to_bytes(v) for v in np.asarray(arr, dtype=object).reshape(-1)]
    lengths = list(map(len, items))
    if lengths and max(lengths) > _MAX_ELEMENT:
        raise ExecutionError(
            f"{tensor} has a BYTES element of {max(lengths)} bytes; the limit is "
            f"{_MAX_ELEMENT} bytes"
        )
    return b"".join(chain.from_iterable(zip(map(_LEN.pack, lengths), items, strict=True)))


def array_to_bytes(arr: np.ndarray, datatype: str, *, tensor: str) -> bytes:
    """``arr`` in the binary layout of ``datatype`` (its own protocol datatype)."""
    if datatype == "BYTES":
        return pack_bytes(arr, tensor=tensor)
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
