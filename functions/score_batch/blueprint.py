"""Batch triggers of a scoring app. Each function is one call into ``BatchService``.

- ``batch_plan``: an Event Grid-source blob trigger on ``batch-input/{endpoint}/{name}``
  (the local host scans the container instead) plans the job and fans out chunks. Its
  parameter is an SDK-type ``BlobClient`` (``azurefunctions-extensions-bindings-blob``):
  the host passes a reference, so a file of any size is planned with ranged reads.
- ``batch_plan_message``: a queue trigger on this deployment's plan queue plans a job the
  router's job API recorded (or a resumed job that had failed at planning).
- ``batch_chunk``: a queue trigger on the chunk queue scores one chunk.
- ``batch_poison``: a queue trigger on ``<queue>-poison`` records a chunk whose message
  the host dead-lettered, so its job still ends.

The models are the process's scoring runtime (shared with the online blueprint): one set
of sessions per process.
"""

from __future__ import annotations

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

from shared.batch.service import BatchService
from shared.serving.runtime import scoring_runtime
from shared.settings import BatchSettings

__all__ = ["bp", "service"]

_settings = BatchSettings()
_runtime = scoring_runtime()
service = BatchService(_settings, _runtime.plane, deployment=_runtime.settings.deployment)

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.blob_trigger(
    arg_name="client",
    path=f"{_settings.input_container}/{{endpoint}}/{{name}}",
    connection="AzureWebJobsStorage",
    source=func.BlobSource.EVENT_GRID,
)
def batch_plan(client: blob.BlobClient) -> None:
    # an SDK-type binding: the host hands over a reference, never the blob's content
    service.plan(client.blob_name)


@bp.queue_trigger(arg_name="msg", queue_name=service.plans, connection="AzureWebJobsStorage")
def batch_plan_message(msg: func.QueueMessage) -> None:
    service.plan_message(msg.get_body())


@bp.queue_trigger(arg_name="msg", queue_name=_settings.queue, connection="AzureWebJobsStorage")
def batch_chunk(msg: func.QueueMessage) -> None:
    service.process(msg.get_body(), msg.dequeue_count or 1)


@bp.queue_trigger(
    arg_name="msg", queue_name=f"{_settings.queue}-poison", connection="AzureWebJobsStorage"
)
def batch_poison(msg: func.QueueMessage) -> None:
    service.record_poison(msg.get_body())
