"""A request body that must be one JSON object (the router's admin and feedback calls)."""

from __future__ import annotations

from typing import Any

import orjson

from shared.errors import DecodeError

__all__ = ["json_object"]


def json_object(body: bytes, example: str) -> dict[str, Any]:
    """``body`` parsed as a JSON object; ``DecodeError`` when it is not JSON or not an
    object (the message shows ``example``, an object of the expected shape)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DecodeError(f"expected a JSON object like {example}; got {type(data).__name__}")
    return data
