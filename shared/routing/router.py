"""The router's data plane, free of any HTTP framework: authenticate, choose a deployment
(by traffic weights, or pinned by header), forward, fail over once, mirror.

``Router.forward`` takes the parts of a request and returns the deployment's answer;
``functions/router`` only adapts ``azure.functions`` objects to it. Decisions are the
pure functions of ``traffic`` and ``mirror`` fed with draws from ``draw`` (injectable).

Failover: when the chosen deployment cannot be reached, or answers 503, the request is
sent once more to another deployment with traffic > 0 (chosen by the remaining weights).
Never for a pinned request: the caller asked for that deployment.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.trace import SpanKind

from shared.auth import Authority
from shared.auth.hop_tokens import HopTokens, hop_scope
from shared.errors import DecodeError, OverloadedError, RequestError, ScorefnError
from shared.routing.access import Access, EndpointAccess, access_for_path
from shared.routing.config_cache import ConfigCache
from shared.routing.endpoint import DeploymentSpec, EndpointSpec
from shared.routing.forward import Forwarded, Forwarder, Unreachable
from shared.routing.jsonbody import json_object
from shared.routing.mirror import mirror_target, same_body
from shared.routing.mirroring import MirrorDispatcher
from shared.routing.store import TABLE, EndpointStore, StoredEndpoint
from shared.routing.traffic import choose_deployment, failover_deployment
from shared.settings import RouterSettings
from shared.storage_clients import StorageClients
from shared.telemetry.state import TELEMETRY
from shared.telemetry.tracing import mark, set_attributes, span

if TYPE_CHECKING:
    from shared.rollout.runtime import StrategyRuntime

__all__ = ["PIN_HEADERS", "MIRROR_HEADER", "STORAGE_NAMES", "Router", "RoutedRequest"]

PIN_HEADERS: Final = ("x-deployment", "azureml-model-deployment")
"""Request headers that pin a deployment (ours, and Azure ML's)."""
MIRROR_HEADER: Final = "x-scorefn-mirror"
"""Set on mirrored copies, so a deployment can tell them apart in its logs."""
STORAGE_NAMES: Final[Mapping[str, str]] = {
    "connection_string": "SCOREFN_ROUTER_STORAGE or AzureWebJobsStorage",
    "blob": "SCOREFN_ROUTER_BLOBS_URL",
    "table": "SCOREFN_ROUTER_TABLES_URL",
    "client_id": "client id",
}
"""App setting names of the router's storage, for messages."""
_HEALTH_TIMEOUT_S: Final = 2.0


@dataclass(slots=True)  # not frozen: one per request, and a frozen __init__ costs 4x
class RoutedRequest:
    """A request to forward: endpoint, the path under the deployment's ``/api/``, query
    string, headers (lower-case names) and body. Not changed once made."""

    endpoint: str
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


class Router:
    """Routes requests of every endpoint in one store; one per process."""

    def __init__(
        self,
        configs: ConfigCache,
        access: EndpointAccess,
        forwarder: Forwarder,
        mirrors: MirrorDispatcher,
        *,
        port_shift: int = 0,
        max_concurrent: int = 512,
        mirror_timeout_s: float = 10.0,
        draw: Callable[[], float] = random.random,
        strategies: StrategyRuntime | None = None,
    ) -> None:
        self.configs = configs
        self.access = access
        self.forwarder = forwarder
        self.mirrors = mirrors
        self._port_shift = port_shift
        self._max_concurrent = max_concurrent
        self._mirror_timeout_s = mirror_timeout_s
        self._draw = draw
        self._in_flight: dict[str, int] = {}
        self.strategies = strategies
        """Bandit routing, feedback and rollout outcome windows (None: off)."""

    @classmethod
    def from_settings(cls, settings: RouterSettings) -> Router:
        """The router those settings describe (nothing connects until first use)."""
        from shared.rollout.runtime import StrategyRuntime
        from shared.rollout.tables import Tables

        clients = StorageClients(
            connection_string=settings.storage,
            tables_url=settings.tables_url,
            needs=("table",),
            names=STORAGE_NAMES,
        )
        store = EndpointStore(clients.table(TABLE))
        tables = Tables(clients.table_service())
        authority = (
            Authority.local_dev(settings.local_issuer)
            if settings.local_issuer
            else Authority.entra()
        )
        return cls(
            ConfigCache(store, ttl_s=settings.config_ttl_s),
            EndpointAccess(authority),
            Forwarder(
                timeout_s=settings.timeout_s,
                connect_timeout_s=settings.connect_timeout_s,
                max_connections=settings.max_connections,
                hop_tokens=_hop_tokens(settings),
            ),
            MirrorDispatcher(settings.mirror_max_in_flight),
            port_shift=settings.port_shift,
            max_concurrent=settings.max_concurrent,
            mirror_timeout_s=settings.mirror_timeout_s,
            strategies=StrategyRuntime(
                tables, flush_s=settings.state_flush_s, bucket_s=settings.outcome_bucket_s
            ),
        )

    async def aclose(self) -> None:
        """Wait for mirror copies, close the HTTP clients."""
        await self.mirrors.drain()
        if self.strategies is not None:
            await self.strategies.aclose()
        await self.forwarder.aclose()
        await self.access.aclose()

    async def authorized(
        self, endpoint: str, authorization: str | None, access: Access
    ) -> StoredEndpoint:
        """The endpoint's config, once the caller is allowed ``access`` to it."""
        stored = await self.configs.get(endpoint)
        with span("scorefn.auth", {"endpoint": endpoint, "scorefn.access": access}):
            await self.access.check(stored, authorization, access)
        return stored

    # ------------------------------------------------------------------ forwarding
    async def forward(self, request: RoutedRequest) -> Forwarded:
        """Authenticate, choose, forward (failing over once), start the mirror copy."""
        stored = await self.authorized(
            request.endpoint, request.headers.get("authorization"), access_for_path(request.path)
        )
        spec = stored.spec
        pinned = _pinned(request.headers)
        if pinned is not None and not _has(spec.deployments, pinned):
            names = ", ".join(d.name for d in spec.deployments)
            raise RequestError(
                f"deployment {pinned!r} (x-deployment header) is not a deployment of "
                f"endpoint {spec.name!r}; the deployments are {names}"
            )
        count = self._in_flight.get(spec.name, 0)
        if count >= self._max_concurrent:
            raise OverloadedError(
                f"endpoint {spec.name!r} has {count} requests in flight, the limit; "
                "retry after a moment",
                retry_after=1.0,
            )
        self._in_flight[spec.name] = count + 1
        try:
            answer = await self._send_primary(stored, request, pinned)
        finally:
            self._in_flight[spec.name] -= 1
        target = mirror_target(
            spec.mirror, answer.deployment, self._draw(), pinned=pinned is not None
        )
        if target is not None:
            self._mirror(stored, target, request, answer)
        return answer

    async def _send_primary(
        self, stored: StoredEndpoint, request: RoutedRequest, pinned: str | None
    ) -> Forwarded:
        spec = stored.spec
        strategies = self.strategies
        if pinned is not None:
            chosen = pinned
        elif spec.bandit is not None and strategies is not None:
            chosen = strategies.choose(spec, self._draw())
        else:
            chosen = choose_deployment(spec.traffic, self._draw())
        if TELEMETRY.tracing:
            mark(
                "scorefn.route",
                {"endpoint": spec.name, "deployment": chosen, "scorefn.pinned": pinned is not None},
            )
        try:
            answer = await self._send_counted(spec, chosen, request)
        except Unreachable:
            if pinned is not None:
                raise
            fallback = failover_deployment(spec.traffic, {chosen}, self._draw())
            if fallback is None:
                raise
            return await self._send_counted(spec, fallback, request)
        if answer.status == 503 and pinned is None:
            fallback = failover_deployment(spec.traffic, {chosen}, self._draw())
            if fallback is not None:
                try:
                    return await self._send_counted(spec, fallback, request)
                except Unreachable:
                    return answer  # the first answer says more than a dead fallback
        return answer

    async def _send_counted(
        self, spec: EndpointSpec, name: str, request: RoutedRequest
    ) -> Forwarded:
        """``_send`` with its outcome counted for rollout gates (and, for a bandit
        endpoint, the request id remembered for feedback)."""
        strategies = self.strategies
        if strategies is None:
            return await self._send(spec.deployment(name), request)
        start = time.perf_counter()
        try:
            answer = await self._send(spec.deployment(name), request)
        except ScorefnError:  # unreachable, timed out: an error of this deployment
            strategies.record(spec.name, name, error=True, elapsed_s=time.perf_counter() - start)
            raise
        strategies.record(spec.name, name, error=answer.status >= 500, elapsed_s=answer.elapsed_s)
        if spec.bandit is not None and answer.status < 500:
            request_id = request.headers.get("x-request-id")
            if request_id:
                strategies.served(spec, name, request_id)
        return answer

    def _url(self, deployment: DeploymentSpec, path: str, query: str) -> str:
        url = f"{deployment.base_url(self._port_shift)}/api/{path}"
        return f"{url}?{query}" if query else url

    async def _send(
        self,
        deployment: DeploymentSpec,
        request: RoutedRequest,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Forwarded:
        url = self._url(deployment, request.path, request.query)
        if TELEMETRY.tracing:
            return await self._send_traced(deployment, url, request, headers, timeout_s)
        return await self._forward(deployment, url, request, headers, timeout_s)

    def _forward(
        self,
        deployment: DeploymentSpec,
        url: str,
        request: RoutedRequest,
        headers: Mapping[str, str] | None,
        timeout_s: float | None,
    ) -> Awaitable[Forwarded]:
        """``forwarder.send`` of ``request`` to ``url`` (``headers`` replace its own)."""
        return self.forwarder.send(
            deployment.name,
            url,
            method=request.method,
            headers=request.headers if headers is None else headers,
            body=request.body,
            timeout_s=timeout_s,
        )

    async def _send_traced(
        self,
        deployment: DeploymentSpec,
        url: str,
        request: RoutedRequest,
        headers: Mapping[str, str] | None,
        timeout_s: float | None,
    ) -> Forwarded:
        """``forwarder.send`` in a client span; the forwarder sends its traceparent."""
        attributes: dict[str, str | bool] = {
            "deployment": deployment.name,
            "http.request.method": request.method,
            "url.full": url,
            "scorefn.mirror": headers is not None and MIRROR_HEADER in headers,
        }
        with span("scorefn.forward", attributes, kind=SpanKind.CLIENT) as current:
            answer = await self._forward(deployment, url, request, headers, timeout_s)
            set_attributes(current, {"http.response.status_code": answer.status})
            return answer

    def _mirror(
        self, stored: StoredEndpoint, target: str, request: RoutedRequest, primary: Forwarded
    ) -> None:
        deployment = stored.spec.deployment(target)
        headers = {**request.headers, MIRROR_HEADER: "1"}

        async def send() -> Forwarded:
            answer = await self._send(
                deployment, request, headers=headers, timeout_s=self._mirror_timeout_s
            )
            if self.strategies is not None:  # agreement, for a later rollout's gate
                agreed = answer.status == primary.status and same_body(primary.body, answer.body)
                self.strategies.mirrored(stored.spec.name, target, agreed=agreed)
            return answer

        self.mirrors.submit(stored.spec.name, target, send, primary)

    # ------------------------------------------------------------------ admin
    async def describe(self, endpoint: str, authorization: str | None) -> dict[str, Any]:
        """Deployments (with health), traffic, mirror and mirror counters of ``endpoint``."""
        stored = await self.authorized(endpoint, authorization, "invoke")
        spec = stored.spec
        health = await asyncio.gather(*(self._health(d) for d in spec.deployments))
        stats = self.mirrors.stats(spec.name)
        return {
            "name": spec.name,
            "description": spec.description,
            "auth_mode": spec.auth.mode,
            "traffic": dict(spec.traffic),
            "mirror": dict(spec.mirror),
            "deployments": [
                {
                    "name": d.name,
                    "models": list(d.models),
                    "compute": d.compute,
                    "url": d.base_url(self._port_shift),
                    "traffic": spec.traffic.get(d.name, 0),
                    "mirror": spec.mirror.get(d.name, 0),
                    "health": h,
                }
                for d, h in zip(spec.deployments, health, strict=True)
            ],
            "mirror_stats": {name: s.summary() for name, s in stats.items()},
            **(await self._strategies_view(spec)),
            "etag": stored.etag,
        }

    async def _strategies_view(self, spec: EndpointSpec) -> dict[str, Any]:
        """``bandit`` (arms, posteriors, shares) and ``rollout`` (state) of ``spec``."""
        strategies = self.strategies
        if strategies is None:
            return {}
        from shared.rollout.state import RolloutStore

        view: dict[str, Any] = {"traffic_mode": "bandit" if spec.bandit else "weights"}
        if spec.bandit is not None:
            view["bandit"] = await strategies.describe(spec)
        rollout = await asyncio.to_thread(RolloutStore(strategies.tables).find, spec.name)
        view["rollout"] = rollout.rollout.summary() if rollout is not None else None
        return view

    async def feedback(
        self, endpoint: str, authorization: str | None, body: bytes
    ) -> dict[str, Any]:
        """Count the reward of one request of a bandit endpoint (invoke role)."""
        stored = await self.authorized(endpoint, authorization, "invoke")
        if self.strategies is None:
            raise RequestError("this router keeps no bandit state; feedback is not taken")
        return await self.strategies.feedback(stored.spec, body)

    async def _health(self, deployment: DeploymentSpec) -> str:
        try:
            answer = await self.forwarder.send(
                deployment.name,
                self._url(deployment, "v2/health/ready", ""),
                method="GET",
                headers={},
                body=b"",
                timeout_s=_HEALTH_TIMEOUT_S,
            )
        except Exception:  # any failure to answer is "unreachable", reported, not raised
            return "unreachable"
        return "ready" if answer.status == 200 else f"not ready ({answer.status})"

    async def traffic(self, endpoint: str, authorization: str | None) -> dict[str, Any]:
        """The traffic and mirror settings of ``endpoint`` (admin role)."""
        stored = await self.authorized(endpoint, authorization, "admin")
        return _routing(stored)

    async def set_traffic(
        self, endpoint: str, authorization: str | None, body: bytes
    ) -> dict[str, Any]:
        """Change traffic and/or mirror from ``{"traffic": {...}, "mirror": {...}}``
        (admin role); takes effect on this instance at once, on others within the TTL."""
        await self.authorized(endpoint, authorization, "admin")
        traffic, mirror = _decode_routing(body)
        updated = await asyncio.to_thread(
            self.configs.store.set_routing, endpoint, traffic=traffic, mirror=mirror
        )
        self.configs.put(updated)
        return _routing(updated)


def _hop_tokens(settings: RouterSettings) -> HopTokens | None:
    """Hop authentication: tokens for ``hop_audience`` from the router's managed identity
    (locally, ``scorefn up`` points that credential at the dev issuer)."""
    if not settings.hop_audience:
        return None
    from azure.identity import ManagedIdentityCredential

    credential = ManagedIdentityCredential(client_id=settings.hop_client_id)
    return HopTokens(credential, hop_scope(settings.hop_audience))


def _routing(stored: StoredEndpoint) -> dict[str, Any]:
    return {
        "endpoint": stored.spec.name,
        "traffic": dict(stored.spec.traffic),
        "mirror": dict(stored.spec.mirror),
        "etag": stored.etag,
    }


def _has(deployments: tuple[DeploymentSpec, ...], name: str) -> bool:
    return any(d.name == name for d in deployments)


def _pinned(headers: Mapping[str, str]) -> str | None:
    for name in PIN_HEADERS:
        value = headers.get(name)
        if value is not None and value.strip():
            return value.strip()
    return None


def _decode_routing(body: bytes) -> tuple[dict[str, object] | None, dict[str, object] | None]:
    data = json_object(body, '{"traffic": {"blue": 90, "green": 10}, "mirror": {"green": 20}}')
    unknown = sorted(set(data) - {"traffic", "mirror"})
    if unknown:
        raise DecodeError(f"unknown field(s) {', '.join(unknown)}; expected traffic and/or mirror")
    if not data:
        raise DecodeError("expected traffic and/or mirror; got an empty object")
    parts: list[dict[str, object] | None] = []
    for field in ("traffic", "mirror"):
        value = data.get(field)
        if value is not None and not isinstance(value, dict):
            raise DecodeError(
                f"{field} must be an object of deployment -> percent; got {type(value).__name__}"
            )
        parts.append(value)
    return parts[0], parts[1]
