"""JSON bodies: parsing them into ``DecodeError`` on failure, checking their objects'
fields, describing values in messages, and writing JSON (numpy arrays included)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import orjson

from shared.errors import DecodeError

__all__ = ["load_json", "dump_json", "json_type", "show", "expect_object", "check_fields"]

_SHOW_LIMIT: Final = 80


def load_json(body: bytes | memoryview, *, what: str) -> Any:
    """Parsed JSON of ``body``; ``DecodeError`` naming ``what`` (e.g. "the /score body")."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"{what} is not valid JSON: {exc}") from exc


def dump_json(value: Any) -> bytes:
    """``value`` as compact JSON; numpy arrays are written natively, NaN/inf as null."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def json_type(value: Any) -> str:
    """The JSON type of a parsed value, with its article: "an object", "a number" ..."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__


def show(value: Any) -> str:
    """A parsed value as short JSON text for messages (cut at 80 characters)."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 3] + "..."


def expect_object(value: Any, *, where: str) -> dict[str, Any]:
    """``value`` if it is a JSON object, else ``DecodeError`` saying what ``where`` got."""
    if not isinstance(value, dict):
        raise DecodeError(f"{where} must be a JSON object; got {json_type(value)}")
    return value


def check_fields(obj: dict[str, Any], allowed: Iterable[str], *, where: str) -> None:
    """``DecodeError`` naming the first field of ``obj`` that is not in ``allowed``."""
    names = tuple(allowed)
    for key in obj:
        if key not in names:
            raise DecodeError(
                f"{where} has unknown field '{key}'; its fields are {', '.join(names)}"
            )
