"""Bandit arm statistics in table storage, shared by every router instance.

Table ``banditarms``: partition = endpoint, row = deployment; properties ``pulls``,
``rewarded``, ``reward_sum``, ``reward_sq_sum``. Each router instance adds its counts
in batches (``add``): read the entity, add, replace it only if its ETag is unchanged,
and on a conflict read again and re-add, so concurrent instances never lose an increment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, UpdateMode

from shared.errors import UpstreamError
from shared.rollout.tables import ARMS_TABLE, Tables
from shared.routing.bandit import ArmStats

__all__ = ["ArmStore"]

_ATTEMPTS: Final = 20


def _stats(entity: Mapping[str, Any]) -> ArmStats:
    return ArmStats(
        int(entity.get("pulls", 0)),
        int(entity.get("rewarded", 0)),
        float(entity.get("reward_sum", 0.0)),
        float(entity.get("reward_sq_sum", 0.0)),
    )


def _entity(endpoint: str, arm: str, stats: ArmStats) -> dict[str, Any]:
    return {
        "PartitionKey": endpoint,
        "RowKey": arm,
        "pulls": stats.pulls,
        "rewarded": stats.rewarded,
        "reward_sum": float(stats.reward_sum),
        "reward_sq_sum": float(stats.reward_sq_sum),
    }


class ArmStore:
    """Reads and adds to the arm statistics of endpoints."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables

    @property
    def _table(self) -> TableClient:
        return self._tables.table(ARMS_TABLE)

    def read(self, endpoint: str) -> dict[str, ArmStats]:
        """The stored statistics of ``endpoint``'s arms (absent arms: none yet)."""
        try:
            rows = self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": endpoint}
            )
            return {str(e["RowKey"]): _stats(e) for e in rows}
        except AzureError as exc:
            raise UpstreamError(f"arm statistics unavailable ({type(exc).__name__})") from exc

    def add(self, endpoint: str, deltas: Mapping[str, ArmStats]) -> None:
        """Add ``deltas`` to the stored statistics (ETag-guarded, retried on conflict)."""
        for arm, delta in deltas.items():
            self._add_one(endpoint, arm, delta)

    def reset(self, endpoint: str) -> None:
        """Forget the statistics of ``endpoint`` (a fresh experiment)."""
        for arm in self.read(endpoint):
            with contextlib.suppress(ResourceNotFoundError):
                self._table.delete_entity(endpoint, arm)

    def _add_one(self, endpoint: str, arm: str, delta: ArmStats) -> None:
        table = self._table
        try:
            for _ in range(_ATTEMPTS):
                try:
                    current = table.get_entity(endpoint, arm)
                except ResourceNotFoundError:
                    try:
                        table.create_entity(_entity(endpoint, arm, delta))
                        return
                    except ResourceExistsError:
                        continue  # another instance created it: add to theirs
                total = _stats(current).plus(delta)
                try:
                    table.update_entity(
                        _entity(endpoint, arm, total),
                        mode=UpdateMode.REPLACE,
                        etag=current.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                    return
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue
        except AzureError as exc:
            raise UpstreamError(f"arm statistics unavailable ({type(exc).__name__})") from exc
        raise UpstreamError(f"arm statistics of {endpoint}/{arm} kept changing; retried later")
