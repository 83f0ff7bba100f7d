"""The endpoint spec: ``endpoints/<name>.yaml``, validated by one pydantic model.

An endpoint is a stable URL in front of deployments; each deployment is one scoring app
(one model package, or a few, with its compute and batching). Every other part (the
local stack, the router, infra) reads this model rather than the YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import PackageError

__all__ = ["AuthSpec", "DeploymentSpec", "EndpointSpec", "load_endpoint"]

_NAME = r"^[a-z][a-z0-9-]{0,31}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthSpec(_Strict):
    """How callers authenticate. ``none`` is for local use only."""

    mode: Literal["entra", "key", "none"] = "entra"
    tenants: tuple[str, ...] = Field(default=(), description="accepted tenant ids")
    audiences: tuple[str, ...] = Field(default=(), description="client id or api://... URIs")
    token_versions: tuple[Literal["1.0", "2.0"], ...] = ("2.0",)
    invoke_role: str = Field(default="Endpoint.Invoke", description="app role to score")
    admin_role: str = Field(default="Endpoint.Admin", description="app role to change traffic")


class DeploymentSpec(_Strict):
    """One deployment: a scoring app serving ``models`` (the first is /score's default)."""

    name: str = Field(pattern=_NAME)
    models: tuple[str, ...] = Field(
        min_length=1, description="'name' or 'name:version' of packages under models/"
    )
    compute: Literal["cpu", "gpu-t4", "gpu-a100"] = "cpu"
    url: str | None = Field(default=None, description="scoring app base URL (in Azure)")
    local_port: int | None = Field(default=None, ge=1024, le=65535, description="local stack")
    batching: bool = True
    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int = Field(default=1, ge=1)

    def base_url(self, port_shift: int = 0) -> str:
        """Where the deployment's scoring app answers: ``url``, else the local port
        (plus ``port_shift``) on 127.0.0.1. ``ValueError`` when it has neither."""
        if self.url:
            return self.url.rstrip("/")
        if self.local_port is None:
            raise ValueError(f"deployment {self.name!r} has neither url nor local_port")
        return f"http://127.0.0.1:{self.local_port + port_shift}"


class EndpointSpec(_Strict):
    """A validated endpoint."""

    name: str = Field(pattern=_NAME)
    description: str = ""
    auth: AuthSpec = AuthSpec()
    deployments: tuple[DeploymentSpec, ...] = Field(min_length=1)
    traffic: dict[str, int] = Field(description="deployment -> percent; sums to 100")
    mirror: dict[str, int] = Field(
        default_factory=dict, description="deployment -> percent of traffic copied to it"
    )

    @model_validator(mode="after")
    def _consistent(self) -> EndpointSpec:
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            raise ValueError(f"deployment names must be unique; got {', '.join(names)}")
        ports = [d.local_port for d in self.deployments if d.local_port is not None]
        if len(set(ports)) != len(ports):
            raise ValueError(f"local_port values must be unique; got {ports}")
        for kind, table in (("traffic", self.traffic), ("mirror", self.mirror)):
            for dep, pct in table.items():
                if dep not in names:
                    raise ValueError(
                        f"{kind} names deployment {dep!r}; deployments are {', '.join(names)}"
                    )
                if not 0 <= pct <= 100:
                    raise ValueError(f"{kind}[{dep}] is {pct}; expected 0 to 100")
        auth = self.auth
        if auth.mode == "entra" and (not auth.tenants or not auth.audiences):
            raise ValueError(
                "auth mode entra needs at least one tenant and one audience; "
                f"got tenants {list(auth.tenants)}, audiences {list(auth.audiences)}"
            )
        active = [dep for dep, pct in self.mirror.items() if pct > 0]
        if len(active) > 1:
            raise ValueError(
                f"mirror sends copies to {', '.join(active)}; at most one deployment may "
                "receive mirrored traffic"
            )
        total = sum(self.traffic.values())
        if total != 100:
            raise ValueError(f"traffic weights sum to {total}; they must sum to 100")
        return self

    def deployment(self, name: str) -> DeploymentSpec:
        """The deployment called ``name``; ``KeyError`` if none."""
        for d in self.deployments:
            if d.name == name:
                return d
        raise KeyError(name)


def load_endpoint(path: Path) -> EndpointSpec:
    """Read and validate an endpoint YAML; ``PackageError`` names the file and field."""
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PackageError(str(path), "", "file not found") from exc
    except yaml.YAMLError as exc:
        raise PackageError(str(path), "", f"invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise PackageError(str(path), "", "expected a mapping at the top level")
    try:
        return EndpointSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise PackageError(str(path), loc, err["msg"]) from exc
