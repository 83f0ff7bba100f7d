"""Settings: one pydantic ``BaseSettings`` per role, read from the environment once.

These are the only environment reads in scorefn. In Azure they are app settings (the
Bicep templates set exactly these names); locally the stack launcher sets them per
process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["AppSettings", "ScoringSettings"]


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
