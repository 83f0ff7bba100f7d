"""Batch jobs end to end: plan a dropped file, score one chunk, record a poisoned chunk.

``BatchService`` is built once per scoring process and holds its storage clients. The
blob trigger calls ``plan``, the chunk queue trigger ``process``, the poison queue
trigger ``record_poison``; whoever ends the last chunk commits (``commit.commit_job``).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobClient
from azure.storage.queue import TextBase64EncodePolicy

from shared.batch.blobio import BlobRangeReader, read_range
from shared.batch.commit import commit_job, delete_staging, output_format, predictions_name
from shared.batch.csvblocks import stage_chunk
from shared.batch.formats import Format, format_for
from shared.batch.jobs import write_plan
from shared.batch.ledger import TERMINAL, JobLedger, JobRecord
from shared.batch.mapping import bind_inputs, check_columns, pick_id_columns
from shared.batch.messages import ChunkMessage, PlanMessage
from shared.batch.modeltemplate import ModelTemplate
from shared.batch.naming import job_id, output_prefix, parse_input_name, plan_queue_name
from shared.batch.partitioned import chunk_scorer, plan_template, planned_record
from shared.batch.planning import chunk_target, line_chunks, row_group_chunks
from shared.batch.reading import ChunkRows, read_csv_chunk, read_jsonl_chunk, read_parquet_chunk
from shared.batch.retry import Action, action_for
from shared.batch.staging import read_part, write_chunk
from shared.errors import BatchInputError, NotFoundError
from shared.pipeline.spec import PackageSpec
from shared.serving.dataplane import DataPlane
from shared.settings import BatchSettings
from shared.storage_clients import StorageClients
from shared.telemetry.state import TELEMETRY
from shared.telemetry.tracing import current_traceparent, message_carrier, traced

__all__ = ["BatchService"]

log = logging.getLogger(__name__)

_WINDOW = 64 * 1024
_PLAN_THREADS = 8
"""Ranged reads (cut search) and message sends a planner runs at once."""
_STAGE_THREADS = 4
"""Placed chunks a worker stages as CSV blocks at once."""
_PLANNER_LEASE_S = 60.0
"""A job still planning this long after it was recorded lost its planner (seconds)."""


class BatchService:
    """Plans, scores and commits batch jobs for the models of one data plane."""

    def __init__(self, settings: BatchSettings, plane: DataPlane, *, deployment: str) -> None:
        self.settings = settings
        self.plane = plane
        self.deployment = deployment
        clients = StorageClients.for_batch(settings)  # connection string or URLs + identity
        service = clients.blob_service()
        self._blobs = service
        self.inputs = service.get_container_client(settings.input_container)
        self.staging = service.get_container_client(settings.staging_container)
        self.output = service.get_container_client(settings.output_container)
        self.ledger = JobLedger(clients.table(settings.jobs_table))
        self.queue = clients.queue(settings.queue, message_encode_policy=TextBase64EncodePolicy())
        self.plans = plan_queue_name(settings.plan_queue, deployment)
        """This deployment's plan queue (the job API and resume send plan messages there)."""
        self._endpoints = {e.strip() for e in settings.endpoints.split(",") if e.strip()}
        self._containers_ready = False
        self._scoring = threading.BoundedSemaphore(settings.max_concurrent_chunks)
        # chunks held in memory at once (read, scored or being written): twice the scoring
        # bound, so reads and writes overlap scoring while a host that leased many
        # messages (host.json batchSize) does not read them all at once
        self._in_memory = threading.BoundedSemaphore(2 * settings.max_concurrent_chunks)

    def _ensure_containers(self) -> None:
        if self._containers_ready:
            return
        for container in (self.staging, self.output):
            with contextlib.suppress(ResourceExistsError):
                container.create_container()
        with contextlib.suppress(ResourceExistsError):
            self.queue.create_queue()
        self._containers_ready = True

    # ------------------------------------------------------------------ plan
    def plan(self, blob_name: str) -> JobRecord | None:
        """Plan the job of the current version of ``blob_name`` (a name in the input
        container) and enqueue its chunks. A duplicate event finds the job and does
        nothing; a file that cannot be scored gives a failed job with its reason.
        Returns the job, or None for a blob that is not a batch input of this app."""
        parsed = parse_input_name(blob_name)
        where = f"{self.settings.input_container}/{blob_name}"
        if parsed is None:
            log.warning("%s: not <endpoint>/<file>; ignored", where)
            return None
        if self._endpoints and parsed.endpoint not in self._endpoints:
            return None
        self._ensure_containers()
        blob = self.inputs.get_blob_client(blob_name)
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError:
            log.info("%s was deleted before it was planned", where)
            return None
        etag = str(props.etag)
        job = job_id(blob.url, etag)
        existing = self.ledger.get(parsed.endpoint, job)
        if existing is not None and existing.state != "planning":
            log.info(
                "job %s of %s exists (%s); duplicate event ignored", job, where, existing.state
            )
            return existing
        options = {"model": parsed.model or "", "version": parsed.version or ""}
        record = existing or JobRecord.new(
            endpoint=parsed.endpoint,
            job=job,
            container=self.settings.input_container,
            blob=blob_name,
            etag=etag,
            url=blob.url,
            size=int(props.size),
            options={k: v for k, v in options.items() if v},
        )
        return self._plan_job(record)

    def plan_message(self, body: bytes) -> JobRecord | None:
        """Plan the recorded job a plan message names (job API, resume); None when it
        is gone or already planned."""
        message = PlanMessage.loads(body)
        record = self.ledger.get(message.endpoint, message.job)
        if record is None or record.state != "planning":
            return record
        self._ensure_containers()
        return self._plan_job(record)

    def _source(self, job: JobRecord) -> BlobClient:
        container = job.container or self.settings.input_container
        return self._blobs.get_blob_client(container, job.blob)

    @traced("scorefn.batch.plan")
    def _plan_job(self, record: JobRecord) -> JobRecord:
        where = f"{record.container or self.settings.input_container}/{record.blob}"
        record = dataclasses.replace(
            record, deployment=self.deployment, queue=self.settings.queue, plan_queue=self.plans
        )
        try:
            record, spans = self._plan(record, self._source(record), where)
        except BatchInputError as exc:
            return self._fail_planning(record, str(exc), where)
        stored, won = self.ledger.store_plan(record)
        if stored.state != "planning" or stored.chunks != len(spans):
            return stored  # another planner stored its plan first and sends its chunks
        if not won:
            # another planner (a second host saw the same drop) stored this plan and is
            # sending its chunks; sending them too would score every chunk twice. Wait for
            # the job to start running; a job still planning after the lease lost its
            # planner, and its chunks are sent again below.
            deadline = stored.created + _PLANNER_LEASE_S
            while stored.state == "planning" and time.time() < deadline:
                time.sleep(0.2)
                current = self.ledger.get(stored.endpoint, stored.job)
                if current is None:
                    return stored
                stored = current
            if stored.state != "planning":
                return stored
        write_plan(self.staging, stored.job, spans)
        traceparent = current_traceparent()

        def send(chunk: int) -> None:
            a, b = spans[chunk]
            message = ChunkMessage(
                endpoint=stored.endpoint,
                job=stored.job,
                chunk=chunk,
                start=a,
                end=b,
                round=stored.resumes,
                traceparent=traceparent,
            )
            self.queue.send_message(message.dumps().decode("utf-8"))

        with ThreadPoolExecutor(_PLAN_THREADS, thread_name_prefix="scorefn-plan") as pool:
            list(pool.map(send, range(len(spans))))  # the first error propagates
        stored, _ = self.ledger.transition(
            stored.endpoint, stored.job, frozenset({"planning"}), "running", planned=time.time()
        )
        log.info("job %s: %s planned in %d chunk(s)", stored.job, where, stored.chunks)
        self._maybe_commit(stored, was_committing=False)
        return stored

    def _fail_planning(self, record: JobRecord, reason: str, where: str) -> JobRecord:
        log.warning("job %s failed at planning: %s", record.job, reason)
        now = time.time()
        summary = {
            "job": record.job,
            "endpoint": record.endpoint,
            "status": "failed",
            "reason": reason,
            "input": where,
            "etag": record.etag,
            "deployment": self.deployment,
            "rows": 0,
            "predicted": 0,
            "failed_rows": 0,
            "chunks": 0,
            "failed_chunks": [],
            "timings": {"created": record.created, "committed": now},
        }
        self.output.upload_blob(
            output_prefix(record.endpoint, record.job) + "summary.json",
            orjson.dumps(summary, option=orjson.OPT_INDENT_2),
            overwrite=True,
        )
        failed = dataclasses.replace(record, state="failed", reason=reason, finished=now)
        stored, created = self.ledger.create(failed)
        if not created and stored.state == "planning":
            stored, _ = self.ledger.transition(
                stored.endpoint,
                stored.job,
                frozenset({"planning"}),
                "failed",
                reason=reason,
                finished=now,
            )
        return stored

    def _spec(self, model: str | None, version: str | None) -> PackageSpec:
        self.plane.wait_loaded(self.settings.model_wait_s)
        name = model or self.plane.default_model
        if name is None:
            why = f": {self.plane.discovery_error}" if self.plane.discovery_error else ""
            raise BatchInputError(f"this deployment serves no model{why}")
        try:
            return self.plane.entry(name, version).spec
        except NotFoundError as exc:
            raise BatchInputError(str(exc)) from exc

    def _plan(
        self, record: JobRecord, blob: BlobClient, where: str
    ) -> tuple[JobRecord, list[tuple[int, int]]]:
        fmt = format_for(where)
        template = ModelTemplate.parse(record.options.get("model"), record.options.get("version"))
        spec = (
            plan_template(template, self.plane, wait_s=self.settings.model_wait_s)
            if template is not None
            else self._spec(record.options.get("model"), record.options.get("version"))
        )
        label = f"{spec.name}:{spec.version}"
        bindings = bind_inputs(spec)
        size, etag = record.size, record.etag
        header_end = 0
        if fmt is Format.PARQUET:
            try:
                file = pq.ParquetFile(BlobRangeReader(blob, etag=etag, size=size))
            except (pa.ArrowException, OSError) as exc:
                raise BatchInputError(f"{where}: not a valid Parquet file: {exc}") from exc
            available = file.schema_arrow.names
            if file.metadata.num_rows == 0:
                raise BatchInputError(f"{where}: the file has no rows")
            groups = [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)]
            target = chunk_target(sum(groups), self.settings.chunk_rows, self.settings.max_chunks)
            spans = [(c.first, c.first + c.count) for c in row_group_chunks(groups, target)]
        else:
            if size == 0:
                need = "a header line and at least one row" if fmt is Format.CSV else "a row"
                raise BatchInputError(f"{where}: the file is empty; expected {need}")

            def next_line_end(pos: int) -> int:
                while pos < size:
                    data = read_range(blob, etag, pos, min(_WINDOW, size - pos))
                    found = data.find(b"\n")
                    if found >= 0:
                        return pos + found + 1
                    pos += len(data)
                return size

            if fmt is Format.CSV:
                header_end = next_line_end(0)
                header = read_range(blob, etag, 0, header_end).decode("utf-8", "replace")
                available = next(csv.reader([header.rstrip("\r\n")]), [])
                rest = read_range(blob, etag, header_end, min(_WINDOW, size - header_end))
                if not rest.strip() and header_end + len(rest) >= size:
                    raise BatchInputError(f"{where}: the file has a header but no rows")
            else:
                first = read_range(blob, etag, 0, next_line_end(0)).strip()
                try:
                    document = orjson.loads(first)
                except orjson.JSONDecodeError as exc:
                    raise BatchInputError(
                        f"{where}: line 1 is not a JSON object ({exc}); JSON Lines input "
                        "holds one object per line"
                    ) from exc
                if not isinstance(document, dict):
                    raise BatchInputError(
                        f"{where}: line 1 is a JSON {type(document).__name__}; JSON Lines "
                        "input holds one object per line"
                    )
                available = list(document)
            target = chunk_target(size, self.settings.chunk_bytes, self.settings.max_chunks)
            with ThreadPoolExecutor(_PLAN_THREADS, thread_name_prefix="scorefn-plan") as pool:
                spans = line_chunks(size, header_end, target, next_line_end, each=pool.map)
        check_columns(available, bindings, where=where, model=label)
        configured = record.options.get("id_columns", self.settings.id_columns)
        ids = pick_id_columns(available, bindings, configured, where=where)
        record = dataclasses.replace(
            record,
            format=fmt.value,
            model=spec.name,
            version=spec.version,
            id_columns=tuple(ids),
            header_end=header_end,
            chunks=len(spans),
        )
        if template is not None:  # many models: each row's model from its partition value
            record = planned_record(record, template, spec, available)
        return record, spans

    # ------------------------------------------------------------------ score
    @traced("scorefn.batch.chunk", carrier=lambda self, body, *_: message_carrier(body))
    def process(self, body: bytes, dequeue_count: int) -> None:
        """Score one chunk message (attempt ``dequeue_count``); commit if it was the last.

        Raises to have the host retry (and, on the last attempt, dead-letter) the message,
        as ``retry.ACTIONS`` says."""
        message = ChunkMessage.loads(body)
        job = self.ledger.get(message.endpoint, message.job)
        if job is None:
            log.warning("chunk %d of unknown job %s dropped", message.chunk, message.job)
            return
        if job.state in TERMINAL:
            return
        was_committing = job.state == "committing"
        if not job.chunk_ended(message.chunk):
            try:
                manifest, table = self._score(job, message)
            except Exception as exc:
                if message.round < job.resumes:
                    log.info("stale chunk %d of job %s dropped", message.chunk, job.job)
                    return
                action = action_for(exc, dequeue_count, self.settings.max_dequeue_count)
                if action is Action.RETRY:
                    raise
                reason = str(exc) or type(exc).__name__
                if action is Action.DEAD_LETTER:
                    reason = f"failed {dequeue_count} times; last error: {reason}"
                log.error("job %s chunk %d failed: %s", job.job, message.chunk, reason)
                job, _ = self.ledger.mark_chunk(
                    job.endpoint,
                    job.job,
                    message.chunk,
                    failure=reason,
                    span=(message.start, message.end),
                )
                self._maybe_commit(job, was_committing=False)
                if action is Action.DEAD_LETTER:
                    raise
                return
            log.info(
                "job %s chunk %d: %d rows, %d errors in %.2f s (read %.2f s)",
                job.job,
                message.chunk,
                manifest["rows"],
                manifest["errors"],
                manifest["seconds"],
                manifest["read_s"],
            )
            job, placed = self.ledger.mark_done(
                job.endpoint, job.job, message.chunk, int(manifest["rows"])
            )
            self._stage_placed(job, placed, message.chunk, table)
            del table
        self._maybe_commit(job, was_committing=was_committing)

    def _stage_placed(
        self, job: JobRecord, placed: list[tuple[int, int]], chunk: int, table: pa.Table
    ) -> None:
        """Stage the CSV blocks of the chunks this worker's update placed (their first
        input row became known): ``chunk``'s own from ``table``, others' from their staged
        parts. A failure only leaves the work to the commit."""
        if not placed or output_format(job) is Format.PARQUET:
            return
        target = self.output.get_blob_client(predictions_name(job))

        def stage(item: tuple[int, int]) -> None:
            placed_chunk, first_row = item
            try:
                if placed_chunk == chunk:
                    stage_chunk(target, table, placed_chunk, first_row)
                    return
                with self._in_memory:  # another chunk's part: within the memory bound
                    part = read_part(self.staging, job.job, placed_chunk)
                    stage_chunk(target, part, placed_chunk, first_row)
            except Exception as exc:  # the commit stages what is missing
                log.warning(
                    "job %s: CSV of chunk %d not staged (%s); the commit will",
                    job.job,
                    placed_chunk,
                    exc,
                )

        if len(placed) == 1:
            stage(placed[0])
            return
        # a chunk that closed a gap places every done chunk after it: stage them at once
        # (pyarrow and the network release the GIL)
        with ThreadPoolExecutor(_STAGE_THREADS, thread_name_prefix="scorefn-stage") as pool:
            list(pool.map(stage, placed))

    def _score(
        self, job: JobRecord, message: ChunkMessage
    ) -> tuple[dict[str, float | int], pa.Table]:
        with self._in_memory:
            return self._score_held(job, message)

    def _score_held(
        self, job: JobRecord, message: ChunkMessage
    ) -> tuple[dict[str, float | int], pa.Table]:
        started = time.perf_counter()
        self.plane.wait_loaded(self.settings.model_wait_s)
        scorer = chunk_scorer(job, self.plane, wait_s=self.settings.model_wait_s)
        bindings = scorer.bindings
        blob = self._source(job)
        fmt = Format(job.format)
        chunk: ChunkRows
        if fmt is Format.PARQUET:
            file = pq.ParquetFile(BlobRangeReader(blob, etag=job.etag, size=job.size))
            chunk = read_parquet_chunk(file, message.start, message.end, bindings, job.id_columns)
        else:
            body = read_range(blob, job.etag, message.start, message.end - message.start)
            if fmt is Format.CSV:
                header = read_range(blob, job.etag, 0, job.header_end)
                chunk = read_csv_chunk(header, body, bindings, job.id_columns)
            else:
                chunk = read_jsonl_chunk(body, bindings, job.id_columns)
        read_s = time.perf_counter() - started
        with self._scoring:  # reads and writes overlap; CPU-bound scoring is bounded
            scored = scorer.score(chunk)
        seconds = time.perf_counter() - started
        manifest: dict[str, float | int] = {
            "chunk": message.chunk,
            "rows": chunk.rows,
            "predicted": scored.table.num_rows,
            "errors": len(scored.errors),
            "seconds": round(seconds, 4),
            "read_s": round(read_s, 4),
        }
        write_chunk(self.staging, job.job, message.chunk, scored.table, scored.errors, manifest)
        return manifest, scored.table

    # ------------------------------------------------------------------ poison
    def record_poison(self, body: bytes) -> None:
        """A chunk message reached ``<queue>-poison``: record its chunk failed (once) and
        commit when it was the last."""
        message = ChunkMessage.loads(body)
        job = self.ledger.get(message.endpoint, message.job)
        if job is None or job.state in TERMINAL or job.chunk_ended(message.chunk):
            return
        if message.round < job.resumes:
            return  # a message of a round before the job was resumed
        job, _ = self.ledger.mark_chunk(
            job.endpoint,
            job.job,
            message.chunk,
            failure=(
                f"its message reached queue '{self.settings.queue}-poison' after "
                f"{self.settings.max_dequeue_count} attempts"
            ),
            span=(message.start, message.end),
        )
        self._maybe_commit(job, was_committing=False)

    # ------------------------------------------------------------------ commit
    def _maybe_commit(self, job: JobRecord, *, was_committing: bool) -> None:
        """Commit when every chunk ended: the caller that moves the job to ``committing``
        commits; a redelivered message that found it ``committing`` commits again (the
        committer may have died; outputs are rewritten whole under the same names)."""
        if not job.complete:
            return
        if job.state == "running":
            job, won = self.ledger.transition(
                job.endpoint, job.job, frozenset({"running"}), "committing"
            )
            if not won:
                return
        elif not (job.state == "committing" and was_committing):
            return
        result = commit_job(
            job,
            source=self._source(job),
            staging=self.staging,
            output=self.output,
            error_threshold=self.settings.error_threshold,
            input_path=f"{job.container or self.settings.input_container}/{job.blob}",
        )
        decision = result.decision
        self.ledger.transition(
            job.endpoint,
            job.job,
            frozenset({"committing"}),
            decision.status,
            reason=decision.reason,
            finished=time.time(),
        )
        log.info("job %s %s %s", job.job, decision.status, decision.reason)
        if TELEMETRY.metrics is not None:
            summary = result.summary
            TELEMETRY.metrics.batch_job(
                job.endpoint,
                self.deployment,
                f"{job.model}:{job.version}",
                decision.status,
                predicted=int(summary.get("predicted", 0)),
                failed=int(summary.get("failed_rows", 0)),
                seconds=time.time() - job.created,
            )
        if decision.status == "succeeded":
            delete_staging(self.staging, job.job)
