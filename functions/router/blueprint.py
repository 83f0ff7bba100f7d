"""Routes of the router app. Each function is one line into ``RouterHandlers``.

The router is built once per process at import from ``RouterSettings``; nothing connects
until the first request (HTTP clients are created on the serving event loop).
``openapi_bp`` serves the router's OpenAPI document at ``/api/openapi.json``; the
function app registers it only for ``APP_ROLE=router`` (with ``all``, that path is the
scoring app's, and the router's document stays at ``/api/router/openapi.json``).
"""

from __future__ import annotations

import azure.functions as func

from shared.batch.jobs_api import JobsApi
from shared.rollout.timer import rollout_controller
from shared.routing.handlers import RouterHandlers
from shared.routing.router import Router
from shared.settings import BatchSettings, RouterSettings

__all__ = ["bp", "handlers", "openapi_bp"]

_settings = RouterSettings()
handlers = RouterHandlers(Router.from_settings(_settings), max_body_bytes=_settings.max_body_bytes)
jobs = JobsApi(handlers.router, BatchSettings())  # read now: a wrong setting stops start-up

bp = func.Blueprint()  # type: ignore[no-untyped-call]
openapi_bp = func.Blueprint()  # type: ignore[no-untyped-call]
_ANON = func.AuthLevel.ANONYMOUS


@bp.route(route="endpoints/{endpoint}/score", methods=["POST"], auth_level=_ANON)
async def endpoint_score(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.score, req)


@bp.route(route="endpoints/{endpoint}/v2/{*path}", methods=["GET", "POST"], auth_level=_ANON)
async def endpoint_v2(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.v2, req)


@bp.route(route="endpoints/{endpoint}", methods=["GET"], auth_level=_ANON)
async def endpoint_describe(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.describe, req)


@bp.route(route="endpoints/{endpoint}/traffic", methods=["GET", "PUT"], auth_level=_ANON)
async def endpoint_traffic(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.traffic, req)


@bp.route(route="endpoints/{endpoint}/feedback", methods=["POST"], auth_level=_ANON)
async def endpoint_feedback(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.feedback, req)


@bp.timer_trigger(arg_name="timer", schedule=_settings.rollout_schedule, run_on_startup=False)
def rollout_gates(timer: func.TimerRequest) -> None:
    rollout_controller(_settings, handlers.router).tick()


@bp.route(route="endpoints/{endpoint}/jobs", methods=["GET", "POST"], auth_level=_ANON)
async def endpoint_jobs(req: func.HttpRequest) -> func.HttpResponse:
    handler = jobs.submit if req.method.upper() == "POST" else jobs.list
    return await handlers.guarded(handler, req)


@bp.route(route="endpoints/{endpoint}/jobs/{job}", methods=["GET"], auth_level=_ANON)
async def endpoint_job(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(jobs.status, req)


@bp.route(route="endpoints/{endpoint}/jobs/{job}/resume", methods=["POST"], auth_level=_ANON)
async def endpoint_job_resume(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(jobs.resume, req)


@bp.route(route="router/openapi.json", methods=["GET"], auth_level=_ANON)
async def router_openapi(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.openapi, req)


@openapi_bp.route(route="openapi.json", methods=["GET"], auth_level=_ANON)
async def router_openapi_root(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.openapi, req)
