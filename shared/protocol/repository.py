"""The Open Inference Protocol model repository extension (as Triton and MLServer expose
it): the index request and response bodies.

``POST v2/repository/index`` takes an optional ``{"ready": true}`` (only loaded models)
and answers ``[{"name", "version", "state", "reason"}, ...]`` with ``state`` one of
``READY``, ``LOADING``, ``UNAVAILABLE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from shared.errors import DecodeError
from shared.protocol.json_body import check_fields, expect_object, json_type, load_json

__all__ = ["EXTENSION", "STATES", "decode_index_request", "index_body"]

#: Name of the extension in server metadata.
EXTENSION: Final = "model_repository"
#: Model states of the index.
STATES: Final = ("READY", "LOADING", "UNAVAILABLE")


def decode_index_request(body: bytes) -> dict[str, bool]:
    """Options of an index request (an empty body = none); ``DecodeError`` naming the
    field otherwise."""
    if not body.strip():
        return {"ready": False}
    where = "the repository index body"
    obj = expect_object(load_json(body, what=where), where=where)
    check_fields(obj, ("ready",), where=where)
    ready = obj.get("ready", False)
    if not isinstance(ready, bool):
        raise DecodeError(f"{where}: 'ready' must be a boolean; got {json_type(ready)}")
    return {"ready": ready}


def index_body(items: Sequence[dict[str, str]], *, ready: bool = False) -> list[dict[str, str]]:
    """The index response: every item, or only READY ones when ``ready``."""
    return [dict(i) for i in items if not ready or i["state"] == "READY"]
