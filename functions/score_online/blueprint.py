"""Routes of a scoring app. Each function is one line into ``ScoringHandlers``.

The data plane is built once per process at import (models then load in a background
thread, so the host answers ``/v2/health/live`` at once and ``ready`` when loaded).
"""

from __future__ import annotations

import azure.functions as func

from shared.serving.handlers import ScoringHandlers
from shared.serving.runtime import scoring_runtime

__all__ = ["bp", "handlers"]

_runtime = scoring_runtime()
handlers = ScoringHandlers(_runtime.plane, _runtime.settings)

bp = func.Blueprint()  # type: ignore[no-untyped-call]
_ANON = func.AuthLevel.ANONYMOUS


@bp.route(route="v2/health/live", methods=["GET"], auth_level=_ANON)
async def health_live(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.live, req)


@bp.route(route="v2/health/ready", methods=["GET"], auth_level=_ANON)
async def health_ready(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.ready, req)


@bp.route(route="v2", methods=["GET"], auth_level=_ANON)
async def server_metadata(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.server_metadata, req)


@bp.route(route="v2/models/{model}", methods=["GET"], auth_level=_ANON)
async def model_metadata(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.model_metadata, req)


@bp.route(route="v2/models/{model}/versions/{version}", methods=["GET"], auth_level=_ANON)
async def model_version_metadata(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.model_metadata, req)


@bp.route(route="v2/models/{model}/ready", methods=["GET"], auth_level=_ANON)
async def model_ready(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.model_ready, req)


@bp.route(route="v2/models/{model}/versions/{version}/ready", methods=["GET"], auth_level=_ANON)
async def model_version_ready(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.model_ready, req)


@bp.route(route="v2/models/{model}/infer", methods=["POST"], auth_level=_ANON)
async def model_infer(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.infer, req)


@bp.route(route="v2/models/{model}/versions/{version}/infer", methods=["POST"], auth_level=_ANON)
async def model_version_infer(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.infer, req)


@bp.route(route="v2/repository/index", methods=["POST"], auth_level=_ANON)
async def repository_index(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.repository_index, req)


@bp.route(route="v2/repository/models/{model}/load", methods=["POST"], auth_level=_ANON)
async def repository_load(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.repository_load, req)


@bp.route(route="v2/repository/models/{model}/unload", methods=["POST"], auth_level=_ANON)
async def repository_unload(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.repository_unload, req)


@bp.route(route="v2/repository/stats", methods=["GET"], auth_level=_ANON)
async def repository_stats(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.repository_stats, req)


@bp.route(route="score", methods=["POST"], auth_level=_ANON)
async def score(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.score, req)


@bp.route(route="openapi.json", methods=["GET"], auth_level=_ANON)
async def openapi(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.openapi, req)


@bp.route(route="docs", methods=["GET"], auth_level=_ANON)
async def docs(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.guarded(handlers.docs, req)
