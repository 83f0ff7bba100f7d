"""Scoring handlers called directly with real ``azure.functions.HttpRequest`` objects."""

from __future__ import annotations

from pathlib import Path

import azure.functions as func
import orjson
import pytest

from shared.serving.dataplane import DataPlane
from shared.serving.handlers import ScoringHandlers
from shared.settings import ScoringSettings
from tests.conftest import LINEAR_YAML, PackageFactory

ROW = [1.0, 2.0, 3.0, 4.0]


def _req(
    method: str,
    url: str,
    body: bytes = b"",
    *,
    route: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> func.HttpRequest:
    return func.HttpRequest(
        method=method,
        url=url,
        body=body,
        headers=headers or {},
        params=params or {},
        route_params=route or {},
    )


@pytest.fixture
def handlers(make_package: PackageFactory) -> ScoringHandlers:
    folder = make_package()
    settings = ScoringSettings(
        models_dir=folder.parent.parent, deployment="test", max_body_bytes=1000
    )
    plane = DataPlane(settings.models_dir, "", batching=True)
    assert plane.wait_loaded(30)
    return ScoringHandlers(plane, settings)


def _json(resp: func.HttpResponse) -> object:
    return orjson.loads(resp.get_body())


async def test_infer_and_headers(handlers: ScoringHandlers) -> None:
    body = orjson.dumps(
        {"id": "a", "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
    )
    req = _req(
        "POST", "/api/v2/models/lin/infer", body, route={"model": "lin"},
        headers={"x-request-id": "req-1"},
    )  # fmt: skip
    resp = await handlers.guarded(handlers.infer, req)
    assert resp.status_code == 200
    doc = _json(resp)
    assert isinstance(doc, dict) and doc["id"] == "a" and doc["model_name"] == "lin"
    assert resp.headers["x-deployment"] == "test" and resp.headers["x-request-id"] == "req-1"
    await handlers.plane.close()


async def test_declared_length_over_limit_is_413_before_reading(handlers: ScoringHandlers) -> None:
    req = _req("POST", "/api/score", b"{}", route={}, headers={"content-length": "5000"})
    resp = await handlers.guarded(handlers.score, req)
    assert (resp.status_code, _json(resp)) == (
        413,
        {"error": "request body is 5000 bytes; the limit is 1000 bytes"},
    )


async def test_score_default_model(handlers: ScoringHandlers) -> None:
    resp = await handlers.guarded(
        handlers.score, _req("POST", "/api/score", orjson.dumps({"data": [ROW]}))
    )
    assert resp.status_code == 200 and resp.headers["x-model"] == "lin:1"
    doc = _json(resp)
    assert isinstance(doc, dict) and len(doc["predictions"][0]) == 3
    await handlers.plane.close()


async def test_unexpected_exception_is_opaque_500(handlers: ScoringHandlers) -> None:
    async def broken(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("secret detail")

    resp = await handlers.guarded(broken, _req("GET", "/api/x"))
    assert (resp.status_code, _json(resp)) == (500, {"error": "internal error"})


async def test_not_ready_before_loading(make_package: PackageFactory, tmp_path: Path) -> None:
    folder = make_package(LINEAR_YAML)
    plane = DataPlane(folder.parent.parent, "")  # loading not started
    h = ScoringHandlers(plane, ScoringSettings(models_dir=folder.parent.parent))
    resp = await h.guarded(h.ready, _req("GET", "/api/v2/health/ready"))
    assert (resp.status_code, _json(resp), resp.headers["Retry-After"]) == (
        503,
        {"ready": False},
        "1",
    )


async def test_failed_package_is_503_naming_the_problem(make_package: PackageFactory) -> None:
    folder = make_package(files={"model.onnx": b"garbage"})
    plane = DataPlane(folder.parent.parent, "")
    assert plane.wait_loaded(30)
    h = ScoringHandlers(plane, ScoringSettings(models_dir=folder.parent.parent))
    resp = await h.guarded(h.model_ready, _req("GET", "/x", route={"model": "lin"}))
    assert resp.status_code == 503
    doc = _json(resp)
    assert isinstance(doc, dict)
    assert doc["error"].startswith(
        f"model 'lin' version '1' failed to load: {folder}/model.onnx: onnxruntime cannot load it"
    )
    assert (await h.guarded(h.ready, _req("GET", "/r"))).status_code == 503


async def test_selection_of_unknown_model_fails_discovery(make_package: PackageFactory) -> None:
    folder = make_package()
    plane = DataPlane(folder.parent.parent, "lin:1,ghost")
    assert plane.wait_loaded(30)
    assert not plane.ready
    assert (
        plane.discovery_error
        == f"{folder.parent.parent}: ghost: model not found in the models folder"
    )


def test_require_cuda_fails_loudly_without_a_gpu() -> None:
    from shared.pipeline.session import cuda_usable
    from shared.serving.dataplane import check_cuda

    check_cuda(False)  # not required: nothing to check
    if cuda_usable():
        check_cuda(True)
        return
    with pytest.raises(RuntimeError) as err:
        check_cuda(True)
    assert str(err.value).startswith(
        "SCOREFN_REQUIRE_CUDA is set but onnxruntime cannot create a CUDA session on this "
        "machine (available providers: "
    )
