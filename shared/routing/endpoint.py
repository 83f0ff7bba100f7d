"""The endpoint spec: ``endpoints/<name>.yaml``, validated by one pydantic model.

An endpoint is a stable URL in front of deployments; each deployment is one scoring app
(one model package, or a few, with its compute and batching). Every other part (the
local stack, the router, infra) reads this model rather than the YAML.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import PackageError

__all__ = [
    "AuthSpec",
    "BanditSpec",
    "DeploymentSpec",
    "EndpointSpec",
    "GateSpec",
    "RolloutSpec",
    "check_steps",
    "load_endpoint",
]

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


class BanditSpec(_Strict):
    """Bandit routing (``traffic.mode: bandit``): traffic shifts to the deployments whose
    answers earn the most reward (``POST .../feedback``). Arms are the deployments with
    traffic > 0; ``traffic`` is their fixed split during the warm-up."""

    policy: Literal["thompson", "epsilon_greedy"] = Field(
        default="thompson", description="Thompson sampling, or epsilon-greedy"
    )
    reward: Literal["binary", "real"] = Field(
        default="binary",
        description="binary: 0/1 rewards, Beta posterior; real: any number in the range, Normal",
    )
    reward_min: float = Field(default=0.0, description="smallest accepted real reward")
    reward_max: float = Field(default=1.0, description="largest accepted real reward")
    epsilon: float = Field(default=0.1, ge=0, le=1, description="epsilon_greedy: explore share")
    min_share: float = Field(
        default=0.02, ge=0, le=0.5, description="share of traffic every arm keeps (no starving)"
    )
    warmup_requests: int = Field(
        default=100, ge=0, description="requests routed by the fixed traffic weights first"
    )
    feedback_window_s: float = Field(
        default=3600.0, gt=0, le=7 * 86400, description="how long a request id takes feedback"
    )

    @model_validator(mode="after")
    def _range(self) -> BanditSpec:
        if self.reward_max <= self.reward_min:
            raise ValueError(
                f"bandit reward_max ({self.reward_max}) must be above reward_min "
                f"({self.reward_min})"
            )
        return self


class GateSpec(_Strict):
    """Thresholds a rollout step must hold, candidate against baseline, same window."""

    min_requests: int = Field(
        default=100, ge=1, description="requests each side needs in a window; fewer = wait"
    )
    max_error_rate_increase: float = Field(
        default=0.01, ge=0, le=1, description="candidate 5xx+timeout rate minus baseline's"
    )
    max_p99_ratio: float = Field(default=1.5, gt=0, description="candidate p99 / baseline p99")
    latency_floor_ms: float = Field(
        default=20.0, ge=0, description="p99s below this count as this (no noise on fast models)"
    )
    min_agreement: float = Field(
        default=0.95, ge=0, le=1, description="mirrored answers equal to the primary's"
    )
    agreement_lookback_s: float = Field(
        default=86400.0, gt=0, description="how far before the rollout mirror results count"
    )


class RolloutSpec(_Strict):
    """Defaults of ``scorefn rollout start``: the steps, the bake time of each, the gates."""

    steps: tuple[int, ...] = Field(default=(5, 25, 50, 100), min_length=1)
    bake_s: float = Field(default=600.0, gt=0, description="seconds each step runs")
    gates: GateSpec = GateSpec()

    @model_validator(mode="after")
    def _steps(self) -> RolloutSpec:
        check_steps(self.steps)
        return self


def check_steps(steps: tuple[int, ...]) -> None:
    """``ValueError`` unless ``steps`` rise strictly within 1..100 and end at 100."""
    if not steps or any(not 0 < s <= 100 for s in steps):
        raise ValueError(f"rollout steps {list(steps)} must be percentages 1 to 100")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ValueError(f"rollout steps {list(steps)} must rise")
    if steps[-1] != 100:
        raise ValueError(f"rollout steps {list(steps)} must end at 100")


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
    bandit: BanditSpec | None = Field(
        default=None, description="traffic.mode bandit: route by reward (None: by weights)"
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec, description="progressive rollout steps, bake and gates"
    )

    @model_validator(mode="before")
    @classmethod
    def _traffic_mode(cls, data: Any) -> Any:
        # ``traffic: {mode: bandit, blue: 50, green: 50}`` is ``bandit: {}`` + the weights.
        traffic = data.get("traffic") if isinstance(data, dict) else None
        if not isinstance(traffic, dict) or "mode" not in traffic:
            return data
        weights = {k: v for k, v in traffic.items() if k != "mode"}
        mode = traffic["mode"]
        if mode == "bandit":
            return {**data, "traffic": weights, "bandit": data.get("bandit") or {}}
        if mode == "weights":
            return {**data, "traffic": weights}
        raise ValueError(f"traffic.mode is {mode!r}; expected weights or bandit")

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
