"""Rollout state in table storage: one entity per endpoint, ETag-guarded.

Table ``rollouts``, partition ``rollout``, row = endpoint. The state is the JSON of a
``Rollout``; every change replaces the entity only if its ETag is unchanged, so the
controller and ``scorefn rollout abort`` never overwrite each other, and a router that
restarts (or another instance) resumes from exactly what is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, UpdateMode
from pydantic import BaseModel, ConfigDict, Field

from shared.errors import UpstreamError
from shared.rollout.tables import ROLLOUTS_TABLE, Tables
from shared.routing.endpoint import GateSpec

__all__ = ["Conflict", "Rollout", "RolloutStore", "StoredRollout", "step_traffic"]

_PARTITION: Final = "rollout"
_HISTORY: Final = 100


class Conflict(Exception):
    """The rollout changed since it was read (someone else acted)."""


class Rollout(BaseModel):
    """A progressive rollout of ``candidate`` next to ``baseline``."""

    model_config = ConfigDict(extra="ignore")

    endpoint: str
    state: Literal["running", "succeeded", "failed", "aborted"] = "running"
    baseline: str
    candidate: str
    steps: tuple[int, ...]
    step: int = 0
    """Index into ``steps``."""
    bake_s: float
    gates: GateSpec
    pool: int = 100
    """Traffic percent shared by baseline and candidate (others keep theirs)."""
    others: dict[str, int] = Field(default_factory=dict)
    started_at: float
    step_started_at: float
    updated_at: float
    message: str = ""
    failure: dict[str, Any] | None = None
    last_check: dict[str, Any] | None = None
    history: list[dict[str, Any]] = Field(default_factory=list)
    actor: str = ""

    @property
    def share(self) -> int:
        """The candidate's percentage of the current step."""
        return self.steps[self.step]

    def traffic(self) -> dict[str, int]:
        """The traffic weights this state calls for."""
        if self.state == "running":
            return step_traffic(self, self.share)
        if self.state == "succeeded":
            return step_traffic(self, 100)
        return step_traffic(self, 0)

    def log(self, event: str, at: float, **details: Any) -> None:
        """Append an event to the history (the last 100 are kept)."""
        self.history.append({"event": event, "at": round(at, 3), "step": self.step,
                             "share": self.share, **details})  # fmt: skip
        del self.history[:-_HISTORY]

    def summary(self) -> dict[str, Any]:
        """What ``scorefn rollout status`` prints."""
        data = self.model_dump(mode="json")
        data["share"] = self.share
        data["traffic"] = self.traffic()
        if self.state == "running":
            data["bake_left_s"] = round(
                max(self.bake_s - (self.updated_at - self.step_started_at), 0.0), 1
            )
        return data


def step_traffic(rollout: Rollout, share: int) -> dict[str, int]:
    """Weights giving the candidate ``share`` percent of the baseline+candidate pool."""
    candidate = round(rollout.pool * share / 100)
    return {**rollout.others, rollout.baseline: rollout.pool - candidate,
            rollout.candidate: candidate}  # fmt: skip


@dataclass(frozen=True, slots=True)
class StoredRollout:
    """A rollout as stored, with its ETag."""

    rollout: Rollout
    etag: str


class RolloutStore:
    """Reads and changes rollout states."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables

    @property
    def _table(self) -> TableClient:
        return self._tables.table(ROLLOUTS_TABLE)

    def _wrap(self, exc: AzureError) -> UpstreamError:
        return UpstreamError(f"rollout state unavailable ({type(exc).__name__})")

    def find(self, endpoint: str) -> StoredRollout | None:
        """The rollout of ``endpoint`` (the latest, any state), or ``None``."""
        try:
            entity = self._table.get_entity(_PARTITION, endpoint)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise self._wrap(exc) from exc
        return StoredRollout(Rollout.model_validate_json(entity["state"]),
                             str(entity.metadata["etag"]))  # fmt: skip

    def running(self) -> list[StoredRollout]:
        """Every running rollout."""
        try:
            rows = self._table.query_entities(
                "PartitionKey eq @pk and status eq 'running'", parameters={"pk": _PARTITION}
            )
            return [StoredRollout(Rollout.model_validate_json(e["state"]),
                                  str(e.metadata["etag"])) for e in rows]  # fmt: skip
        except AzureError as exc:
            raise self._wrap(exc) from exc

    def _entity(self, rollout: Rollout) -> dict[str, Any]:
        return {"PartitionKey": _PARTITION, "RowKey": rollout.endpoint,
                "status": rollout.state, "state": rollout.model_dump_json()}  # fmt: skip

    def create(self, rollout: Rollout, *, replacing: StoredRollout | None) -> StoredRollout:
        """Store a new rollout (over a finished one); ``Conflict`` if one appeared."""
        try:
            if replacing is None:
                meta = self._table.create_entity(self._entity(rollout))
            else:
                meta = self._replace(rollout, replacing.etag)
        except ResourceExistsError as exc:
            raise Conflict(rollout.endpoint) from exc
        except AzureError as exc:
            raise self._wrap(exc) from exc
        return StoredRollout(rollout, str(meta["etag"]))

    def update(self, stored: StoredRollout, rollout: Rollout) -> StoredRollout:
        """Replace ``stored`` with ``rollout``; ``Conflict`` if it changed meanwhile."""
        try:
            meta = self._replace(rollout, stored.etag)
        except AzureError as exc:
            raise self._wrap(exc) from exc
        return StoredRollout(rollout, str(meta["etag"]))

    def _replace(self, rollout: Rollout, etag: str) -> Any:
        try:
            return self._table.update_entity(
                self._entity(rollout),
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise Conflict(rollout.endpoint) from exc
