"""HTTP handlers of the router app, on real ``azure.functions`` request/response objects.

Thin: read the request, one call into ``Router``, respond. Every error goes through
``shared.protocol.status.error_response`` (the one status table). Every response carries
``x-request-id`` (the caller's, or one generated here, also sent to the deployment);
responses of the scoring routes carry ``x-deployment`` (and Azure ML's
``azureml-model-deployment``): the deployment that answered, or ``none`` when the router
answered itself (for example a 401).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import urlsplit

import azure.functions as func
import orjson

from shared.errors import PayloadTooLargeError, RequestError, ScorefnError
from shared.protocol.status import error_response
from shared.routing.forward import Forwarded, Unreachable
from shared.routing.openapi import router_openapi_document
from shared.routing.router import RoutedRequest, Router
from shared.telemetry.http import observe_router
from shared.telemetry.state import TELEMETRY

__all__ = ["RouterHandlers", "VERSION"]

log = logging.getLogger(__name__)

VERSION: Final = "0.1.0"
_JSON: Final = "application/json"
_NO_DEPLOYMENT: Final = "none"

Handler = Callable[[func.HttpRequest, str], Awaitable[func.HttpResponse]]


class _RequestIds:
    """Random request ids: 32 hex digits of a version-4 UUID, as ``uuid4().hex`` gives,
    from ``os.urandom`` read 4 KiB at a time (a system call per id, as ``uuid4`` makes,
    costs more than the rest of making one; this runs on every request without an id)."""

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def __call__(self) -> str:
        at = self._at
        if at + 16 > len(self._pool):
            self._pool, at = os.urandom(4096), 0
        self._at = at + 16
        digits = self._pool[at : at + 16].hex()
        return f"{digits[:12]}4{digits[13:16]}{'89ab'[int(digits[16], 16) & 3]}{digits[17:]}"


new_request_id: Final = _RequestIds()
"""A new random request id (version-4 UUID hex digits)."""


def _json(obj: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(orjson.dumps(obj), status_code=status, mimetype=_JSON)


class RouterHandlers:
    """The router routes, bound to one ``Router``."""

    def __init__(self, router: Router, *, max_body_bytes: int = 100 * 1024 * 1024) -> None:
        self.router = router
        self.max_body_bytes = max_body_bytes
        self._openapi = orjson.dumps(router_openapi_document(version=VERSION))

    async def guarded(self, handler: Handler, req: func.HttpRequest) -> func.HttpResponse:
        """Run a handler with the request's id; map every exception to a JSON error."""
        if TELEMETRY.observing:  # spans and metrics (shared.telemetry)
            return await observe_router(self._guarded, handler, req)
        return await self._guarded(handler, req)

    async def _guarded(self, handler: Handler, req: func.HttpRequest) -> func.HttpResponse:
        # ``in`` then ``[]``: the headers' Mapping.get raises (and catches) a KeyError
        # when the header is absent, as it mostly is.
        request_id = ""
        if "x-request-id" in req.headers:
            request_id = req.headers["x-request-id"]
        request_id = request_id or new_request_id()
        try:
            resp = await handler(req, request_id)
        except Exception as exc:
            if not isinstance(exc, ScorefnError):
                log.exception("unexpected error on %s %s", req.method, req.url)
            elif not isinstance(exc, RequestError):
                log.warning("%s %s: %s", req.method, req.url, exc)
            status, headers, body = error_response(exc)
            if handler in (self.score, self.v2):
                deployment = exc.deployment if isinstance(exc, Unreachable) else _NO_DEPLOYMENT
                headers["x-deployment"] = headers["azureml-model-deployment"] = deployment
            headers["x-request-id"] = request_id
            return func.HttpResponse(body, status_code=status, headers=headers, mimetype=_JSON)
        # The forwarding handlers built it in (a werkzeug ``set`` costs a scan and checks).
        if resp.headers.get("x-request-id") != request_id:
            resp.headers["x-request-id"] = request_id
        return resp

    # ------------------------------------------------------------------ forwarding
    def _routed(self, req: func.HttpRequest, request_id: str, path: str) -> RoutedRequest:
        declared = req.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise PayloadTooLargeError(int(declared), self.max_body_bytes)
        body = req.get_body() or b""
        if len(body) > self.max_body_bytes:
            raise PayloadTooLargeError(len(body), self.max_body_bytes)
        headers = {**req.headers}  # HttpRequestHeaders' names are lower case already
        headers["x-request-id"] = request_id
        return RoutedRequest(
            endpoint=req.route_params["endpoint"],
            method=req.method,
            path=path,
            query=urlsplit(req.url).query,
            headers=headers,
            body=body,
        )

    @staticmethod
    def _answer(answer: Forwarded, request_id: str) -> func.HttpResponse:
        # One headers mapping for the constructor: each later ``resp.headers[...] =`` costs
        # a scan and a validation of the werkzeug headers.
        headers = {
            **answer.headers,
            "x-deployment": answer.deployment,
            "azureml-model-deployment": answer.deployment,
            "x-request-id": request_id,
        }
        return func.HttpResponse(answer.body, status_code=answer.status, headers=headers)

    async def score(self, req: func.HttpRequest, request_id: str) -> func.HttpResponse:
        """POST endpoints/{endpoint}/score -> the chosen deployment's /api/score."""
        routed = self._routed(req, request_id, "score")
        return self._answer(await self.router.forward(routed), request_id)

    async def v2(self, req: func.HttpRequest, request_id: str) -> func.HttpResponse:
        """GET|POST endpoints/{endpoint}/v2/{*path} -> the deployment's /api/v2/{path}."""
        path = "v2/" + (req.route_params.get("path") or "").lstrip("/")
        routed = self._routed(req, request_id, path)
        return self._answer(await self.router.forward(routed), request_id)

    # ------------------------------------------------------------------ admin
    async def describe(self, req: func.HttpRequest, request_id: str) -> func.HttpResponse:
        """GET endpoints/{endpoint}."""
        endpoint = req.route_params["endpoint"]
        return _json(await self.router.describe(endpoint, req.headers.get("authorization")))

    async def traffic(self, req: func.HttpRequest, request_id: str) -> func.HttpResponse:
        """GET|PUT endpoints/{endpoint}/traffic (admin role)."""
        endpoint = req.route_params["endpoint"]
        authorization = req.headers.get("authorization")
        if req.method.upper() == "PUT":
            body = req.get_body() or b""
            return _json(await self.router.set_traffic(endpoint, authorization, body))
        return _json(await self.router.traffic(endpoint, authorization))

    async def feedback(self, req: func.HttpRequest, request_id: str) -> func.HttpResponse:
        """POST endpoints/{endpoint}/feedback: the reward of a bandit request."""
        endpoint = req.route_params["endpoint"]
        body = req.get_body() or b""
        return _json(await self.router.feedback(endpoint, req.headers.get("authorization"), body))

    async def openapi(self, req: func.HttpRequest, request_id: str) -> func.HttpResponse:
        """GET openapi.json."""
        return func.HttpResponse(self._openapi, mimetype=_JSON)
