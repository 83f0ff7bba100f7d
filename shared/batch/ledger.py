"""The jobs table: one entity per job (PartitionKey endpoint, RowKey job id).

A job's chunks are tracked as two bitmaps (hex text): ``done`` and ``failed``. Marking a
chunk is an ETag-guarded read-modify-write, so two workers finishing chunks at once
never lose each other's bit, and a chunk marked twice (a redelivered message) counts
once. States: ``planning`` -> ``running`` -> ``committing`` -> ``succeeded`` | ``failed``
(or ``failed`` straight from planning when the file cannot be scored).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import EdmType, EntityProperty, TableClient, UpdateMode

__all__ = [
    "JobRecord",
    "JobLedger",
    "TERMINAL",
    "bit_set",
    "bit_add",
    "bit_count",
]

TERMINAL = frozenset({"succeeded", "failed"})
"""States a job never leaves."""

_MAX_REASON = 300
_MAX_PENDING_ROWS = 1500
"""Row counts are kept for done chunks at most this far past the known prefix (the
entity's string properties hold 32K characters). A chunk done further ahead is not
recorded, so the prefix stops there and the commit stages the chunks after it."""


def bit_add(bits: str, index: int) -> str:
    """Hex bitmap ``bits`` with bit ``index`` set."""
    return format(int(bits or "0", 16) | (1 << index), "x")


def bit_set(bits: str, index: int) -> bool:
    """Whether bit ``index`` of hex bitmap ``bits`` is set."""
    return bool(int(bits or "0", 16) >> index & 1)


def bit_count(bits: str) -> int:
    """How many bits of hex bitmap ``bits`` are set."""
    return int(bits or "0", 16).bit_count()


def _int(value: Any) -> int:
    """An entity's integer: Int64 properties come back as ``EntityProperty``."""
    return int(value.value if isinstance(value, EntityProperty) else value)


def _pairs(text: str) -> dict[int, int]:
    """``"3:70000,5:69998"`` -> ``{3: 70000, 5: 69998}``."""
    pairs = (item.split(":") for item in text.split(",") if item)
    return {int(c): int(n) for c, n in pairs}


@dataclass(frozen=True)
class JobRecord:
    """One job, as stored."""

    endpoint: str
    job: str
    state: str
    blob: str
    """Input blob name in the input container."""
    etag: str
    url: str
    size: int = 0
    format: str = ""
    model: str = ""
    version: str = ""
    deployment: str = ""
    id_columns: tuple[str, ...] = ()
    header_end: int = 0
    chunks: int = 0
    done: str = ""
    failed: str = ""
    failures: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    """Failed chunk -> (reason, start, end) of its range (bytes or row groups)."""
    created: float = 0.0
    planned: float = 0.0
    finished: float = 0.0
    reason: str = ""
    container: str = ""
    """Input container (empty: the app's input container)."""
    queue: str = ""
    """Chunk queue of the deployment that planned the job (resume re-enqueues there)."""
    plan_queue: str = ""
    """Plan queue of that deployment (resume of a job that failed at planning)."""
    options: dict[str, str] = field(default_factory=dict)
    """What the submitter asked for: ``model``, ``version``, ``id_columns``,
    ``output_format``; empty for a job started by a blob drop."""
    resumes: int = 0
    """How many times the job was resumed; chunk messages of older rounds are stale."""
    rows_known: int = 0
    """Leading chunks that are done and whose rows are counted in ``rows_before``: the
    first input row of every chunk up to this one is known."""
    rows_before: int = 0
    """Input rows of chunks ``0 .. rows_known - 1``: the first row of chunk ``rows_known``."""
    pending_rows: dict[int, int] = field(default_factory=dict)
    """Input rows of done chunks past ``rows_known`` (finished out of order)."""
    etag_entity: str = ""
    """The entity's ETag when read (for guarded updates)."""

    @classmethod
    def new(
        cls,
        *,
        endpoint: str,
        job: str,
        container: str,
        blob: str,
        etag: str,
        url: str,
        size: int,
        options: dict[str, str],
        deployment: str = "",
        plan_queue: str = "",
    ) -> JobRecord:
        """A job just recorded for the input blob ``container/blob`` (state ``planning``,
        created now); the job API and a blob drop both start a job with it."""
        return cls(
            endpoint=endpoint,
            job=job,
            state="planning",
            blob=blob,
            etag=etag,
            url=url,
            size=size,
            deployment=deployment,
            container=container,
            plan_queue=plan_queue,
            options=options,
            created=time.time(),
        )

    @property
    def complete(self) -> bool:
        """Every chunk is done or failed."""
        both = int(self.done or "0", 16) | int(self.failed or "0", 16)
        return self.chunks > 0 and both == (1 << self.chunks) - 1

    def chunk_ended(self, chunk: int) -> bool:
        """Whether ``chunk`` is already recorded done or failed."""
        return bit_set(self.done, chunk) or bit_set(self.failed, chunk)

    def to_entity(self) -> dict[str, Any]:
        """The table entity."""
        return {
            "PartitionKey": self.endpoint,
            "RowKey": self.job,
            "state": self.state,
            "blob": self.blob,
            "etag": self.etag,
            "url": self.url,
            "size": EntityProperty(self.size, EdmType.INT64),  # files over 2 GiB: not Int32
            "format": self.format,
            "model": self.model,
            "version": self.version,
            "deployment": self.deployment,
            "id_columns": orjson.dumps(list(self.id_columns)).decode(),
            "header_end": self.header_end,
            "chunks": self.chunks,
            "done": self.done,
            "failed": self.failed,
            "failures": orjson.dumps({str(k): v for k, v in self.failures.items()}).decode(),
            "created": self.created,
            "planned": self.planned,
            "finished": self.finished,
            "reason": self.reason,
            "container": self.container,
            "queue": self.queue,
            "plan_queue": self.plan_queue,
            "options": orjson.dumps(self.options).decode(),
            "resumes": self.resumes,
            "rows_known": self.rows_known,
            "rows_before": EntityProperty(self.rows_before, EdmType.INT64),
            "pending_rows": ",".join(f"{c}:{n}" for c, n in self.pending_rows.items()),
        }

    @classmethod
    def from_entity(cls, entity: Any) -> JobRecord:
        """Read an entity back."""
        e = dict(entity)
        return cls(
            endpoint=e["PartitionKey"],
            job=e["RowKey"],
            state=e["state"],
            blob=e["blob"],
            etag=e["etag"],
            url=e["url"],
            size=_int(e.get("size", 0)),
            format=e.get("format", ""),
            model=e.get("model", ""),
            version=e.get("version", ""),
            deployment=e.get("deployment", ""),
            id_columns=tuple(orjson.loads(e.get("id_columns") or "[]")),
            header_end=int(e.get("header_end", 0)),
            chunks=int(e.get("chunks", 0)),
            done=e.get("done", ""),
            failed=e.get("failed", ""),
            failures={
                int(k): (str(v[0]), int(v[1]), int(v[2]))
                for k, v in orjson.loads(e.get("failures") or "{}").items()
            },
            created=float(e.get("created", 0.0)),
            planned=float(e.get("planned", 0.0)),
            finished=float(e.get("finished", 0.0)),
            reason=e.get("reason", ""),
            container=e.get("container", ""),
            queue=e.get("queue", ""),
            plan_queue=e.get("plan_queue", ""),
            options={str(k): str(v) for k, v in orjson.loads(e.get("options") or "{}").items()},
            resumes=int(e.get("resumes", 0)),
            rows_known=int(e.get("rows_known", 0)),
            rows_before=_int(e.get("rows_before", 0)),
            pending_rows=_pairs(e.get("pending_rows", "")),
            etag_entity=str(entity.metadata.get("etag", "")),
        )


class JobLedger:
    """Reads and guarded updates of job entities."""

    def __init__(self, table: TableClient) -> None:
        self._table = table
        self._ready = False

    def _ensure(self) -> None:
        if not self._ready:
            with contextlib.suppress(ResourceExistsError):
                self._table.create_table()
            self._ready = True

    def create(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Insert ``record``; when the job exists already, return the stored one and False."""
        self._ensure()
        try:
            metadata = self._table.create_entity(record.to_entity())
        except ResourceExistsError:
            stored = self.get(record.endpoint, record.job)
            if stored is not None:
                return stored, False
            return self.create(record)  # deleted in between: try again
        # what was written, with the new entity's ETag (as ``update`` does): no read back
        return dataclasses.replace(record, etag_entity=str(metadata.get("etag", ""))), True

    def store_plan(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Store a planned job (state ``planning``, ``chunks`` set): insert it, or fill in
        the job when it was recorded unplanned (by the job API, or by a resume after it
        failed at planning). Returns the job as stored (another planner's when it got
        there first) and whether this call stored it."""
        stored, created = self.create(record)
        if created:
            return stored, True

        def fill(current: JobRecord) -> JobRecord | None:
            if current.state != "planning" or current.chunks > 0:
                return None
            # the submitter's options win; the planner's additions (a templated job's
            # reference model) are kept
            options = {**record.options, **current.options}
            return dataclasses.replace(
                record, created=current.created, options=options, resumes=current.resumes
            )

        return self.update(record.endpoint, record.job, fill)

    def get(self, endpoint: str, job: str) -> JobRecord | None:
        """The job, or None."""
        self._ensure()
        try:
            return JobRecord.from_entity(self._table.get_entity(endpoint, job))
        except ResourceNotFoundError:
            return None

    def recent(self, endpoint: str, limit: int = 50) -> list[JobRecord]:
        """The endpoint's jobs, newest first (at most ``limit``)."""
        self._ensure()
        jobs = [
            JobRecord.from_entity(e)
            for e in self._table.query_entities("PartitionKey eq @p", parameters={"p": endpoint})
        ]
        jobs.sort(key=lambda j: j.created, reverse=True)
        return jobs[:limit]

    def update(
        self, endpoint: str, job: str, change: Callable[[JobRecord], JobRecord | None]
    ) -> tuple[JobRecord, bool]:
        """Apply ``change`` to the stored job with an ETag guard, re-reading and retrying
        when another writer got there first. ``change`` returns None for "nothing to do".
        Returns the job as stored afterwards and whether this call changed it."""
        while True:
            current = self.get(endpoint, job)
            if current is None:
                raise LookupError(f"job {job} of endpoint {endpoint} does not exist")
            new = change(current)
            if new is None:
                return current, False
            try:
                metadata = self._table.update_entity(
                    new.to_entity(),
                    mode=UpdateMode.REPLACE,
                    etag=current.etag_entity,
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                time.sleep(0.01)
                continue
            return dataclasses.replace(new, etag_entity=str(metadata.get("etag", ""))), True

    def mark_chunk(
        self,
        endpoint: str,
        job: str,
        chunk: int,
        *,
        failure: str,
        span: tuple[int, int] = (0, 0),
    ) -> tuple[JobRecord, bool]:
        """Record ``chunk`` failed with ``failure`` (``span`` is its range), once; done
        chunks are recorded by ``mark_done``. Reasons of the first 100 failed chunks are
        kept (the entity's size is bounded)."""

        def change(current: JobRecord) -> JobRecord | None:
            if current.chunk_ended(chunk) or current.state in TERMINAL:
                return None
            failures = dict(current.failures)
            if len(failures) < 100:
                failures[chunk] = (failure[:_MAX_REASON], span[0], span[1])
            return dataclasses.replace(
                current, failed=bit_add(current.failed, chunk), failures=failures
            )

        return self.update(endpoint, job, change)

    def mark_done(
        self, endpoint: str, job: str, chunk: int, rows: int
    ) -> tuple[JobRecord, list[tuple[int, int]]]:
        """Record ``chunk`` done with its ``rows`` input rows, once. Returns the job as
        stored and the chunks whose first input row this call made known, as ``(chunk,
        first row)`` in order: each chunk is placed by exactly one call (the guarded
        update that extends the prefix over it), so one worker renders its output."""
        placed: list[tuple[int, int]] = []

        def change(current: JobRecord) -> JobRecord | None:
            placed.clear()
            if current.chunk_ended(chunk) or current.state in TERMINAL:
                return None
            done = dataclasses.replace(current, done=bit_add(current.done, chunk))
            new = _count_rows(done, chunk, rows)
            first = current.rows_before
            for c in range(current.rows_known, new.rows_known):
                placed.append((c, first))
                first += rows if c == chunk else current.pending_rows[c]
            return new

        stored, _ = self.update(endpoint, job, change)
        return stored, list(placed)

    def transition(
        self, endpoint: str, job: str, frm: frozenset[str], to: str, **fields: Any
    ) -> tuple[JobRecord, bool]:
        """Move the job from one of ``frm`` to ``to`` (setting ``fields``), once."""

        def change(current: JobRecord) -> JobRecord | None:
            if current.state not in frm:
                return None
            return dataclasses.replace(current, state=to, **fields)

        return self.update(endpoint, job, change)


def _count_rows(record: JobRecord, chunk: int, rows: int) -> JobRecord:
    """``record`` with done ``chunk``'s ``rows`` counted: the prefix of known first rows
    grows over every done chunk that now follows it."""
    pending = dict(record.pending_rows)
    if record.rows_known <= chunk < record.rows_known + _MAX_PENDING_ROWS:
        pending[chunk] = rows
    known, before = record.rows_known, record.rows_before
    while known in pending:
        before += pending.pop(known)
        known += 1
    return dataclasses.replace(record, rows_known=known, rows_before=before, pending_rows=pending)
