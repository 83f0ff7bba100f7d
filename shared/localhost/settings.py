"""Settings of the local Functions host, and the one place it touches the process environment.

``LocalHostSettings`` reads ``SCOREFN_LOCALHOST_*`` variables; command-line flags override
them (``shared.localhost.cli``). Function apps read their own *app settings* (connection
strings such as ``AzureWebJobsStorage``) from the environment, as they do on Azure and under
Core Tools; ``environment()`` is how the host sees those values, and ``export()`` is how
``--storage`` reaches a function that reads ``AzureWebJobsStorage`` itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["DEFAULT_CONNECTION", "LocalHostSettings"]

DEFAULT_CONNECTION = "AzureWebJobsStorage"
"""The app setting holding the host's storage connection string (``--storage`` sets it)."""


class LocalHostSettings(BaseSettings):
    """How one local host process serves one Function App (prefix ``SCOREFN_LOCALHOST_``)."""

    model_config = SettingsConfigDict(env_prefix="SCOREFN_LOCALHOST_", extra="ignore")

    app: str = Field(
        default="function_app:app",
        description="The FunctionApp to serve, as 'module:attribute' (e.g. function_app:app).",
    )
    app_dir: Path = Field(
        default=Path("."),
        description="Directory put first on sys.path before importing the app.",
    )
    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(default=7071, ge=0, le=65535, description="HTTP port; 0 picks a free one.")
    host_json: Path = Field(
        default=Path("host.json"),
        description="host.json to read; a missing file means Functions defaults.",
    )
    storage: SecretStr | None = Field(
        default=None,
        description=(
            "Connection string for AzureWebJobsStorage; overrides the environment variable "
            "of that name for the host and for the app."
        ),
    )
    keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description=(
            "Accepted function keys (comma-separated in the environment). With no keys and no "
            "master key, every auth level is open, as under Core Tools."
        ),
    )
    master_key: SecretStr | None = Field(
        default=None,
        description="The master key; required by authLevel=admin and accepted everywhere.",
    )
    max_body_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Largest accepted HTTP request body in bytes; larger bodies get 413.",
    )
    host_id: str | None = Field(
        default=None,
        description=(
            "Host id naming this host's blob receipts in storage; defaults to one derived "
            "from the app name, so a restarted host finds its receipts."
        ),
    )
    blob_poll_interval: float = Field(
        default=1.0, gt=0, description="Seconds between scans of a blob trigger's container."
    )
    shutdown_timeout: float = Field(
        default=10.0,
        ge=0,
        description="Seconds to wait for running invocations when stopping.",
    )
    log_level: str = Field(default="INFO", description="Logging level of the host process.")

    @field_validator("keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @staticmethod
    def environment() -> dict[str, str]:
        """A copy of the process environment: the app settings a Function App sees."""
        return dict(os.environ)

    @staticmethod
    def export(values: Mapping[str, str]) -> None:
        """Set app settings in this process's environment (before the app is imported)."""
        os.environ.update(values)
