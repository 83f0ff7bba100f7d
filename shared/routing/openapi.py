"""The OpenAPI document of the router app (built once)."""

from __future__ import annotations

from typing import Any

from shared.protocol.status import ERROR_RESPONSE as _ERROR

__all__ = ["router_openapi_document"]

_OK = {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}
_FORWARDED = {
    "description": "the deployment's answer, unchanged (plus x-deployment, x-request-id)",
    "content": {"application/json": {"schema": {"type": "object"}}},
}
_PIN = {
    "name": "x-deployment",
    "in": "header",
    "required": False,
    "description": "pin a deployment (traffic 0 allowed); azureml-model-deployment also works",
    "schema": {"type": "string"},
}
_REQUEST_ID = {
    "name": "x-request-id",
    "in": "header",
    "required": False,
    "description": "echoed and forwarded; generated when absent",
    "schema": {"type": "string"},
}
_ROUTING = {
    "type": "object",
    "properties": {
        "traffic": {"type": "object", "additionalProperties": {"type": "integer"}},
        "mirror": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
}

_FEEDBACK = {
    "type": "object",
    "required": ["request_id", "reward"],
    "properties": {
        "request_id": {"type": "string", "description": "x-request-id of a scoring answer"},
        "reward": {"type": "number"},
    },
    "additionalProperties": False,
}
_JOB = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "input": {"type": "string", "description": "a blob name under batch-input, or its URL"},
        "deployment": {"type": "string"},
        "model": {"type": "string"},
        "id_columns": {"type": "array", "items": {"type": "string"}},
        "output_format": {"type": "string", "enum": ["csv", "parquet"]},
    },
}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    params: list[dict[str, Any]],
    errors: tuple[int, ...],
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": params,
        "responses": {"200": ok, **{str(code): _ERROR for code in errors}},
        "security": [{"bearer": []}],
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def router_openapi_document(*, version: str, prefix: str = "/api") -> dict[str, Any]:
    """OpenAPI 3.0 for the routes of ``functions/router``."""
    ep = _path_param("endpoint")
    scoring = (400, 401, 403, 404, 413, 429, 502, 503, 504)
    reads = (401, 403, 404, 502)
    writes = (400, *reads)
    base = f"{prefix}/endpoints/{{endpoint}}"
    return {
        "openapi": "3.0.3",
        "info": {"title": "scorefn router", "version": version},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            f"{base}/score": {
                "post": _op(
                    "Score through the endpoint (Azure ML / TF-Serving payloads)",
                    _FORWARDED,
                    params=[ep, _PIN, _REQUEST_ID],
                    errors=scoring,
                    body={"type": "object"},
                )
            },
            f"{base}/v2/models/{{model}}/infer": {
                "post": _op(
                    "Open Inference Protocol v2 inference, forwarded",
                    _FORWARDED,
                    params=[ep, _path_param("model"), _PIN, _REQUEST_ID],
                    errors=scoring,
                    body={"type": "object"},
                )
            },
            f"{base}/v2/models/{{model}}": {
                "get": _op(
                    "Model metadata, forwarded",
                    _FORWARDED,
                    params=[ep, _path_param("model"), _PIN],
                    errors=scoring,
                )
            },
            f"{base}/v2/models/{{model}}/versions/{{version}}": {
                "get": _op(
                    "Model version metadata, forwarded",
                    _FORWARDED,
                    params=[ep, _path_param("model"), _path_param("version"), _PIN],
                    errors=scoring,
                )
            },
            f"{base}/v2/models/{{model}}/ready": {
                "get": _op(
                    "Model ready, forwarded",
                    _FORWARDED,
                    params=[ep, _path_param("model"), _PIN],
                    errors=scoring,
                )
            },
            base: {
                "get": _op(
                    "Deployments (with health), traffic, mirror and mirror counters",
                    _OK,
                    params=[ep],
                    errors=reads,
                )
            },
            f"{base}/feedback": {
                "post": _op(
                    "Reward for a served request (bandit traffic); duplicates count once",
                    _OK,
                    params=[ep],
                    errors=writes,
                    body=_FEEDBACK,
                )
            },
            f"{base}/jobs": {
                "get": _op(
                    "Recent batch jobs of the endpoint",
                    _OK,
                    params=[ep],
                    errors=reads,
                ),
                "post": _op(
                    "Submit a batch job for a blob in batch-input (202 + Location; "
                    "the same blob version again answers 200 with the same job)",
                    _OK,
                    params=[ep],
                    errors=writes,
                    body=_JOB,
                ),
            },
            f"{base}/jobs/{{job}}": {
                "get": _op(
                    "A batch job: state, progress, counts, outputs, failures",
                    _OK,
                    params=[ep, _path_param("job")],
                    errors=reads,
                )
            },
            f"{base}/jobs/{{job}}/resume": {
                "post": _op(
                    "Resume a failed job: only unfinished chunks run again",
                    _OK,
                    params=[ep, _path_param("job")],
                    errors=writes,
                )
            },
            f"{base}/traffic": {
                "get": _op(
                    "Traffic and mirror settings (admin role)",
                    _OK,
                    params=[ep],
                    errors=reads,
                ),
                "put": _op(
                    "Change traffic and/or mirror (admin role); ETag-guarded",
                    _OK,
                    params=[ep],
                    errors=writes,
                    body=_ROUTING,
                ),
            },
        },
    }
