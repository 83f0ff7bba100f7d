"""A real local stack for rollout and bandit tests: Azurite, stub scoring deployments
(``apps/scoring_stub_app.py``) and routers as ``python -m shared.localhost`` processes,
with fast timers and flushes set through the router's settings."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.localhost.azurite import AzuriteProcess
from shared.localhost.ports import free_ports
from shared.localhost.runner import HostProcess, wait_for_http
from shared.routing.endpoint import EndpointSpec
from shared.routing.store import EndpointStore

ROOT = Path(__file__).resolve().parents[2]
STUB = "tests.integration.apps.scoring_stub_app:app"


@dataclass
class StrategyStack:
    azurite: AzuriteProcess
    tmp: Path
    ports: dict[str, int] = field(default_factory=dict)
    hosts: list[HostProcess] = field(default_factory=list)
    routers: dict[str, HostProcess] = field(default_factory=dict)

    @property
    def storage(self) -> str:
        return self.azurite.connection_string

    def deployment(self, name: str, *, fail_every: int = 0) -> int:
        (port,) = free_ports(1)
        host = HostProcess(STUB, port=port, cwd=ROOT, storage=self.storage,
                           log_path=self.tmp / f"{name}.log",
                           env={"STUB_DEPLOYMENT": name, "STUB_FAIL_EVERY": str(fail_every),
                                "AzureWebJobsStorage": self.storage}).start(timeout=60)  # fmt: skip
        self.hosts.append(host)
        wait_for_http(f"http://127.0.0.1:{port}/api/v2/health/ready", timeout=60)
        self.ports[name] = port
        return port

    def router(self, name: str, **settings: str) -> str:
        (port,) = free_ports(1)
        env = {"APP_ROLE": "router", "SCOREFN_ROUTER_STORAGE": self.storage,
               "AzureWebJobsStorage": self.storage,
               "SCOREFN_ROUTER_LOCAL_ISSUER": "http://127.0.0.1:9",
               "SCOREFN_ROUTER_CONFIG_TTL_S": "0.5",
               "SCOREFN_ROUTER_STATE_FLUSH_S": "0.5",
               "SCOREFN_ROUTER_OUTCOME_BUCKET_S": "1",
               "SCOREFN_ROUTER_ROLLOUT_SCHEDULE": "* * * * * *",
               "SCOREFN_ROUTER_ROLLOUT_LEASE_S": "15", **settings}  # fmt: skip
        host = HostProcess("function_app:app", port=port, cwd=ROOT, storage=self.storage,
                           log_path=self.tmp / f"router-{name}.log", env=env).start(timeout=60)  # fmt: skip
        self.routers[name] = host
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url + "/api/router/openapi.json", timeout=60)
        return url

    def kill_router(self, name: str) -> None:
        host = self.routers.pop(name)
        assert host.pid is not None
        os.kill(host.pid, signal.SIGKILL)  # no clean exit: its lease is not released
        host.stop(timeout=5)

    def apply(self, name: str, traffic: dict[str, int], **extra: Any) -> None:
        spec = EndpointSpec.model_validate({
            "name": name, "auth": {"mode": "none"},
            "deployments": [{"name": d, "models": ["fraud"], "local_port": self.ports[d]}
                            for d in traffic if d != "mode"],
            "traffic": traffic, **extra,
        })  # fmt: skip
        store = EndpointStore.from_connection_string(self.storage)
        store.apply(spec)
        store.close()

    def close(self) -> None:
        for host in [*self.routers.values(), *self.hosts]:
            host.stop()
