"""Bandit arm statistics in table storage, shared by every router instance.

Table ``banditarms``: partition = endpoint, row = deployment; properties ``pulls``,
``rewarded``, ``reward_sum``, ``reward_sq_sum`` and ``experiment`` (the fingerprint of
the arms and reward scale, ``shared.routing.bandit.fingerprint``). Each router instance
adds its counts in batches (``add``): read the entity, add, replace it only if its ETag
is unchanged, and on a conflict read again and re-add, so concurrent instances never
lose an increment.

Arms changed (or the reward scale): a row of another experiment counts as no statistics
when read, and the first ``add`` under the new fingerprint replaces it with its own
counts (ETag-guarded like any add); ``reset`` deletes the rows of other experiments
(the gate timer's sweep). An instance still on the old spec during its config refresh
(``SCOREFN_ROUTER_CONFIG_TTL_S``) may replace the row back once; the new spec's next
add wins again, so at most that window's counts are lost.
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


def _entity(endpoint: str, arm: str, stats: ArmStats, experiment: str) -> dict[str, Any]:
    return {
        "PartitionKey": endpoint,
        "RowKey": arm,
        "experiment": experiment,
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

    def _rows(self, endpoint: str) -> list[Any]:
        try:
            return list(
                self._table.query_entities("PartitionKey eq @pk", parameters={"pk": endpoint})
            )
        except AzureError as exc:
            raise UpstreamError(f"arm statistics unavailable ({type(exc).__name__})") from exc

    def read(self, endpoint: str, experiment: str) -> dict[str, ArmStats]:
        """The stored statistics of ``endpoint``'s arms in ``experiment`` (absent arms, or
        rows of another experiment: none yet)."""
        return {
            str(e["RowKey"]): _stats(e)
            for e in self._rows(endpoint)
            if e.get("experiment", "") == experiment
        }

    def add(self, endpoint: str, deltas: Mapping[str, ArmStats], experiment: str) -> None:
        """Add ``deltas`` to the stored statistics of ``experiment`` (ETag-guarded,
        retried on conflict); a row of another experiment is replaced."""
        for arm, delta in deltas.items():
            self._add_one(endpoint, arm, delta, experiment)

    def reset(self, endpoint: str, *, keep: str | None = None) -> int:
        """Delete ``endpoint``'s statistics, except those of experiment ``keep``; how many
        rows were deleted."""
        deleted = 0
        for entity in self._rows(endpoint):
            if keep is not None and entity.get("experiment", "") == keep:
                continue
            try:
                with contextlib.suppress(ResourceNotFoundError):
                    self._table.delete_entity(
                        endpoint,
                        str(entity["RowKey"]),
                        etag=entity.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                    deleted += 1
            except ResourceModifiedError:
                continue  # rewritten meanwhile (by an add of the current experiment)
            except AzureError as exc:
                raise UpstreamError(
                    f"arm statistics unavailable ({type(exc).__name__})"
                ) from exc
        return deleted

    def _add_one(self, endpoint: str, arm: str, delta: ArmStats, experiment: str) -> None:
        table = self._table
        try:
            for _ in range(_ATTEMPTS):
                try:
                    current = table.get_entity(endpoint, arm)
                except ResourceNotFoundError:
                    try:
                        table.create_entity(_entity(endpoint, arm, delta, experiment))
                        return
                    except ResourceExistsError:
                        continue  # another instance created it: add to theirs
                same = current.get("experiment", "") == experiment
                total = _stats(current).plus(delta) if same else delta
                try:
                    table.update_entity(
                        _entity(endpoint, arm, total, experiment),
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
