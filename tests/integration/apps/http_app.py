"""HTTP triggers: routes, methods, sync and async handlers, errors and auth levels."""

from __future__ import annotations

import asyncio
import json
import threading

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _json(document: object, status_code: int = 200) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(document), status_code=status_code, mimetype="application/json"
    )


@app.route(route="hello", methods=["GET"])
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"hello {req.params.get('name', 'world')}")


@app.route(route="v2/models/{model}/versions/{version?}", methods=["GET", "POST"])
def model_version(req: func.HttpRequest) -> func.HttpResponse:
    return _json(
        {
            "method": req.method,
            "url": req.url,
            "route_params": dict(req.route_params),
            "params": dict(req.params),
            "body": req.get_body().decode(),
            "x_test": req.headers.get("x-test"),
            "thread": threading.current_thread() is threading.main_thread(),
        }
    )


@app.route(route="items/{id:int}/{*rest}", methods=["GET"])
def items(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"route_params": dict(req.route_params)})


@app.route(route="async/echo", methods=["POST"])
async def async_echo(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(0)
    return func.HttpResponse(
        req.get_body(),
        status_code=201,
        headers={"x-echo": "yes"},
        mimetype="application/octet-stream",
    )


@app.route(route="boom", methods=["GET"])
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise ValueError("kaboom")


@app.route(route="async/boom", methods=["GET"])
async def async_boom(req: func.HttpRequest) -> func.HttpResponse:
    raise LookupError("async kaboom")


@app.route(route="text", methods=["GET"])
def text(req: func.HttpRequest) -> str:
    return "plain text"


@app.route(route="secured", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def secured(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("function level")


@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin level")


@app.route(route="context", methods=["GET"])
def with_context(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return _json(
        {
            "function_name": context.function_name,
            "invocation_id_length": len(context.invocation_id),
            "trace_parent": context.trace_context.trace_parent,
        }
    )
