"""Settings: one pydantic ``BaseSettings`` per role, read from the environment once.

These are the only environment reads in scorefn. In Azure they are app settings (the
Bicep templates set exactly these names); locally the stack launcher sets them per
process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["AppSettings", "BatchSettings", "RouterSettings", "ScoringSettings"]


class AppSettings(BaseSettings):
    """Which blueprints this function app registers."""

    model_config = SettingsConfigDict(extra="ignore")

    app_role: Literal["router", "scoring", "all"] = Field(
        default="all",
        validation_alias="APP_ROLE",
        description="router | scoring | all: which blueprints function_app.py registers",
    )


class ScoringSettings(BaseSettings):
    """Settings of a scoring app (one deployment)."""

    model_config = SettingsConfigDict(env_prefix="SCOREFN_", extra="ignore")

    models_dir: Path = Field(
        default=Path("models"), description="folder of model packages (model.yaml or Triton)"
    )
    models: str = Field(
        default="",
        description=(
            "comma-separated models this deployment serves, as name or name:version "
            "(e.g. 'fraud:1,vision'); empty = every package in models_dir"
        ),
    )
    deployment: str = Field(default="local", description="deployment name, for headers/logs")
    max_body_bytes: int = Field(
        default=100 * 1024 * 1024,
        ge=1,
        description="largest request body accepted; larger bodies get 413 before parsing",
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="per-request deadline; past it the caller gets 504"
    )
    batching: bool = Field(
        default=True, description="dynamic batching on/off (off: each request runs alone)"
    )
    require_cuda: bool = Field(
        default=False,
        description=(
            "fail start-up unless onnxruntime can really run on CUDA here (GPU deployments: "
            "a replica without a working GPU must not serve slowly on CPU)"
        ),
    )


class RouterSettings(BaseSettings):
    """Settings of the router app (an endpoint's stable URL)."""

    model_config = SettingsConfigDict(env_prefix="SCOREFN_ROUTER_", extra="ignore")

    storage: str = Field(
        default="UseDevelopmentStorage=true",
        validation_alias=AliasChoices("SCOREFN_ROUTER_STORAGE", "AzureWebJobsStorage"),
        description="connection string of the storage account holding the endpoints table",
    )
    tables_url: str | None = Field(
        default=None,
        description=(
            "table service URL (https://<account>.table.core.windows.net); when set, the "
            "endpoints table is reached with the app's managed identity instead of storage"
        ),
    )
    local_issuer: str | None = Field(
        default=None,
        description=(
            "local mode: base URL of the dev token issuer (http://127.0.0.1:7070) whose "
            "tokens are trusted instead of Entra ID's; never set in Azure"
        ),
    )
    config_ttl_s: float = Field(
        default=2.0, ge=0, description="how long an endpoint's stored config is cached"
    )
    port_shift: int = Field(
        default=0, description="added to each deployment's local_port (a shifted local stack)"
    )
    timeout_s: float = Field(
        default=30.0, gt=0, description="deadline of a forwarded request; past it: 504"
    )
    connect_timeout_s: float = Field(
        default=2.0, gt=0, description="connect timeout to a deployment (then failover)"
    )
    max_connections: int = Field(
        default=256, ge=1, description="pooled connections to all deployments together"
    )
    max_concurrent: int = Field(
        default=512, ge=1, description="requests in flight per endpoint; more get 429"
    )
    mirror_max_in_flight: int = Field(
        default=64, ge=1, description="mirror copies in flight; more are dropped and counted"
    )
    mirror_timeout_s: float = Field(
        default=10.0, gt=0, description="deadline of a mirrored copy (it never delays callers)"
    )
    max_body_bytes: int = Field(
        default=100 * 1024 * 1024,
        ge=1,
        description="largest request body forwarded; larger bodies get 413",
    )


class BatchSettings(BaseSettings):
    """Settings of batch scoring on a scoring app (prefix ``SCOREFN_BATCH_``).

    A file dropped in ``<input_container>/<endpoint>/...`` becomes a job in
    ``jobs_table``, fanned out as chunk messages on ``queue`` and committed to
    ``<output_container>/<endpoint>/<job-id>/``.
    """

    model_config = SettingsConfigDict(env_prefix="SCOREFN_BATCH_", extra="ignore")

    storage: str = Field(
        default="UseDevelopmentStorage=true",
        validation_alias=AliasChoices("SCOREFN_BATCH_STORAGE", "AzureWebJobsStorage"),
        description="connection string of the account holding batch blobs, queue and jobs table",
    )
    input_container: str = Field(
        default="batch-input", description="container watched for input files"
    )
    output_container: str = Field(
        default="batch-output", description="container receiving committed job outputs"
    )
    staging_container: str = Field(
        default="batch-staging", description="container of per-chunk parts before commit"
    )
    jobs_table: str = Field(default="jobs", description="table holding one entity per job")
    queue: str = Field(
        default="batch-chunks",
        description=(
            "queue of chunk messages; its poison queue is '<queue>-poison'. Give each "
            "deployment that plans batch jobs its own queue"
        ),
    )
    endpoints: str = Field(
        default="",
        description="comma-separated endpoints this app plans batch jobs for; empty = all",
    )
    chunk_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="target bytes of one CSV / JSONL chunk (cut at the next line end)",
    )
    chunk_rows: int = Field(
        default=200_000,
        ge=1,
        description="target rows of one Parquet chunk (whole row groups, at least one)",
    )
    max_chunks: int = Field(
        default=20_000,
        ge=1,
        le=100_000,
        description="most chunks per job; larger files get proportionally larger chunks",
    )
    id_columns: str = Field(
        default="",
        description=(
            "comma-separated input columns copied to predictions; empty = every column "
            "that the model does not use"
        ),
    )
    error_threshold: float = Field(
        default=0.1,
        ge=-1,
        le=1,
        description=(
            "largest share of failed rows (0..1) for a job to succeed; -1 = never fail a "
            "job for bad rows"
        ),
    )
    max_dequeue_count: int = Field(
        default=5,
        ge=1,
        description=(
            "host.json extensions.queues.maxDequeueCount: on this attempt a failing chunk "
            "is recorded failed before the host moves its message to the poison queue"
        ),
    )
    model_wait_s: float = Field(
        default=300.0, gt=0, description="how long a worker waits for the models to load"
    )
