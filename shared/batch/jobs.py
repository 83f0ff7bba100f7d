"""Batch jobs through storage alone: submit, status, recent jobs, resume.

Used by the router's job API and by ``scorefn batch``; imports neither numpy nor pyarrow
(the router stays light). Submitting records the job (id from the blob URL + ETag, as a
blob drop does) and sends a ``PlanMessage`` to the chosen deployment's plan queue, whose
scoring app plans it with the same planner as a drop. Resuming a failed job re-enqueues
only the chunks that are not done, from the plan the planner staged
(``batch-staging/<job>/plan.json``); finished chunks keep their staged parts.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import orjson
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContainerClient
from azure.storage.queue import TextBase64EncodePolicy
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.batch.formats import Format, format_for
from shared.batch.ledger import JobLedger, JobRecord, bit_count, bit_set
from shared.batch.messages import ChunkMessage, PlanMessage
from shared.batch.modeltemplate import ModelTemplate
from shared.batch.naming import job_id, output_prefix, plan_blob, plan_queue_name
from shared.errors import BatchInputError, DecodeError, NotFoundError, RequestError
from shared.settings import BatchSettings
from shared.storage_clients import StorageClients

__all__ = ["BatchJobs", "JobRequest", "job_view", "pick_deployment", "read_plan", "write_plan"]


class JobRequest(BaseModel):
    """Body of ``POST /api/endpoints/{e}/jobs`` (and ``scorefn batch submit``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str = Field(
        min_length=1,
        description="a blob name in the input container (<endpoint>/...), or the URL of a "
        "blob in the same storage account",
    )
    deployment: str | None = Field(
        default=None, description="deployment that scores it; default: the endpoint's largest"
    )
    model: str | None = Field(
        default=None,
        description="name or name:version of its model, or a model-name template naming a "
        "partition column, e.g. sales-{store_id}: each row is scored by the model its "
        "store_id value names",
    )
    id_columns: list[str] | None = Field(
        default=None, description="input columns copied to predictions"
    )
    output_format: Literal["csv", "parquet"] | None = Field(
        default=None, description="predictions format; default: Parquet for Parquet input"
    )

    @classmethod
    def loads(cls, body: bytes) -> JobRequest:
        """Parse a request body; ``DecodeError`` names the field and the problem."""
        try:
            return cls.model_validate_json(body or b"{}")
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "body"
            raise DecodeError(f"job request: {where}: {err['msg']}") from exc


def pick_deployment(
    deployments: Sequence[str], traffic: Mapping[str, int], asked: str | None
) -> str:
    """The deployment that scores a job: ``asked`` (one of ``deployments``), else the one
    with the most traffic (the first listed on a tie)."""
    if asked is not None:
        if asked not in deployments:
            raise BatchInputError(
                f"deployment {asked!r} is not one of the endpoint's: {', '.join(deployments)}"
            )
        return asked
    return max(deployments, key=lambda d: (traffic.get(d, 0), -deployments.index(d)))


def write_plan(staging: ContainerClient, job: str, spans: list[tuple[int, int]]) -> None:
    """Stage a job's chunk ranges (the same content each time it is planned)."""
    with contextlib.suppress(ResourceExistsError):
        staging.create_container()
    staging.upload_blob(plan_blob(job), orjson.dumps({"chunks": spans}), overwrite=True)


def read_plan(staging: ContainerClient, job: str) -> list[tuple[int, int]]:
    """A job's staged chunk ranges; ``RequestError`` when the plan is gone."""
    try:
        data = staging.download_blob(plan_blob(job)).readall()
    except ResourceNotFoundError as exc:
        raise RequestError(
            f"job {job}: its plan ({staging.container_name}/{plan_blob(job)}) is missing, so "
            "it cannot be resumed; upload the file again to score it as a new job"
        ) from exc
    return [(int(a), int(b)) for a, b in orjson.loads(data)["chunks"]]


def job_view(record: JobRecord, summary: dict[str, Any] | None, *, output: str) -> dict[str, Any]:
    """The job as the API and the CLI show it."""
    done, failed = bit_count(record.done), bit_count(record.failed)
    view: dict[str, Any] = {
        "job": record.job,
        "endpoint": record.endpoint,
        "state": record.state,
        "input": f"{record.container}/{record.blob}" if record.container else record.blob,
        "deployment": record.deployment,
        "model": f"{record.model}:{record.version}" if record.model else None,
        "format": record.format or None,
        "options": record.options,
        "progress": {"chunks": record.chunks, "done": done, "failed": failed},
        "failed_chunks": [
            {"chunk": c, "reason": why} for c, (why, _, _) in sorted(record.failures.items())
        ],
        "reason": record.reason or None,
        "resumes": record.resumes,
        "created": record.created,
        "planned": record.planned or None,
        "finished": record.finished or None,
        "output": f"{output}/{output_prefix(record.endpoint, record.job)}",
    }
    if summary is not None:
        view["rows"] = {
            "total": summary.get("rows"),
            "predicted": summary.get("predicted"),
            "failed": summary.get("failed_rows"),
        }
        view["outputs"] = summary.get("outputs")
        view["failed_chunks"] = summary.get("failed_chunks", view["failed_chunks"])
    return view


class BatchJobs:
    """Job operations on one storage account (clients built once)."""

    def __init__(self, settings: BatchSettings) -> None:
        self.settings = settings
        clients = StorageClients.for_batch(settings)  # connection string or URLs + identity
        self.blobs = clients.blob_service()
        self.staging = self.blobs.get_container_client(settings.staging_container)
        self.output = self.blobs.get_container_client(settings.output_container)
        self.ledger = JobLedger(clients.table(settings.jobs_table))
        self.queues = clients.queue_service()

    # ------------------------------------------------------------------ read
    def get(self, endpoint: str, job: str) -> JobRecord:
        """The job; ``NotFoundError`` naming it when there is none."""
        record = self.ledger.get(endpoint, job)
        if record is None:
            raise NotFoundError(f"job {job!r} of endpoint {endpoint!r} not found")
        return record

    def view(self, record: JobRecord) -> dict[str, Any]:
        """``job_view`` with the counts of its ``summary.json`` once it ended."""
        summary = None
        if record.state in ("succeeded", "failed"):
            path = output_prefix(record.endpoint, record.job) + "summary.json"
            with contextlib.suppress(ResourceNotFoundError):
                summary = orjson.loads(self.output.download_blob(path).readall())
        return job_view(record, summary, output=self.settings.output_container)

    def recent(self, endpoint: str, limit: int = 50) -> list[dict[str, Any]]:
        """Short views of the endpoint's newest jobs."""
        return [
            {
                "job": r.job,
                "state": r.state,
                "input": r.blob,
                "progress": {
                    "chunks": r.chunks,
                    "done": bit_count(r.done),
                    "failed": bit_count(r.failed),
                },
                "created": r.created,
                "reason": r.reason or None,
            }
            for r in self.ledger.recent(endpoint, limit)
        ]

    # ------------------------------------------------------------------ submit
    def _locate(self, endpoint: str, text: str) -> tuple[str, str]:
        """(container, blob name) of a request's ``input``."""
        if text.startswith(("http://", "https://")):
            base = self.blobs.url.rstrip("/") + "/"
            parts = urlsplit(text)
            plain = f"{parts.scheme}://{parts.netloc}{parts.path}"
            if not plain.lower().startswith(base.lower()):
                raise BatchInputError(
                    f"input {text!r} is not a blob of this storage account ({base})"
                )
            container, _, name = unquote(plain[len(base) :]).partition("/")
        else:
            container, name = self.settings.input_container, text.lstrip("/")
        if not container or not name or name.endswith("/"):
            raise BatchInputError(f"input {text!r} names no blob")
        if container == self.settings.input_container and name.split("/", 1)[0] != endpoint:
            raise BatchInputError(
                f"input {container}/{name} is under another endpoint's folder; files in "
                f"{container} for endpoint {endpoint!r} are under {endpoint}/"
            )
        format_for(name)  # refuse an unknown extension now, with the allowed ones
        return container, name

    def submit(
        self, endpoint: str, request: JobRequest, *, deployment: str
    ) -> tuple[JobRecord, bool]:
        """Record the job of the input's current version and ask ``deployment`` to plan it.
        Returns the job and whether it is new (the same blob version gives the same job)."""
        ModelTemplate.parse(request.model)  # a malformed model-name template: refused now
        container, name = self._locate(endpoint, request.input)
        blob = self.blobs.get_blob_client(container, name)
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError as exc:
            raise BatchInputError(f"input {container}/{name} does not exist") from exc
        etag = str(props.etag)
        job = job_id(blob.url, etag)
        existing = self.ledger.get(endpoint, job)
        if existing is not None:
            return existing, False
        options: dict[str, str] = {}
        if request.model:
            model, _, version = request.model.partition(":")
            options["model"] = model
            if version:
                options["version"] = version
        if request.id_columns is not None:
            options["id_columns"] = ",".join(request.id_columns)
        if request.output_format:
            options["output_format"] = Format(request.output_format).value
        record = JobRecord.new(
            endpoint=endpoint,
            job=job,
            container=container,
            blob=name,
            etag=etag,
            url=blob.url,
            size=int(props.size),
            options=options,
            deployment=deployment,
            plan_queue=plan_queue_name(self.settings.plan_queue, deployment),
        )
        stored, created = self.ledger.create(record)
        if created:
            self._send(stored.plan_queue, PlanMessage(endpoint=endpoint, job=job).dumps())
        return stored, created

    # ------------------------------------------------------------------ resume
    def resume(self, endpoint: str, job: str) -> tuple[JobRecord, int]:
        """Resume a failed (or stuck running) job: its failed chunks are cleared and every
        chunk that is not done is sent again; done chunks are not scored again. A job that
        failed at planning is planned again. Returns the job and the chunks sent."""
        record = self.get(endpoint, job)
        if record.state in ("succeeded", "committing"):
            raise RequestError(f"job {job} is {record.state}; only failed or running jobs resume")
        if record.state == "planning" or record.chunks == 0:
            if not record.plan_queue:
                raise RequestError(
                    f"job {job} failed at planning and names no plan queue (it predates "
                    "resume); upload the file again"
                )
            stored, _ = self.ledger.update(
                endpoint,
                job,
                lambda r: dataclasses.replace(
                    r, state="planning", reason="", finished=0.0, resumes=r.resumes + 1
                )
                if r.state in ("failed", "planning")
                else None,
            )
            self._send(stored.plan_queue, PlanMessage(endpoint=endpoint, job=job).dumps())
            return stored, 0
        if not record.queue:
            raise RequestError(f"job {job} names no chunk queue (it predates resume)")
        spans = read_plan(self.staging, job)
        if len(spans) != record.chunks:
            raise RequestError(
                f"job {job}: its staged plan has {len(spans)} chunks, the job {record.chunks}"
            )

        def reopen(current: JobRecord) -> JobRecord | None:
            if current.state not in ("failed", "running"):
                return None
            return dataclasses.replace(
                current,
                state="running",
                failed="",
                failures={},
                reason="",
                finished=0.0,
                resumes=current.resumes + 1,
            )

        stored, changed = self.ledger.update(endpoint, job, reopen)
        if not changed:
            raise RequestError(f"job {job} is {stored.state}; only failed or running jobs resume")
        todo = [c for c in range(stored.chunks) if not bit_set(stored.done, c)]
        # every chunk done (failed for error rows only): one done chunk's message makes a
        # worker commit again, with its current error threshold
        for chunk in todo or [0]:
            start, end = spans[chunk]
            message = ChunkMessage(
                endpoint=endpoint,
                job=job,
                chunk=chunk,
                start=start,
                end=end,
                round=stored.resumes,
            )
            self._send(stored.queue, message.dumps())
        return stored, len(todo)

    def _send(self, queue: str, body: bytes) -> None:
        client = self.queues.get_queue_client(
            queue, message_encode_policy=TextBase64EncodePolicy()
        )
        text = body.decode("utf-8")
        try:
            client.send_message(text)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                client.create_queue()
            client.send_message(text)
