"""Helpers shared by the integration modules that start real scoring hosts (the local
Functions host as a child process): the host itself, its readiness wait, a host.json with
fast queue polling, and the batch resource names a module keeps to itself."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from shared.localhost.ports import free_ports
from shared.localhost.runner import HostProcess, wait_for_http

ROOT = Path(__file__).resolve().parents[2]


def scoring_host(
    tmp: Path,
    storage: str,
    env: Mapping[str, str],
    *,
    port: int | None = None,
    name: str | None = None,
    host_id: str | None = None,
    host_json: Path | None = None,
) -> HostProcess:
    """A scoring host (``APP_ROLE=scoring``) of ``function_app:app`` on ``port`` (default:
    a free one), its ``AzureWebJobsStorage`` ``storage``, plus ``env``; it logs to
    ``tmp/host-<name>.log`` (``name`` defaults to the port)."""
    if port is None:
        (port,) = free_ports(1)
    return HostProcess(
        "function_app:app",
        port=port,
        cwd=ROOT,
        storage=storage,
        host_json=host_json,
        host_id=host_id,
        log_path=tmp / f"host-{port if name is None else name}.log",
        env={"APP_ROLE": "scoring", "AzureWebJobsStorage": storage, **env},
    )


def wait_ready(url: str, timeout: float = 30) -> None:
    """Until ``GET <url>/api/v2/health/ready`` answers 200 (``TimeoutError`` past ``timeout``)."""
    wait_for_http(url + "/api/v2/health/ready", timeout=timeout)


def fast_queue_host_json(tmp: Path, *, function_timeout: str | None = None) -> Path:
    """The repository's host.json with 1 s queue visibility, 0.5 s polling and batches of
    4, written to ``tmp/host.json``; ``function_timeout`` also sets ``functionTimeout``."""
    document = json.loads((ROOT / "host.json").read_text())
    if function_timeout is not None:
        document["functionTimeout"] = function_timeout
    document["extensions"]["queues"].update(
        visibilityTimeout="00:00:01", maxPollingInterval="00:00:00.5", batchSize=4
    )
    path = tmp / "host.json"
    path.write_text(json.dumps(document))
    return path


def batch_names(prefix: str) -> dict[str, str]:
    """Batch containers, jobs table and queues of a module's own (``<prefix>-input``, ...,
    table ``<prefix>jobs``), as the ``SCOREFN_BATCH_*`` settings naming them."""
    return {
        "SCOREFN_BATCH_INPUT_CONTAINER": f"{prefix}-input",
        "SCOREFN_BATCH_OUTPUT_CONTAINER": f"{prefix}-output",
        "SCOREFN_BATCH_STAGING_CONTAINER": f"{prefix}-staging",
        "SCOREFN_BATCH_JOBS_TABLE": f"{prefix}jobs",
        "SCOREFN_BATCH_QUEUE": f"{prefix}-chunks",
        "SCOREFN_BATCH_PLAN_QUEUE": f"{prefix}-plans-{{deployment}}",
    }


def create_batch_resources(storage: str, prefix: str) -> BlobServiceClient:
    """Create the input and output containers and the jobs table ``batch_names(prefix)``
    names (those already there are kept); the blob service of ``storage``."""
    service = BlobServiceClient.from_connection_string(storage)
    for name in (f"{prefix}-input", f"{prefix}-output"):
        with contextlib.suppress(ResourceExistsError):
            service.create_container(name)
    TableServiceClient.from_connection_string(storage).create_table_if_not_exists(f"{prefix}jobs")
    return service
