"""Commit a job whose chunks all ended: outputs in input row order, ``_SUCCESS`` last.

``<endpoint>/<job>/predictions.csv`` (``.parquet`` for Parquet input): the staged parts
in chunk order, their row numbers made file-wide; for CSV, the blocks workers staged as
chunks' first rows became known (``shared.batch.csvblocks``) and one block list.
``errors.jsonl``: one line per error row (``row``, ``chunk``, ``reason``), rows of failed
chunks included. ``summary.json``: status, counts, timings, deployment, model.
``_SUCCESS``: written last, only when the job succeeded; a failed job writes errors and
summary only and keeps its staging.
Every blob is written whole under a fixed name (CSV blocks are named by chunk and first
row), so committing twice is harmless.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from azure.storage.blob import BlobBlock, BlobClient, ContainerClient

from shared.batch.blobio import BlobRangeReader, BlockBlobWriter, read_range
from shared.batch.csvblocks import stage_chunk, staged_runs
from shared.batch.formats import Format
from shared.batch.ledger import JobRecord, bit_set
from shared.batch.naming import output_prefix, staging_prefix
from shared.batch.outcome import Decision, decide
from shared.batch.scoring import ROW_COLUMN
from shared.batch.staging import read_errors, read_manifest, read_part
from shared.telemetry.tracing import traced

__all__ = ["CommitResult", "commit_job", "count_line_rows", "output_format", "predictions_name"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_PARALLEL = 4
"""Staged parts a commit reads and converts at once."""


@dataclass(frozen=True)
class CommitResult:
    """What a commit decided and wrote."""

    decision: Decision
    summary: dict[str, Any]


def output_format(job: JobRecord) -> Format:
    """The format of the job's predictions: the submitter's choice, else the input's."""
    return Format(job.options.get("output_format") or job.format)


def predictions_name(job: JobRecord) -> str:
    """The job's predictions blob in the output container (workers stage CSV blocks of
    it; the commit writes it)."""
    return output_prefix(job.endpoint, job.job) + output_format(job).output_name


def count_line_rows(data: bytes) -> int:
    """Rows in whole lines of CSV / JSONL body bytes: the non-empty lines."""
    return sum(1 for line in data.split(b"\n") if line.strip())


def _failed_rows(job: JobRecord, source: BlobClient, span: tuple[int, int]) -> int:
    start, end = span
    if Format(job.format) is Format.PARQUET:
        meta = pq.ParquetFile(BlobRangeReader(source, etag=job.etag, size=job.size)).metadata
        return sum(meta.row_group(g).num_rows for g in range(start, end))
    return count_line_rows(read_range(source, job.etag, start, end - start))


@traced("scorefn.batch.commit")
def commit_job(
    job: JobRecord,
    *,
    source: BlobClient,
    staging: ContainerClient,
    output: ContainerClient,
    error_threshold: float,
    input_path: str,
) -> CommitResult:
    """Write the job's outputs; returns the decision and the summary written."""
    started = time.time()
    fmt = output_format(job)
    prefix = output_prefix(job.endpoint, job.job)
    first_rows: list[int] = []
    failed_counts: dict[int, int] = {}
    done = [c for c in range(job.chunks) if bit_set(job.done, c)]
    with ThreadPoolExecutor(_PARALLEL, thread_name_prefix="scorefn-commit") as pool:
        read = pool.map(lambda chunk: read_manifest(staging, job.job, chunk), done)
        manifests: dict[int, dict[str, Any]] = dict(zip(done, read, strict=True))
    total = 0
    for chunk in range(job.chunks):
        first_rows.append(total)
        if chunk in manifests:
            total += int(manifests[chunk]["rows"])
        else:
            _, start, end = job.failures.get(chunk, ("chunk failed", 0, 0))
            failed_counts[chunk] = _failed_rows(job, source, (start, end))
            total += failed_counts[chunk]
    error_rows = sum(int(m["errors"]) for m in manifests.values())
    failed_rows = error_rows + sum(failed_counts.values())
    decision = decide(
        total,
        failed_rows,
        {c: job.failures.get(c, ("chunk failed", 0, 0))[0] for c in failed_counts},
        error_threshold,
    )
    _write_errors(
        job,
        staging,
        output.get_blob_client(prefix + "errors.jsonl"),
        manifests,
        failed_counts,
        first_rows,
    )
    if decision.status == "succeeded":
        _write_predictions(
            job,
            fmt,
            staging,
            output.get_blob_client(predictions_name(job)),
            first_rows,
            manifests,
        )
    finished = time.time()
    summary: dict[str, Any] = {
        "job": job.job,
        "endpoint": job.endpoint,
        "status": decision.status,
        "reason": decision.reason,
        "input": input_path,
        "etag": job.etag,
        "format": job.format,
        "resumes": job.resumes,
        "deployment": job.deployment,
        "model": f"{job.model}:{job.version}",
        "rows": total,
        "predicted": total - failed_rows,
        "failed_rows": failed_rows,
        "chunks": job.chunks,
        "failed_chunks": [
            {
                "chunk": c,
                "rows": [first_rows[c], first_rows[c] + n - 1] if n else [],
                "reason": job.failures.get(c, ("chunk failed", 0, 0))[0],
            }
            for c, n in sorted(failed_counts.items())
        ],
        "error_threshold": error_threshold,
        "outputs": {
            "predictions": predictions_name(job) if decision.status == "succeeded" else None,
            "errors": prefix + "errors.jsonl",
        },
        "timings": {
            "created": job.created,
            "planned": job.planned,
            "committed": finished,
            "plan_s": round(max(0.0, job.planned - job.created), 3),
            "total_s": round(finished - job.created, 3),
            "scoring_s": round(sum(float(m["seconds"]) for m in manifests.values()), 3),
            "commit_s": round(finished - started, 3),
        },
    }
    output.upload_blob(
        prefix + "summary.json", orjson.dumps(summary, option=orjson.OPT_INDENT_2), overwrite=True
    )
    if decision.status == "succeeded":
        output.upload_blob(prefix + "_SUCCESS", b"", overwrite=True)
    return CommitResult(decision, summary)


def _write_errors(
    job: JobRecord,
    staging: ContainerClient,
    target: BlobClient,
    manifests: dict[int, dict[str, Any]],
    failed_counts: dict[int, int],
    first_rows: list[int],
) -> None:
    writer = BlockBlobWriter(target)
    for chunk in range(job.chunks):
        base = first_rows[chunk]
        if chunk in manifests:
            if not manifests[chunk]["errors"]:
                continue
            for row, reason in read_errors(staging, job.job, chunk):
                writer.write(orjson.dumps({"row": base + row, "chunk": chunk, "reason": reason}))
                writer.write(b"\n")
        else:
            reason = f"chunk {chunk} failed: " + job.failures.get(chunk, ("unknown", 0, 0))[0]
            for row in range(failed_counts[chunk]):
                writer.write(orjson.dumps({"row": base + row, "chunk": chunk, "reason": reason}))
                writer.write(b"\n")
    writer.commit()


def _ordered(
    pool: ThreadPoolExecutor, work: Callable[[int], T], items: range, window: int
) -> Iterator[T]:
    """``work(i)`` for each of ``items``, run in ``pool`` with at most ``window`` in flight,
    yielded in order (memory stays bounded by the window, not the job)."""
    pending: deque[Future[T]] = deque()
    for item in items:
        pending.append(pool.submit(work, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _write_predictions(
    job: JobRecord,
    fmt: Format,
    staging: ContainerClient,
    target: BlobClient,
    first_rows: list[int],
    manifests: dict[int, dict[str, Any]],
) -> None:
    """Parts are read and converted ``_PARALLEL`` at a time (pyarrow and the network
    release the GIL). CSV: the blocks workers staged for each chunk
    (``shared.batch.csvblocks``) are committed in order, any chunk without them staged
    here first. Parquet: parts are written in order through one ``ParquetWriter``."""
    with ThreadPoolExecutor(_PARALLEL, thread_name_prefix="scorefn-commit") as pool:
        if fmt is Format.PARQUET:
            schema = read_part(staging, job.job, 0).schema if job.chunks else None

            def part(chunk: int) -> pa.Table:
                table = read_part(staging, job.job, chunk)
                rows = pc.add(table[ROW_COLUMN], pa.scalar(first_rows[chunk], pa.int64()))
                table = table.set_column(0, ROW_COLUMN, rows)
                return table if schema is None else table.cast(schema)

            writer = BlockBlobWriter(target)
            parquet: pq.ParquetWriter | None = None
            for table in _ordered(pool, part, range(job.chunks), _PARALLEL):
                if parquet is None:
                    parquet = pq.ParquetWriter(pa.PythonFile(writer, mode="w"), table.schema)
                parquet.write_table(table)
            if parquet is not None:
                parquet.close()
            writer.commit()
            return

        runs = staged_runs(target)

        def blocks(chunk: int) -> list[str]:
            staged = runs.get((chunk, first_rows[chunk]))
            if staged is not None:
                return staged
            if chunk and not manifests[chunk]["predicted"]:
                return []  # no CSV text (chunk 0 still has the header)
            table = read_part(staging, job.job, chunk)
            return stage_chunk(target, table, chunk, first_rows[chunk])

        block_list = [
            BlobBlock(block_id=block)
            for ids in _ordered(pool, blocks, range(job.chunks), _PARALLEL)
            for block in ids
        ]
    target.commit_block_list(block_list)
    staged = sum(1 for c in range(job.chunks) if (c, first_rows[c]) in runs)
    log.info("job %s: %d of %d chunks' CSV staged by workers", job.job, staged, job.chunks)


def delete_staging(staging: ContainerClient, job: str) -> None:
    """Remove a succeeded job's staged parts (best effort: leftovers are harmless)."""
    names = [b.name for b in staging.list_blobs(name_starts_with=staging_prefix(job))]
    for start in range(0, len(names), 256):
        try:
            staging.delete_blobs(*names[start : start + 256])
        except Exception as exc:
            log.warning("could not delete staging of job %s: %s", job, exc)
            return
