"""Settings: one pydantic ``BaseSettings`` per role, read from the environment once.

These are the only environment reads in scorefn. In Azure they are app settings (the
Bicep templates set exactly these names); locally the stack launcher sets them per
process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.storage_clients import BATCH_NAMES, COLLECT_NAMES, Service, check_storage

__all__ = [
    "AppSettings",
    "BatchSettings",
    "RouterSettings",
    "ScoringSettings",
    "TELEMETRY_EXPORTERS",
    "TelemetrySettings",
]


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
    hop_audience: str | None = Field(
        default=None,
        description=(
            "hop authentication: the audience (api://... or client id) of the router's "
            "tokens; when set, every route but health and docs needs such a bearer token "
            "(401 otherwise); unset = off"
        ),
    )
    hop_tenant: str | None = Field(
        default=None,
        description="hop authentication: tenant id whose issuer signs hop tokens (required)",
    )
    hop_local_issuer: str | None = Field(
        default=None,
        description=(
            "hop authentication in local mode: base URL of the dev token issuer "
            "(http://127.0.0.1:7070) trusted instead of Entra ID; never set in Azure"
        ),
    )
    hop_allowed_clients: str = Field(
        default="",
        description=(
            "hop authentication: comma-separated client (application) or object ids of "
            "the identities allowed to call (the router's); empty = any for the audience"
        ),
    )
    model_store: str = Field(
        default="",
        description=(
            "many models: blob service URL (https://<account>.blob.core.windows.net, reached "
            "with the managed identity) or connection string of the account whose "
            "model_store_container holds packages as <name>/<version>/...; set, models load "
            "on demand into a bounded working set instead of all from models_dir at start"
        ),
    )
    model_store_client_id: str | None = Field(
        default=None,
        description=(
            "client id of the user-assigned managed identity that reads a model_store URL; "
            "unset = DefaultAzureCredential"
        ),
    )
    model_store_container: str = Field(
        default="models", description="container of model packages (scorefn models push)"
    )
    model_store_models: str = Field(
        default="*",
        description=(
            "models served from the store: comma-separated pattern[:policy] rules, pattern a "
            "name or fnmatch pattern (sales-*), policy latest (default), all, or versions "
            "joined by | (1|3); the first matching rule wins"
        ),
    )
    model_store_refresh_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="how often the store is re-listed (a pushed version serves after it)",
    )
    model_cache_dir: Path = Field(
        default=Path(".scorefn/model-cache"),
        description="local folder of downloaded, verified packages",
    )
    max_loaded_models: int = Field(
        default=20, ge=1, description="most models loaded at once (least recently used go)"
    )
    max_memory_mb: int = Field(
        default=4096,
        ge=1,
        description=(
            "most memory of loaded models, each measured as resident memory growth across "
            "its load and warm-up (at least its ONNX files' size)"
        ),
    )

    @model_validator(mode="after")
    def _model_store_is_consistent(self) -> ScoringSettings:
        if self.model_store or self.model_store_client_id:
            is_url = self.model_store.strip().lower().startswith(("https://", "http://"))
            check_storage(
                connection_string=None if is_url else self.model_store,
                urls={"blob": self.model_store.strip() if is_url else None},
                client_id=self.model_store_client_id,
                needs=("blob",),
                names={
                    "connection_string": "SCOREFN_MODEL_STORE",
                    "blob": "SCOREFN_MODEL_STORE",
                    "client_id": "SCOREFN_MODEL_STORE_CLIENT_ID",
                },
            )
        return self


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
    hop_audience: str | None = Field(
        default=None,
        description=(
            "audience of the scoring apps' hop authentication (api://... or client id): "
            "forwarded and mirrored requests carry a bearer token for it from the router's "
            "managed identity; unset = no token is sent"
        ),
    )
    hop_client_id: str | None = Field(
        default=None,
        description=(
            "client id of the user-assigned managed identity hop tokens come from; "
            "unset = the system-assigned identity"
        ),
    )
    blobs_url: str | None = Field(
        default=None,
        description=(
            "blob service URL (https://<account>.blob.core.windows.net) holding the rollout "
            "lock, reached with the managed identity; unset = the storage connection string"
        ),
    )
    state_flush_s: float = Field(
        default=1.0,
        gt=0,
        description=(
            "how often an instance writes bandit counts, request ids and rollout outcome "
            "windows to table storage (and re-reads arm statistics)"
        ),
    )
    outcome_bucket_s: int = Field(
        default=10, ge=1, le=3600, description="length of one rollout outcome bucket (s)"
    )
    rollout_schedule: str = Field(
        default="*/10 * * * * *",
        description="NCRONTAB schedule of the timer that evaluates rollout gates",
    )
    rollout_lease_s: int = Field(
        default=15,
        ge=15,
        le=60,
        description="blob lease of the one instance acting on rollouts (renewed each run)",
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
        description=(
            "connection string of the account holding batch blobs, queues and jobs table "
            "(local, Azurite); unused when the service URLs are set"
        ),
    )
    blobs_url: str | None = Field(
        default=None,
        description=(
            "blob service URL (https://<account>.blob.core.windows.net); with queues_url and "
            "tables_url, batch storage is reached with a managed identity instead of storage"
        ),
    )
    queues_url: str | None = Field(
        default=None, description="queue service URL (https://<account>.queue.core.windows.net)"
    )
    tables_url: str | None = Field(
        default=None, description="table service URL (https://<account>.table.core.windows.net)"
    )
    client_id: str | None = Field(
        default=None,
        description=(
            "client id of the user-assigned managed identity used with the URLs; "
            "unset = DefaultAzureCredential"
        ),
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
    plan_queue: str = Field(
        default="batch-plans-{deployment}",
        description=(
            "queue of plan messages (job API, resume) of a deployment; '{deployment}' is "
            "replaced by the deployment's name (the router sends there, the app listens)"
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
        le=50_000,  # a block blob commits at most 50,000 blocks: one or more per chunk
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
    max_concurrent_chunks: int = Field(
        default=2,
        ge=1,
        description=(
            "chunks one worker process scores at once (their reads and writes overlap; more "
            "leased messages wait to score); bounds CPU oversubscription"
        ),
    )

    @model_validator(mode="after")
    def _storage_is_consistent(self) -> BatchSettings:
        urls: dict[Service, str | None] = {
            "blob": self.blobs_url,
            "queue": self.queues_url,
            "table": self.tables_url,
        }
        check_storage(
            connection_string=self.storage,
            urls=urls,
            client_id=self.client_id,
            names=BATCH_NAMES,
        )
        return self


TELEMETRY_EXPORTERS = ("none", "console", "otlp", "prometheus", "azure_monitor")
"""Values of ``SCOREFN_TELEMETRY_EXPORTER`` (a comma-separated list)."""


class TelemetrySettings(BaseSettings):
    """Traces, metrics and data collection of any app (prefix ``SCOREFN_TELEMETRY_``).

    Off by default: with ``exporter`` ``none``, no connection string and ``collect_rate``
    0, ``shared.telemetry.setup_telemetry`` installs nothing and the hot path pays one
    flag check. In Azure, ``APPLICATIONINSIGHTS_CONNECTION_STRING`` (set by Bicep) turns
    on the Azure Monitor exporter for traces and metrics.
    """

    model_config = SettingsConfigDict(env_prefix="SCOREFN_TELEMETRY_", extra="ignore")

    exporter: str = Field(
        default="none",
        description=(
            "comma-separated exporters: none | console (traces and metrics as JSON lines, "
            "to console_path or stdout) | otlp (OTLP/HTTP to otlp_endpoint) | prometheus "
            "(metrics only, scraped at GET /metrics of the local host) | azure_monitor"
        ),
    )
    console_path: str = Field(
        default="", description="file the console exporter appends to; empty = stdout"
    )
    otlp_endpoint: str = Field(
        default="http://127.0.0.1:4318",
        description="OTLP/HTTP collector base URL (traces to /v1/traces, metrics to /v1/metrics)",
    )
    sample_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description=(
            "share of new traces recorded (a caller's sampled traceparent is always followed)"
        ),
    )
    export_interval_s: float = Field(
        default=10.0, gt=0, description="how often console/OTLP/Azure Monitor metrics are pushed"
    )
    service_name: str = Field(
        default="", description="service.name of the resource; empty = scorefn-<role>"
    )
    endpoint: str = Field(
        default="",
        description=(
            "scoring apps: the endpoint this deployment serves, for metric labels and "
            "collected data paths (empty: labels '' and paths 'default')"
        ),
    )
    applicationinsights_connection_string: str | None = Field(
        default=None,
        validation_alias="APPLICATIONINSIGHTS_CONNECTION_STRING",
        description="Application Insights connection string; when set, Azure Monitor is on",
    )
    collect_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description=(
            "data collection: share of scoring requests whose inputs and outputs are "
            "written to blob (0 = off)"
        ),
    )
    collect_storage: str = Field(
        default="UseDevelopmentStorage=true",
        validation_alias=AliasChoices("SCOREFN_TELEMETRY_COLLECT_STORAGE", "AzureWebJobsStorage"),
        description=(
            "connection string of the account receiving collected data (local, Azurite); "
            "unused when collect_blobs_url is set"
        ),
    )
    collect_blobs_url: str | None = Field(
        default=None,
        description=(
            "blob service URL (https://<account>.blob.core.windows.net) receiving collected "
            "data, reached with a managed identity instead of collect_storage"
        ),
    )
    collect_client_id: str | None = Field(
        default=None,
        description=(
            "client id of the user-assigned managed identity used with collect_blobs_url; "
            "unset = DefaultAzureCredential"
        ),
    )
    collect_container: str = Field(
        default="data-collection",
        description="container of collected data: <endpoint>/<deployment>/yyyy/mm/dd/hh/*.jsonl",
    )

    collect_max_queue_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description=(
            "bytes of records held in memory awaiting upload; records past it are dropped "
            "and counted (storage slow or down costs at most this much memory)"
        ),
    )
    collect_max_record_bytes: int = Field(
        default=1024 * 1024,
        ge=256,
        description="largest record (request plus response) collected; larger are dropped",
    )
    collect_flush_s: float = Field(
        default=5.0, gt=0, description="longest time a collected record waits for upload"
    )

    @model_validator(mode="after")
    def _azure_monitor_has_a_connection_string(self) -> TelemetrySettings:
        if "azure_monitor" in self.exporter.split(",") and not (
            self.applicationinsights_connection_string
        ):
            raise ValueError(
                "SCOREFN_TELEMETRY_EXPORTER names azure_monitor but "
                "APPLICATIONINSIGHTS_CONNECTION_STRING (the Application Insights resource's "
                "connection string) is not set"
            )
        return self

    @model_validator(mode="after")
    def _collect_storage_is_consistent(self) -> TelemetrySettings:
        check_storage(
            connection_string=self.collect_storage,
            urls={"blob": self.collect_blobs_url},
            client_id=self.collect_client_id,
            needs=("blob",),
            names=COLLECT_NAMES,
        )
        return self

    @field_validator("exporter")
    @classmethod
    def _known_exporters(cls, value: str) -> str:
        names = [part.strip().lower() for part in value.split(",") if part.strip()]
        unknown = sorted(set(names) - set(TELEMETRY_EXPORTERS))
        if unknown:
            raise ValueError(
                f"unknown exporter(s) {', '.join(unknown)}; expected a comma-separated "
                f"list of {', '.join(TELEMETRY_EXPORTERS)}"
            )
        return ",".join(names) or "none"
