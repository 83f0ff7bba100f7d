"""Request telemetry of the HTTP apps: one server span, the request metric, the 429
count and data collection, around the handlers' own error mapping.

``RouterHandlers.guarded`` and ``ScoringHandlers.guarded`` call these only when
``TELEMETRY.observing`` is true, so with telemetry off a request pays one flag check.
Only the scoring routes are measured (router: ``score``, ``v2``; scoring: ``score``,
``infer``); others (health, metadata, admin) get a span when tracing is on, no metric.
Nothing here raises into a request: recording failures are logged at DEBUG.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

import azure.functions as func
from opentelemetry.trace import SpanKind

from shared.telemetry.state import TELEMETRY
from shared.telemetry.tracing import current_trace_id, set_attributes, span

__all__ = ["observe_router", "observe_scoring"]

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[func.HttpResponse]]
_ROUTER_MEASURED: Final = frozenset({"score", "v2"})
_SCORING_MEASURED: Final = frozenset({"score", "infer"})


def _server_attributes(req: func.HttpRequest, route: str) -> dict[str, str]:
    return {"http.request.method": req.method, "http.route": route, "url.full": req.url}


async def observe_router(
    guarded: Callable[[Handler, func.HttpRequest], Awaitable[func.HttpResponse]],
    handler: Handler,
    req: func.HttpRequest,
) -> func.HttpResponse:
    """``guarded(handler, req)`` with the router's span and request metric."""
    name = getattr(handler, "__name__", "")
    measured = name in _ROUTER_MEASURED
    if not measured and not TELEMETRY.tracing:
        return await guarded(handler, req)
    endpoint = req.route_params.get("endpoint", "")
    start = time.perf_counter()
    if TELEMETRY.tracing:
        attributes = _server_attributes(req, f"endpoints/{{endpoint}}/{name}")
        attributes["endpoint"] = endpoint
        with span(
            f"{req.method} endpoints/{{endpoint}}/{name}",
            attributes,
            kind=SpanKind.SERVER,
            carrier=req.headers,
        ) as current:
            resp = await guarded(handler, req)
            set_attributes(
                current,
                {
                    "http.response.status_code": resp.status_code,
                    "deployment": resp.headers.get("x-deployment", ""),
                    "model": resp.headers.get("x-model", ""),
                },
            )
    else:
        resp = await guarded(handler, req)
    metrics = TELEMETRY.metrics
    if measured and metrics is not None:
        status = resp.status_code
        deployment = resp.headers.get("x-deployment", "")
        model = resp.headers.get("x-model", "")
        metrics.request("router", endpoint, deployment, model, status, time.perf_counter() - start)
        if status == 429:
            metrics.overloaded("router", endpoint)
    return resp


async def observe_scoring(
    guarded: Callable[[Handler, func.HttpRequest], Awaitable[func.HttpResponse]],
    handler: Handler,
    req: func.HttpRequest,
    *,
    deployment: str,
) -> func.HttpResponse:
    """``guarded(handler, req)`` with the scoring span, request metric and collection."""
    name = getattr(handler, "__name__", "")
    measured = name in _SCORING_MEASURED
    if not measured and not TELEMETRY.tracing:
        return await guarded(handler, req)
    start = time.perf_counter()
    trace_id = ""
    if TELEMETRY.tracing:
        attributes = _server_attributes(req, name)
        attributes["deployment"] = deployment
        with span(
            f"{req.method} {name}", attributes, kind=SpanKind.SERVER, carrier=req.headers
        ) as current:
            resp = await guarded(handler, req)
            model = resp.headers.get("x-model") or req.route_params.get("model", "")
            set_attributes(current, {"http.response.status_code": resp.status_code, "model": model})
            if TELEMETRY.collector is not None:
                trace_id = current_trace_id()
    else:  # metrics and/or data collection only: no span to build
        resp = await guarded(handler, req)
        model = resp.headers.get("x-model") or req.route_params.get("model", "")
        if TELEMETRY.collector is not None:
            trace_id = current_trace_id(req.headers)
    status = resp.status_code
    metrics = TELEMETRY.metrics
    if measured and metrics is not None:
        metrics.request(
            "scoring", TELEMETRY.endpoint, deployment, model, status, time.perf_counter() - start
        )
        if status == 429:
            metrics.overloaded("scoring", model)
    collector = TELEMETRY.collector
    if collector is not None and measured and status == 200:
        request_json = "inference-header-content-length" not in req.headers
        response_json = "inference-header-content-length" not in resp.headers
        collector.offer(
            deployment=deployment,
            model=model,
            request_id=req.headers.get("x-request-id") or "",
            trace_id=trace_id,
            request=req.get_body(),
            response=resp.get_body() or b"",
            request_json=request_json,
            response_json=response_json,
        )
    return resp
