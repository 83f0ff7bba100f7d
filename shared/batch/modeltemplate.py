"""A job's model-name template: ``sales-{store_id}`` scores each row with the model named
by its ``store_id`` value (``sales-7`` for a row whose ``store_id`` is ``7``).

A job's model option (``model=`` folder of a drop, ``model`` of the job API, ``--model``
of the CLI) is a template when it holds ``{column}``: exactly one placeholder, naming the
partition column. An optional ``:version`` pins that version of every model; without
it each model's latest servable version scores. Light (no numpy, no pyarrow): the
router's job API checks templates when a job is submitted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.errors import BatchInputError

__all__ = ["ModelTemplate", "LATEST"]

LATEST = "latest"
"""The version recorded for a template without ``:version`` (each model's latest)."""

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_COLUMN = re.compile(r"[A-Za-z0-9_.\- ]+")


@dataclass(frozen=True, slots=True)
class ModelTemplate:
    """``prefix{column}suffix``: the model of a row is the template with ``column``'s
    value in place of the placeholder."""

    text: str
    """The name template, without a version: ``sales-{store_id}``."""
    column: str
    """The partition column: ``store_id``."""
    version: str | None = None
    """A pinned version of every model, or None for each model's latest."""

    @classmethod
    def parse(cls, model: str | None, version: str | None = None) -> ModelTemplate | None:
        """The template ``model`` describes, None for a plain model name;
        ``BatchInputError`` naming the problem for a malformed template."""
        if not model or ("{" not in model and "}" not in model):
            return None
        if version is None and ":" in model:
            model, _, ver = model.partition(":")
            version = ver or None
        found = _PLACEHOLDER.findall(model)
        stripped = _PLACEHOLDER.sub("", model)
        allowed = "one placeholder naming the partition column, e.g. 'sales-{store_id}'"
        if len(found) != 1 or "{" in stripped or "}" in stripped:
            raise BatchInputError(f"model template {model!r}: expected {allowed}")
        column = found[0]
        if not _COLUMN.fullmatch(column) or column.strip() != column:
            raise BatchInputError(
                f"model template {model!r}: {{{column}}} is not a column name (letters, "
                f"digits, '_', '.', '-'); expected {allowed}"
            )
        return cls(model, column, version or None)

    @property
    def pattern(self) -> str:
        """The ``fnmatch`` pattern of every name the template can produce."""
        return self.text.replace("{" + self.column + "}", "*")

    @property
    def recorded_version(self) -> str:
        """The version the job records: the pinned one, else ``latest``."""
        return self.version or LATEST

    def name(self, value: str) -> str:
        """The model name of a row whose partition value is ``value``."""
        return self.text.replace("{" + self.column + "}", value)
