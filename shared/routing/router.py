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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shared.auth import Authority
from shared.errors import DecodeError, OverloadedError, RequestError
from shared.routing.access import Access, EndpointAccess
from shared.routing.config_cache import ConfigCache
from shared.routing.endpoint import DeploymentSpec
from shared.routing.forward import Forwarded, Forwarder, Unreachable
from shared.routing.mirror import mirror_target
from shared.routing.mirroring import MirrorDispatcher
from shared.routing.store import EndpointStore, StoredEndpoint
from shared.routing.traffic import choose_deployment, failover_deployment
from shared.settings import RouterSettings

__all__ = ["PIN_HEADERS", "MIRROR_HEADER", "Router", "RoutedRequest"]

PIN_HEADERS: Final = ("x-deployment", "azureml-model-deployment")
"""Request headers that pin a deployment (ours, and Azure ML's)."""
MIRROR_HEADER: Final = "x-scorefn-mirror"
"""Set on mirrored copies, so a deployment can tell them apart in its logs."""
_HEALTH_TIMEOUT_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class RoutedRequest:
    """A request to forward: endpoint, the path under the deployment's ``/api/``, query
    string, headers (lower-case names) and body."""

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

    @classmethod
    def from_settings(cls, settings: RouterSettings) -> Router:
        """The router those settings describe (nothing connects until first use)."""
        if settings.tables_url:
            from azure.identity import DefaultAzureCredential

            store = EndpointStore.from_url(settings.tables_url, DefaultAzureCredential())
        else:
            store = EndpointStore.from_connection_string(settings.storage)
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
            ),
            MirrorDispatcher(settings.mirror_max_in_flight),
            port_shift=settings.port_shift,
            max_concurrent=settings.max_concurrent,
            mirror_timeout_s=settings.mirror_timeout_s,
        )

    async def aclose(self) -> None:
        """Wait for mirror copies, close the HTTP clients."""
        await self.mirrors.drain()
        await self.forwarder.aclose()
        await self.access.aclose()

    async def authorized(
        self, endpoint: str, authorization: str | None, access: Access
    ) -> StoredEndpoint:
        """The endpoint's config, once the caller is allowed ``access`` to it."""
        stored = await self.configs.get(endpoint)
        await self.access.check(stored, authorization, access)
        return stored

    # ------------------------------------------------------------------ forwarding
    async def forward(self, request: RoutedRequest) -> Forwarded:
        """Authenticate, choose, forward (failing over once), start the mirror copy."""
        stored = await self.authorized(
            request.endpoint, request.headers.get("authorization"), "invoke"
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
        chosen = pinned if pinned is not None else choose_deployment(spec.traffic, self._draw())
        try:
            answer = await self._send(spec.deployment(chosen), request)
        except Unreachable:
            if pinned is not None:
                raise
            fallback = failover_deployment(spec.traffic, {chosen}, self._draw())
            if fallback is None:
                raise
            return await self._send(spec.deployment(fallback), request)
        if answer.status == 503 and pinned is None:
            fallback = failover_deployment(spec.traffic, {chosen}, self._draw())
            if fallback is not None:
                try:
                    return await self._send(spec.deployment(fallback), request)
                except Unreachable:
                    return answer  # the first answer says more than a dead fallback
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
        return await self.forwarder.send(
            deployment.name,
            self._url(deployment, request.path, request.query),
            method=request.method,
            headers=request.headers if headers is None else headers,
            body=request.body,
            timeout_s=timeout_s,
        )

    def _mirror(
        self, stored: StoredEndpoint, target: str, request: RoutedRequest, primary: Forwarded
    ) -> None:
        deployment = stored.spec.deployment(target)
        headers = {**request.headers, MIRROR_HEADER: "1"}

        async def send() -> Forwarded:
            return await self._send(
                deployment, request, headers=headers, timeout_s=self._mirror_timeout_s
            )

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
            "etag": stored.etag,
        }

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
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DecodeError(
            'expected a JSON object like {"traffic": {"blue": 90, "green": 10}, '
            f'"mirror": {{"green": 20}}}}; got {type(data).__name__}'
        )
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
