"""Which deployment served each request id, in table storage, for feedback.

Table ``banditrequests``: partition = ``<endpoint>-<00..15>`` (a hash of the request id
spreads one endpoint over 16 partitions), row = sha256 of the request id (any string a
caller sends is a valid key that way). Properties: ``deployment``, ``served_at`` (epoch
seconds), ``rewarded``. The router writes ids in batches (``write``: one transaction per
partition, 100 entities at most); feedback ``claim``s an id with an ETag-guarded merge,
so a duplicate is counted once even when two instances receive it at the same moment.
Entities older than the feedback window are deleted by ``sweep`` (the gate timer's, at
most ``limit`` rows a run).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.errors import NotFoundError, UpstreamError
from shared.rollout.tables import REQUESTS_TABLE, Tables

__all__ = ["Claim", "ClaimResult", "RequestLedger", "Served", "expired", "unknown"]

_PARTITIONS: Final = 16
_BATCH: Final = 100


@dataclass(frozen=True, slots=True)
class Served:
    """One request a deployment served."""

    endpoint: str
    request_id: str
    deployment: str
    served_at: float
    rewarded: bool = False


ClaimResult = Literal["counted", "duplicate", "unknown", "expired"]


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of feedback for one request id: ``counted`` (first feedback),
    ``duplicate``, ``unknown`` or ``expired`` (then ``deployment`` is ''; ``age_s`` is
    the id's age when it was found)."""

    result: ClaimResult
    deployment: str = ""
    age_s: float = 0.0

    @property
    def duplicate(self) -> bool:
        """Feedback for this id was counted before."""
        return self.result == "duplicate"

    def error(self, endpoint: str, request_id: str, window_s: float) -> NotFoundError:
        """The 404 of an ``unknown`` or ``expired`` claim."""
        if self.result == "expired":
            return expired(endpoint, request_id, self.age_s, window_s)
        return unknown(endpoint, request_id, window_s)


def _keys(endpoint: str, request_id: str) -> tuple[str, str]:
    digest = hashlib.sha256(request_id.encode()).hexdigest()
    return f"{endpoint}-{int(digest[:4], 16) % _PARTITIONS:02d}", digest[:48]


def unknown(endpoint: str, request_id: str, window_s: float) -> NotFoundError:
    """The error for an id this endpoint never served (or forgot)."""
    return NotFoundError(
        f"request id {request_id!r} is unknown to endpoint {endpoint!r}: it was not served "
        f"by this endpoint within the feedback window ({window_s:g} s), or has expired; "
        "send the x-request-id of a scoring response"
    )


def expired(endpoint: str, request_id: str, age_s: float, window_s: float) -> NotFoundError:
    """The error for an id served longer ago than the window."""
    return NotFoundError(
        f"request id {request_id!r} of endpoint {endpoint!r} has expired: it was served "
        f"{age_s:.0f} s ago and feedback is taken for {window_s:g} s"
    )


class RequestLedger:
    """Remembers served request ids; answers feedback claims."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables

    @property
    def _table(self) -> TableClient:
        return self._tables.table(REQUESTS_TABLE)

    def write(self, served: Iterable[Served]) -> None:
        """Store these ids (one transaction per partition and 100 ids)."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for s in served:
            pk, rk = _keys(s.endpoint, s.request_id)
            groups.setdefault(pk, []).append({
                "PartitionKey": pk, "RowKey": rk, "deployment": s.deployment,
                "served_at": float(s.served_at), "rewarded": s.rewarded,
            })  # fmt: skip
        table = self._table
        try:
            for entities in groups.values():
                # One id twice in a batch is refused by the service: keep the last.
                unique = list({e["RowKey"]: e for e in entities}.values())
                for i in range(0, len(unique), _BATCH):
                    table.submit_transaction([("upsert", e) for e in unique[i : i + _BATCH]])
        except AzureError as exc:
            raise UpstreamError(f"request ledger unavailable ({type(exc).__name__})") from exc

    def claim(self, endpoint: str, request_id: str, *, window_s: float, now: float) -> Claim:
        """Mark ``request_id`` rewarded (once); the claim says whether it counted."""
        pk, rk = _keys(endpoint, request_id)
        table = self._table
        try:
            for _ in range(5):
                try:
                    entity = table.get_entity(pk, rk)
                except ResourceNotFoundError:
                    return Claim("unknown")
                age = now - float(entity["served_at"])
                if age > window_s:
                    return Claim("expired", age_s=age)
                deployment = str(entity["deployment"])
                if entity.get("rewarded"):
                    return Claim("duplicate", deployment, age)
                try:
                    table.update_entity(
                        {"PartitionKey": pk, "RowKey": rk, "rewarded": True},
                        mode=UpdateMode.MERGE,
                        etag=entity.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                except ResourceModifiedError:
                    continue  # claimed (or rewritten) meanwhile: look again
                return Claim("counted", deployment, age)
        except AzureError as exc:
            raise UpstreamError(f"request ledger unavailable ({type(exc).__name__})") from exc
        raise UpstreamError(f"request id {request_id!r} kept changing; send it again")

    def sweep(self, endpoint: str, *, before: float, limit: int = 1000) -> int:
        """Delete ``endpoint``'s ids served before ``before``, at most ``limit`` of them
        (partitions in order: a run that stops at the limit leaves the rest for the next,
        which finds the first partitions already clean); how many were deleted."""
        table = self._table
        deleted = 0
        try:
            for i in range(_PARTITIONS):
                if deleted >= limit:
                    break
                pk = f"{endpoint}-{i:02d}"
                rows = table.query_entities(
                    "PartitionKey eq @pk and served_at lt @before",
                    parameters={"pk": pk, "before": float(before)},
                    select=["PartitionKey", "RowKey"],
                    results_per_page=_BATCH,
                )
                keys: list[str] = []
                for e in rows:
                    keys.append(str(e["RowKey"]))
                    if deleted + len(keys) >= limit:
                        break
                for j in range(0, len(keys), _BATCH):
                    chunk = keys[j : j + _BATCH]
                    table.submit_transaction(
                        [("delete", {"PartitionKey": pk, "RowKey": k}) for k in chunk]
                    )
                    deleted += len(chunk)
        except AzureError as exc:
            raise UpstreamError(f"request ledger unavailable ({type(exc).__name__})") from exc
        return deleted
