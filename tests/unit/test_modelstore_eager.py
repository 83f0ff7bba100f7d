"""The repository routes on a deployment without a model store (models from its folder,
all loaded at start): the index lists them, load and unload are refused with the reason."""

from __future__ import annotations

import azure.functions as func
import orjson

from shared.serving.dataplane import DataPlane
from shared.serving.handlers import ScoringHandlers
from shared.settings import ScoringSettings
from tests.conftest import PackageFactory


def _post(url: str, body: bytes = b"", route: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest(method="POST", url=url, body=body, route_params=route or {})


async def test_eager_index_and_refused_load(make_package: PackageFactory) -> None:
    folder = make_package()
    settings = ScoringSettings(models_dir=folder.parent.parent, deployment="eager")
    plane = DataPlane(settings.models_dir, "")
    assert plane.wait_loaded(30)
    handlers = ScoringHandlers(plane, settings)
    resp = await handlers.guarded(handlers.repository_index, _post("/api/v2/repository/index"))
    assert (resp.status_code, orjson.loads(resp.get_body())) == (
        200,
        [{"name": "lin", "version": "1", "state": "READY", "reason": ""}],
    )
    req = _post("/api/v2/repository/models/lin/load", route={"model": "lin"})
    resp = await handlers.guarded(handlers.repository_load, req)
    assert (resp.status_code, orjson.loads(resp.get_body())) == (
        400,
        {
            "error": "cannot load model 'lin': this deployment serves the packages of its "
            "models folder, all loaded at start; set SCOREFN_MODEL_STORE to load models on demand"
        },
    )
    bad = _post("/api/v2/repository/index", b"[1]")
    resp = await handlers.guarded(handlers.repository_index, bad)
    assert (resp.status_code, orjson.loads(resp.get_body())) == (
        400,
        {"error": "the repository index body must be a JSON object; got an array"},
    )
    stats = await handlers.guarded(handlers.repository_stats, _post("/api/v2/repository/stats"))
    assert orjson.loads(stats.get_body()) == {"loaded": 1, "loading": 0, "load_failures": 0}
    lease = await plane.acquire("lin")
    assert lease.model.key == "lin:1"
    lease.release()
    lease.release()  # a second release is a no-op
    await plane.close()
