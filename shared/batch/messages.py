"""Queue messages: references only (job, chunk, range), never data.

``ChunkMessage`` goes on a deployment's chunk queue (one per chunk); ``PlanMessage`` on its
plan queue (the job API and resume ask the scoring app to plan a recorded job).
"""

from __future__ import annotations

from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import DecodeError

__all__ = ["ChunkMessage", "PlanMessage"]


class ChunkMessage(BaseModel):
    """One chunk of one job. ``start``/``end`` are a byte range for CSV and JSONL and a
    row-group range for Parquet (end exclusive); the job entity says which."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = Field(default=1, description="message schema version")
    endpoint: str = Field(min_length=1)
    job: str = Field(min_length=1)
    chunk: int = Field(ge=0)
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    round: int = Field(
        default=0, ge=0, description="the job's resume count when sent; older rounds are stale"
    )
    traceparent: str | None = Field(
        default=None,
        max_length=128,
        description="W3C trace context of the planning span (telemetry on), so plan, "
        "chunks and commit share one trace",
    )

    def dumps(self) -> bytes:
        """The message body (JSON; ``traceparent`` only when set)."""
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def loads(cls, body: bytes) -> ChunkMessage:
        """Parse a message body; ``DecodeError`` names what is wrong."""
        try:
            return cls.model_validate_json(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "message"
            raise DecodeError(f"chunk message: {where}: {err['msg']}; got {body[:200]!r}") from exc


class PlanMessage(BaseModel):
    """Plan the recorded job ``job`` of ``endpoint`` (state ``planning``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = Field(default=1, description="message schema version")
    endpoint: str = Field(min_length=1)
    job: str = Field(min_length=1)

    def dumps(self) -> bytes:
        """The message body (JSON)."""
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def loads(cls, body: bytes) -> PlanMessage:
        """Parse a message body; ``DecodeError`` names what is wrong."""
        try:
            return cls.model_validate_json(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "message"
            raise DecodeError(f"plan message: {where}: {err['msg']}; got {body[:200]!r}") from exc
