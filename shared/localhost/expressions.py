"""Binding expressions: ``{name}`` placeholders in blob paths and queue names.

``BindingTemplate`` fills an output or input binding's path from *binding data*: the route
values and ``Query.<name>`` of an HTTP request, the pattern values and ``BlobTrigger`` /
``Uri`` of a blob, ``QueueTrigger`` / ``Id`` / ``DequeueCount`` and the top-level JSON
properties of a queue message. Names are case-insensitive, dotted names walk into JSON
objects, and ``{rand-guid}`` / ``{sys.randguid}``, ``{DateTime}`` / ``{sys.utcnow}`` are
built in. ``BlobPathPattern`` is the reverse: it reads those values out of a blob name.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "BindingData",
    "BindingTemplate",
    "BlobPathPattern",
    "resolve_setting_references",
    "split_blob_path",
]

BindingData = Mapping[str, Any]
"""Values a template can name; keys are lower case."""

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_SETTING_REFERENCE = re.compile(r"%([^%]+)%")


def resolve_setting_references(text: str, app_settings: Mapping[str, str]) -> str:
    """Replace ``%Name%`` with the app setting ``Name``, as Functions does in binding
    properties such as ``queueName``, ``path`` and ``schedule``; ``KeyError`` if unset."""

    def replace(found: re.Match[str]) -> str:
        name = found.group(1)
        value = app_settings.get(name)
        if value is None:
            raise KeyError(f"{text!r} names app setting {name!r}, which is not set")
        return value

    return _SETTING_REFERENCE.sub(replace, text)


def split_blob_path(path: str) -> tuple[str, str]:
    """Split ``container/blob/name`` into the container and the blob name."""
    container, _, blob = path.strip("/").partition("/")
    if not container:
        raise ValueError(f"blob path {path!r} names no container")
    return container, blob


def _builtin(name: str) -> str | None:
    if name in ("rand-guid", "sys.randguid"):
        return str(uuid.uuid4())
    if name == "datetime":
        return datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    if name == "sys.utcnow":
        return datetime.now(UTC).isoformat()
    return None


def _lookup(data: BindingData, name: str) -> Any:
    if name in data:
        return data[name]
    node: Any = data
    for part in name.split("."):
        if not isinstance(node, Mapping):
            return None
        matches = [value for key, value in node.items() if str(key).lower() == part]
        if not matches:
            return None
        node = matches[0]
    return node


@dataclass(frozen=True, slots=True)
class BindingTemplate:
    """A string with ``{expression}`` placeholders, parsed once."""

    template: str
    names: tuple[str, ...]
    _pieces: tuple[str, ...]

    @classmethod
    def parse(cls, template: str) -> BindingTemplate:
        """Parse ``template``; literal text alternates with placeholder names."""
        pieces = tuple(_PLACEHOLDER.split(template))
        return cls(template, tuple(p.strip().lower() for p in pieces[1::2]), pieces)

    def resolve(self, data: BindingData) -> str:
        """Fill the placeholders; ``KeyError`` names one that the data lacks."""
        if not self.names:
            return self.template
        out: list[str] = []
        for index, piece in enumerate(self._pieces):
            if index % 2 == 0:
                out.append(piece)
                continue
            name = piece.strip().lower()
            value = _builtin(name)
            if value is None:
                found = _lookup(data, name)
                if found is None:
                    available = ", ".join(sorted(data)) or "none"
                    raise KeyError(
                        f"binding expression {{{piece}}} in {self.template!r} has no value; "
                        f"available: {available}"
                    )
                value = str(found)
            out.append(value)
        return "".join(out)


class BlobPathPattern:
    """A blob trigger path such as ``batch-input/{name}``: a container and a name pattern.

    As in Azure Functions, a placeholder in the last segment of the pattern matches across
    ``/`` (``{name}`` matches ``a/b/c.csv``); placeholders in earlier segments match one
    segment each.
    """

    __slots__ = ("container", "name_pattern", "prefix", "regex")

    def __init__(self, path: str) -> None:
        """Parse ``container/pattern``; ``ValueError`` when the container has a placeholder."""
        container, pattern = split_blob_path(path)
        if "{" in container:
            raise ValueError(f"blob trigger path {path!r}: the container cannot be a pattern")
        self.container = container
        self.name_pattern = pattern
        self.prefix = pattern.split("{", 1)[0]
        """The literal start of every matching blob name (for listing)."""
        last_slash = pattern.rfind("/")
        regex: list[str] = []
        position = 0
        for found in _PLACEHOLDER.finditer(pattern):
            regex.append(re.escape(pattern[position : found.start()]))
            group = re.sub(r"\W", "_", found.group(1).strip().lower())
            in_last_segment = found.start() > last_slash
            regex.append(f"(?P<{group}>.+?)" if in_last_segment else f"(?P<{group}>[^/]+)")
            position = found.end()
        regex.append(re.escape(pattern[position:]))
        self.regex = re.compile("".join(regex), re.DOTALL)

    def match(self, blob_name: str) -> dict[str, str] | None:
        """Placeholder values (lower-case names) when ``blob_name`` matches, else ``None``."""
        if not self.name_pattern:
            return {}
        found = self.regex.fullmatch(blob_name)
        return None if found is None else found.groupdict()
