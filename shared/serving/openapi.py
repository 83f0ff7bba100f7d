"""The OpenAPI document of a scoring app and its Swagger UI page (built once)."""

from __future__ import annotations

from typing import Any

from shared.protocol.status import ERROR_RESPONSE

__all__ = ["openapi_document", "SWAGGER_HTML"]

_ERR = ERROR_RESPONSE
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"},
        "parameters": {"type": "object"},
        "data": {},
    },
}
_INFER_REQ = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
}
_INFER_RESP = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": _TENSOR},
    },
}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    params: tuple[str, ...] | list[str] = (),
    errors: tuple[int, ...] = (400, 404, 503),
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in params
        ],
        "responses": {"200": ok, **{str(c): _ERR for c in errors}},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    return op


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "ok", "content": {"application/json": {"schema": schema}}}


def openapi_document(*, title: str, version: str, prefix: str = "/api") -> dict[str, Any]:
    """OpenAPI 3.0 for the routes of ``functions/score_online``."""
    flag = _json({"type": "object"})
    infer = _op(
        "Open Inference Protocol v2 inference (JSON, or binary tensors with "
        "Inference-Header-Content-Length)",
        _json(_INFER_RESP),
        body={
            "application/json": {"schema": _INFER_REQ},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
        params=["model"],
        errors=(400, 404, 413, 429, 503, 504),
    )
    infer_v = {
        **infer,
        "parameters": infer["parameters"]
        + [{"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}],
    }
    score_body = {
        "application/json": {
            "schema": {
                "description": "Azure ML {input_data: {columns, index, data}} | "
                "{input_data: [[...]]} | {data: [[...]]} | TF-Serving {instances: [...]}",
                "type": "object",
            }
        }
    }
    p = prefix
    paths: dict[str, Any] = {
        f"{p}/v2/health/live": {"get": _op("Server live", flag, errors=())},
        f"{p}/v2/health/ready": {
            "get": _op("Server ready (every model loaded)", flag, errors=(503,))
        },
        f"{p}/v2": {"get": _op("Server metadata", flag, errors=())},
        f"{p}/v2/models/{{model}}": {"get": _op("Model metadata", flag, params=["model"])},
        f"{p}/v2/models/{{model}}/versions/{{version}}": {
            "get": _op("Model metadata", flag, params=["model", "version"])
        },
        f"{p}/v2/models/{{model}}/ready": {"get": _op("Model ready", flag, params=["model"])},
        f"{p}/v2/models/{{model}}/versions/{{version}}/ready": {
            "get": _op("Model ready", flag, params=["model", "version"])
        },
        f"{p}/v2/models/{{model}}/infer": {"post": infer},
        f"{p}/v2/models/{{model}}/versions/{{version}}/infer": {"post": infer_v},
        f"{p}/score": {
            "post": {
                **_op(
                    "Score rows (Azure ML / TF-Serving payloads); model from ?model= or "
                    "x-model (name or name:version), else the deployment's first model",
                    _json({"type": "object", "properties": {"predictions": {"type": "array"}}}),
                    body=score_body,
                    errors=(400, 404, 413, 429, 503, 504),
                ),
            }
        },
        f"{p}/openapi.json": {"get": _op("This document", flag, errors=())},
        # Model repository extension (shared.modelstore; load/unload: admin via the router)
        f"{p}/v2/repository/index": {
            "post": _op(
                "Model repository index: name, version, state (READY, LOADING, "
                'UNAVAILABLE), reason; body {"ready": true} = loaded models only',
                _json({"type": "array", "items": {"type": "object"}}),
                errors=(400, 503),
            )
        },
        f"{p}/v2/repository/models/{{model}}/load": {
            "post": _op("Load a model (every served version)", flag, params=["model"])
        },
        f"{p}/v2/repository/models/{{model}}/unload": {
            "post": _op("Unload a model (requests in flight finish)", flag, params=["model"])
        },
        f"{p}/v2/repository/stats": {
            "get": _op("Working set: loaded, bounds, bytes, loads, evictions", flag, errors=())
        },
    }
    return {"openapi": "3.0.3", "info": {"title": title, "version": version}, "paths": paths}


SWAGGER_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>scorefn scoring API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "openapi.json", dom_id: "#ui"});</script>
</body></html>
"""
