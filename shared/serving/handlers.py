"""HTTP handlers of a scoring app, on real ``azure.functions`` request/response objects.

Thin: read the request, one call into the data plane and the codecs, respond. Every
error goes through ``shared.protocol.status.error_response`` (the one status table), so
no input of any kind produces anything but a well-formed JSON error.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import azure.functions as func
import orjson

from shared.auth.hop_guard import hop_guard
from shared.errors import NotFoundError, PayloadTooLargeError, RequestError, ScorefnError
from shared.protocol import metadata, repository, score, v2
from shared.protocol.status import error_response
from shared.serving.dataplane import DataPlane
from shared.serving.openapi import SWAGGER_HTML, openapi_document
from shared.settings import ScoringSettings
from shared.telemetry.http import observe_scoring
from shared.telemetry.state import TELEMETRY

__all__ = ["ScoringHandlers", "VERSION"]

log = logging.getLogger(__name__)

VERSION = "0.1.0"
_JSON = "application/json"


def _json(
    obj: object, status: int = 200, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(orjson.dumps(obj), status_code=status, headers=headers, mimetype=_JSON)


class ScoringHandlers:
    """The scoring routes, bound to one data plane and its settings."""

    def __init__(self, plane: DataPlane, settings: ScoringSettings) -> None:
        self.plane = plane
        self.settings = settings
        self._openapi = orjson.dumps(
            openapi_document(title=f"scorefn scoring ({settings.deployment})", version=VERSION)
        )
        self._base_headers = {"x-deployment": settings.deployment}
        self.hop = hop_guard(settings)
        """Hop authentication (only the router's token gets in), or None when off."""
        self._open = {self.live, self.ready, self.openapi, self.docs}

    # -------------------------------------------------------------- plumbing
    async def guarded(
        self,
        handler: Callable[[func.HttpRequest], Awaitable[func.HttpResponse]],
        req: func.HttpRequest,
    ) -> func.HttpResponse:
        """Run a handler; map every exception to a JSON error response."""
        if TELEMETRY.observing:  # spans, metrics, data collection (shared.telemetry)
            return await observe_scoring(
                self._guarded, handler, req, deployment=self.settings.deployment
            )
        return await self._guarded(handler, req)

    async def _guarded(
        self,
        handler: Callable[[func.HttpRequest], Awaitable[func.HttpResponse]],
        req: func.HttpRequest,
    ) -> func.HttpResponse:
        try:
            if self.hop is not None and handler not in self._open:
                await self.hop.check(req.headers.get("authorization"))
            resp = await handler(req)
        except Exception as exc:
            if not isinstance(exc, ScorefnError):
                log.exception("unexpected error on %s %s", req.method, req.url)
            elif not isinstance(exc, RequestError):
                log.warning("%s %s: %s", req.method, req.url, exc)
            status, headers, body = error_response(exc)
            resp = func.HttpResponse(body, status_code=status, headers=headers, mimetype=_JSON)
        for k, v in self._base_headers.items():
            resp.headers[k] = v
        # ``in`` first: the headers' Mapping.get pays for a KeyError when it is absent.
        if "x-request-id" in req.headers:
            request_id = req.headers["x-request-id"]
            if request_id:
                resp.headers["x-request-id"] = request_id
        return resp

    def _body(self, req: func.HttpRequest) -> bytes:
        declared = req.headers.get("content-length")
        limit = self.settings.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(int(declared), limit)
        body = req.get_body()
        if len(body) > limit:
            raise PayloadTooLargeError(len(body), limit)
        return body

    # -------------------------------------------------------------- health / metadata
    async def live(self, req: func.HttpRequest) -> func.HttpResponse:
        return _json({"live": self.plane.live})

    async def ready(self, req: func.HttpRequest) -> func.HttpResponse:
        if self.plane.ready:
            return _json({"ready": True})
        return _json({"ready": False}, 503, {"Retry-After": "1"})

    async def server_metadata(self, req: func.HttpRequest) -> func.HttpResponse:
        extensions = (*metadata.EXTENSIONS, repository.EXTENSION)
        return _json(metadata.server_metadata(version=VERSION, extensions=extensions))

    async def model_metadata(self, req: func.HttpRequest) -> func.HttpResponse:
        name, version = req.route_params["model"], req.route_params.get("version")
        spec, versions = await self.plane.describe(name, version)  # loads on demand
        return _json(metadata.model_metadata(spec, versions=versions))

    async def model_ready(self, req: func.HttpRequest) -> func.HttpResponse:
        name, version = req.route_params["model"], req.route_params.get("version")
        self.plane.check_ready(name, version)  # NotFound -> 404, not loaded/failed -> 503
        return _json({"name": name, "ready": True})

    async def openapi(self, req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(self._openapi, mimetype=_JSON)

    # -------------------------------------------------------------- model repository
    async def repository_index(self, req: func.HttpRequest) -> func.HttpResponse:
        """POST v2/repository/index (``{"ready": true}`` lists only loaded models)."""
        options = repository.decode_index_request(req.get_body())
        return _json(repository.index_body(self.plane.repository_index(), **options))

    async def repository_load(self, req: func.HttpRequest) -> func.HttpResponse:
        """POST v2/repository/models/{model}/load."""
        return _json(await self.plane.load_model(req.route_params["model"]))

    async def repository_unload(self, req: func.HttpRequest) -> func.HttpResponse:
        """POST v2/repository/models/{model}/unload."""
        return _json(await self.plane.unload_model(req.route_params["model"]))

    async def repository_stats(self, req: func.HttpRequest) -> func.HttpResponse:
        """GET v2/repository/stats: loaded models, bytes, loads, evictions."""
        return _json(self.plane.stats())

    async def docs(self, req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(SWAGGER_HTML, mimetype="text/html")

    # -------------------------------------------------------------- inference
    async def infer(self, req: func.HttpRequest) -> func.HttpResponse:
        """POST v2/models/{model}[/versions/{version}]/infer."""
        name, version = req.route_params["model"], req.route_params.get("version")
        body = self._body(req)
        # 404 / 503 before decoding work; the lease keeps this version until answered.
        lease = await self.plane.acquire(name, version)
        try:
            model = lease.model
            # See guarded: ``in`` then ``[]`` is cheaper than a .get() that misses.
            framed = v2.HEADER_LENGTH in req.headers
            header = req.headers[v2.HEADER_LENGTH] if framed else None
            request = v2.decode_infer_request(body, header_length=v2.parse_header_length(header))
            if request.outputs:
                v2.check_requested_outputs(
                    request.outputs, (t.name for t in model.spec.outputs), model=model.key
                )
            outputs = await lease.infer(request.inputs, timeout=self.settings.request_timeout_s)
        finally:
            lease.release()
        data, headers = v2.encode_infer_response(
            model_name=model.spec.name,
            model_version=model.spec.version,
            request_id=request.id,
            outputs=outputs,
            requested=request.outputs,
            binary_default=request.binary_data_output,
        )
        return func.HttpResponse(data, status_code=200, headers=headers)

    def _score_target(self, req: func.HttpRequest) -> tuple[str, str | None]:
        chosen = req.params.get("model") or req.headers.get("x-model")
        if not chosen:
            default = self.plane.default_model
            if default is None:
                raise NotFoundError("this deployment serves no model")
            return default, None
        name, _, version = chosen.partition(":")
        return name, version or None

    async def score(self, req: func.HttpRequest) -> func.HttpResponse:
        """POST score: Azure ML / TF-Serving payloads -> {"predictions": ...}."""
        body = self._body(req)
        name, version = self._score_target(req)
        lease = await self.plane.acquire(name, version)
        try:
            model = lease.model
            request = score.decode_score_request(body, model.spec)
            outputs = await lease.infer(request.inputs, timeout=self.settings.request_timeout_s)
        finally:
            lease.release()
        return func.HttpResponse(
            score.encode_score_response(outputs, model.spec, request.index),
            mimetype=_JSON,
            headers={"x-model": model.key},
        )
