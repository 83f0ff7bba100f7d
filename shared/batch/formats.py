"""Input formats, chosen by the file's extension."""

from __future__ import annotations

import enum

from shared.errors import BatchInputError

__all__ = ["Format", "format_for", "EXTENSIONS"]


class Format(enum.StrEnum):
    """A batch input format; its value names it in messages and summaries."""

    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"

    @property
    def line_based(self) -> bool:
        """Rows are lines (chunks are byte ranges cut at line ends)."""
        return self is not Format.PARQUET

    @property
    def output_name(self) -> str:
        """File name of the committed predictions."""
        return "predictions.parquet" if self is Format.PARQUET else "predictions.csv"


EXTENSIONS: dict[str, Format] = {
    ".csv": Format.CSV,
    ".jsonl": Format.JSONL,
    ".ndjson": Format.JSONL,
    ".parquet": Format.PARQUET,
}
"""Extension (lower case) -> format."""


def format_for(path: str) -> Format:
    """The format of ``path`` by extension; ``BatchInputError`` for any other."""
    name = path.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    ext = name[dot:].lower() if dot > 0 else ""
    found = EXTENSIONS.get(ext)
    if found is None:
        allowed = ", ".join(EXTENSIONS)
        got = f"extension {ext!r}" if ext else "no extension"
        raise BatchInputError(f"{path}: {got} is not a batch input format; allowed: {allowed}")
    return found
