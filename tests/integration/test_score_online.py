"""The scoring app served by the real local host, called over HTTP on 127.0.0.1.

One host serves the example models (fraud v1 + vision); a second serves a models folder
made for the limits (a slow model with a tiny queue, a model whose hook loads slowly,
a 1 MB body limit and a short timeout).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as tc

from shared.localhost.azurite import AzuriteProcess
from shared.localhost.runner import HostProcess
from tests.integration.stack_helpers import scoring_host, wait_ready

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import build_models  # noqa: E402

pytestmark = pytest.mark.integration

COLUMNS = [
    "amount", "hour", "merchant_risk", "distance_km",
    "foreign", "txn_24h", "avg_amount_30d", "card_present",
]  # fmt: skip
ROWS = [[5000, 3, 0.95, 400, 1, 25, 20, 0], [20, 14, 0.1, 2, 0, 1, 25, 1]]


def _host(tmp: Path, azurite: AzuriteProcess, env: dict[str, str]) -> HostProcess:
    return scoring_host(tmp, azurite.connection_string, env)


@pytest.fixture(scope="module")
def scoring(
    azurite: AzuriteProcess, example_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("scoring")
    env = {
        "SCOREFN_MODELS": "fraud:1,vision",
        "SCOREFN_DEPLOYMENT": "blue",
        "SCOREFN_MODELS_DIR": str(example_models),
    }
    with _host(tmp, azurite, env) as host:
        wait_ready(host.base_url)
        yield host.base_url


SLEEPY_YAML = """\
name: sleepy
version: "1"
inputs: [{name: x, datatype: FP32, shape: [-1, 4]}]
outputs: [{name: y, datatype: FP32, shape: [-1, 3]}]
steps:
  - onnx: model.onnx
  - {python: hooks.py, stage: postprocess}
providers: [CPUExecutionProvider]
"""
SLEEPY_HOOK = (
    "import time\ndef init(params):\n    time.sleep(4)\ndef postprocess(t):\n    return {}\n"
)


@pytest.fixture(scope="module")
def limits(
    azurite: AzuriteProcess, example_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A host whose models are: mlp (tiny queue), fraud 1, then sleepy (4 s to load)."""
    tmp = tmp_path_factory.mktemp("limits")
    models = tmp / "models"
    mlp = build_models.build_mlp(models)
    yaml_text = (mlp / "model.yaml").read_text()
    (mlp / "model.yaml").write_text(
        yaml_text.replace("max_queue_rows: 8192", "max_queue_rows: 300").replace(
            "max_batch_size: 64", "max_batch_size: 256"
        )
    )
    shutil.copytree(example_models / "fraud" / "1", models / "fraud" / "1")
    sleepy = models / "sleepy" / "1"
    sleepy.mkdir(parents=True)
    (sleepy / "model.yaml").write_text(SLEEPY_YAML)
    (sleepy / "hooks.py").write_text(SLEEPY_HOOK)
    from tests.conftest import linear_graph

    (sleepy / "model.onnx").write_bytes(linear_graph())
    env = {
        "SCOREFN_MODELS": "mlp,fraud:1,sleepy",
        "SCOREFN_DEPLOYMENT": "limits",
        "SCOREFN_MODELS_DIR": str(models),
        "SCOREFN_MAX_BODY_BYTES": str(1_000_000),
        "SCOREFN_REQUEST_TIMEOUT_S": "5",
    }
    with _host(tmp, azurite, env) as host:
        yield host.base_url


def _infer_body(rows: list[list[float]]) -> dict[str, object]:
    return {
        "id": "r1",
        "inputs": [{"name": "x", "shape": [len(rows), 8], "datatype": "FP32", "data": rows}],
    }


def _raw_fraud(example_models: Path, rows: list[list[float]]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(
        str(example_models / "fraud" / "1" / "model.onnx"), so, providers=["CPUExecutionProvider"]
    )
    return list(sess.run(["label", "probabilities"], {"x": np.array(rows, np.float32)}))


# ------------------------------------------------------------------ health, metadata


def test_health_and_metadata(scoring: str) -> None:
    assert httpx.get(scoring + "/api/v2/health/live").json() == {"live": True}
    r = httpx.get(scoring + "/api/v2/health/ready")
    assert (r.status_code, r.json(), r.headers["x-deployment"]) == (200, {"ready": True}, "blue")
    server = httpx.get(scoring + "/api/v2").json()
    assert server["name"] == "scorefn" and "binary_tensor_data" in server["extensions"]
    meta = httpx.get(scoring + "/api/v2/models/fraud").json()
    assert meta == {
        "name": "fraud",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 8]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "risk", "datatype": "BYTES", "shape": [-1]},
        ],
    }
    assert httpx.get(scoring + "/api/v2/models/fraud/versions/1").json() == meta
    assert httpx.get(scoring + "/api/v2/models/vision").json()["platform"] == "ensemble"
    r = httpx.get(scoring + "/api/v2/models/fraud/ready")
    assert (r.status_code, r.json()) == (200, {"name": "fraud", "ready": True})


def test_openapi_and_docs(scoring: str) -> None:
    doc = httpx.get(scoring + "/api/openapi.json").json()
    assert doc["openapi"] == "3.0.3"
    assert {
        "/api/v2/models/{model}/infer",
        "/api/v2/models/{model}/versions/{version}/infer",
        "/api/score",
        "/api/v2/health/ready",
    } <= set(doc["paths"])
    page = httpx.get(scoring + "/api/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assert page.headers["content-type"].startswith("text/html")


# ------------------------------------------------------------------ inference


def test_v2_json_infer_equals_raw(scoring: str, example_models: Path) -> None:
    r = httpx.post(scoring + "/api/v2/models/fraud/infer", json=_infer_body(ROWS))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("fraud", "1", "r1")
    out = {o["name"]: o for o in body["outputs"]}
    label, proba = _raw_fraud(example_models, ROWS)
    assert out["label"]["data"] == label.tolist()
    np.testing.assert_allclose(
        np.array(out["probabilities"]["data"]).reshape(2, 2), proba, rtol=1e-6
    )
    assert out["risk"] == {
        "name": "risk",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["highly_suspicious", "not_fraud"],
    }


def test_v2_requested_outputs_and_version(scoring: str) -> None:
    body = {**_infer_body(ROWS), "outputs": [{"name": "risk"}]}
    r = httpx.post(scoring + "/api/v2/models/fraud/versions/1/infer", json=body)
    assert [o["name"] for o in r.json()["outputs"]] == ["risk"]


def test_tritonclient_fraud_binary_and_json(scoring: str, example_models: Path) -> None:
    client = tc.InferenceServerClient(scoring.removeprefix("http://") + "/api")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("fraud")
        x = np.array(ROWS, np.float32)
        label, proba = _raw_fraud(example_models, ROWS)
        for binary in (True, False):
            inp = tc.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            outs = [
                tc.InferRequestedOutput("probabilities", binary_data=binary),
                tc.InferRequestedOutput("risk", binary_data=binary),
                tc.InferRequestedOutput("label", binary_data=binary),
            ]
            res = client.infer("fraud", [inp], outputs=outs)
            np.testing.assert_array_equal(res.as_numpy("label"), label)
            np.testing.assert_allclose(res.as_numpy("probabilities"), proba, rtol=1e-6)
            risk = [v.decode() if isinstance(v, bytes) else v for v in res.as_numpy("risk")]
            assert risk == ["highly_suspicious", "not_fraud"]
    finally:
        client.close()


def test_tritonclient_vision_ensemble(scoring: str, example_models: Path) -> None:
    from shared.pipeline.model import Model
    from shared.pipeline.package import load_package

    image = np.random.default_rng(0).integers(0, 256, (3, 3, 64, 64), dtype=np.uint8)
    expected = Model.load(load_package(example_models / "vision")).predict({"image": image})
    client = tc.InferenceServerClient(scoring.removeprefix("http://") + "/api")
    try:
        inp = tc.InferInput("image", list(image.shape), "UINT8")
        inp.set_data_from_numpy(image, binary_data=True)
        res = client.infer("vision", [inp])
        for name in ("probabilities", "class_id", "top_classes", "quality"):
            np.testing.assert_array_equal(res.as_numpy(name), expected[name])
        meta = client.get_model_metadata("vision")
        assert meta["platform"] == "ensemble"
    finally:
        client.close()


@pytest.mark.parametrize(
    "payload",
    [
        {"input_data": {"columns": COLUMNS, "index": [10, 11], "data": ROWS}},
        {"input_data": ROWS},
        {"data": ROWS},
        {"instances": ROWS},
        {"instances": [dict(zip(COLUMNS, row, strict=True)) for row in ROWS]},
        {"input_data": {"columns": COLUMNS[::-1], "data": [row[::-1] for row in ROWS]}},
    ],
    ids=["azureml-split", "azureml-rows", "data", "tfserving", "tfserving-records", "reordered"],
)
def test_score_payload_styles(scoring: str, payload: dict[str, object]) -> None:
    r = httpx.post(scoring + "/api/score", json=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["predictions"] == ["highly_suspicious", "not_fraud"]
    assert set(body["outputs"]) == {"label", "probabilities", "risk"}
    assert r.headers["x-model"] == "fraud:1"
    if "index" in str(payload):
        assert body["index"] == [10, 11]


def test_score_other_model_by_query_and_header(scoring: str) -> None:
    image = np.zeros((1, 3, 64, 64), np.uint8).tolist()
    r = httpx.post(scoring + "/api/score?model=vision", json={"instances": image})
    assert r.status_code == 200 and r.headers["x-model"] == "vision:1"
    r = httpx.post(
        scoring + "/api/score", json={"instances": image}, headers={"x-model": "vision:1"}
    )
    assert r.status_code == 200 and len(r.json()["outputs"]["probabilities"][0]) == 10


# ------------------------------------------------------------------ errors


def _err(r: httpx.Response) -> tuple[int, dict[str, str]]:
    return r.status_code, r.json()


def test_bad_json(scoring: str) -> None:
    r = httpx.post(scoring + "/api/v2/models/fraud/infer", content=b"{not json")
    assert _err(r) == (
        400,
        {
            "error": "the inference request is not valid JSON: unexpected character, "
            "expected a string key: line 1 column 2 (char 1)"
        },
    )


def test_unknown_model_and_version(scoring: str) -> None:
    assert _err(httpx.post(scoring + "/api/v2/models/nope/infer", json=_infer_body(ROWS))) == (
        404,
        {"error": "model 'nope' not found; this deployment serves fraud, vision"},
    )
    assert _err(httpx.get(scoring + "/api/v2/models/fraud/versions/9")) == (
        404,
        {"error": "model 'fraud' has no version '9'; versions: 1"},
    )
    r = httpx.post(scoring + "/api/score?model=ghost", json={"data": ROWS})
    assert _err(r) == (
        404,
        {"error": "model 'ghost' not found; this deployment serves fraud, vision"},
    )


def test_wrong_input_name(scoring: str) -> None:
    body = _infer_body(ROWS)
    body["inputs"][0]["name"] = "features"  # type: ignore[index]
    assert _err(httpx.post(scoring + "/api/v2/models/fraud/infer", json=body)) == (
        400,
        {"error": "input 'features' is not an input of model fraud:1; its inputs are x"},
    )


def test_wrong_dtype(scoring: str) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "INT64", "data": list(range(8))}]}
    assert _err(httpx.post(scoring + "/api/v2/models/fraud/infer", json=body)) == (
        400,
        {
            "error": "input 'x' has datatype INT64; model fraud:1 expects FP32 (or FP64, cast safely)"
        },
    )


def test_wrong_shape(scoring: str) -> None:
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": list(range(8))}]}
    assert _err(httpx.post(scoring + "/api/v2/models/fraud/infer", json=body)) == (
        400,
        {"error": "input 'x' has shape [2, 4]; model fraud:1 expects [-1, 8] (-1 = any size)"},
    )


def test_unknown_score_column(scoring: str) -> None:
    payload = {"input_data": {"columns": [*COLUMNS[:-1], "pin"], "data": ROWS}}
    status, body = _err(httpx.post(scoring + "/api/score", json=payload))
    assert status == 400
    assert "'pin'" in body["error"] and "card_present" in body["error"]


def test_nan_refused(scoring: str) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": [1] * 8}]}
    binary = tc.InferInput("x", [1, 8], "FP32")
    x = np.ones((1, 8), np.float32)
    x[0, 3] = np.nan
    binary.set_data_from_numpy(x, binary_data=True)
    data, json_size = tc.InferenceServerClient.generate_request_body([binary])
    r = httpx.post(
        scoring + "/api/v2/models/fraud/infer",
        content=data,
        headers={"Inference-Header-Content-Length": str(json_size)},
    )
    assert _err(r) == (
        400,
        {
            "error": "input 'x' holds NaN or infinity (first at row 0); model fraud:1 accepts finite values only"
        },
    )
    assert httpx.post(scoring + "/api/v2/models/fraud/infer", json=body).status_code == 200


def test_garbage_never_500(scoring: str) -> None:
    rng = np.random.default_rng(5)
    bodies = [rng.bytes(int(n)) for n in rng.integers(0, 400, 25)] + [
        b"", b"null", b"[]", b'{"inputs": 5}', b'{"inputs": [{}]}', b'{"data": [[1, 2]]}',
        b'{"instances": "x"}', b'{"input_data": {"columns": 3}}',
    ]  # fmt: skip
    routes = ["/api/v2/models/fraud/infer", "/api/score", "/api/v2/models/vision/infer"]
    with httpx.Client(base_url=scoring) as client:
        for body in bodies:
            for route in routes:
                r = client.post(route, content=body)
                assert 400 <= r.status_code < 500, (route, body, r.text)
                assert "error" in r.json()
            r = client.post(
                "/api/v2/models/fraud/infer",
                content=body,
                headers={"Inference-Header-Content-Length": "3"},
            )
            assert 400 <= r.status_code < 500
        assert client.get("/api/v2/health/ready").status_code == 200


# ------------------------------------------------------------------ limits


def test_loading_model_is_503_then_ready(limits: str) -> None:
    # sleepy's hook takes 4 s to init: the host answers at once, not ready yet.
    r = httpx.get(limits + "/api/v2/health/ready")
    assert (r.status_code, r.json(), r.headers["retry-after"]) == (503, {"ready": False}, "1")
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    r = httpx.post(limits + "/api/v2/models/sleepy/infer", json=body)
    assert _err(r) == (503, {"error": "model 'sleepy' version '1' is still loading"})
    assert r.headers["retry-after"] == "1"
    wait_ready(limits)
    assert httpx.post(limits + "/api/v2/models/sleepy/infer", json=body).status_code == 200


def test_body_over_limit_is_413(limits: str) -> None:
    r = httpx.post(limits + "/api/score", content=b"[" + b"1," * 600_000 + b"1]")
    assert _err(r) == (413, {"error": "request body is 1200003 bytes; the limit is 1000000 bytes"})


def test_full_queue_is_429(limits: str) -> None:
    wait_ready(limits)
    x = np.random.default_rng(1).standard_normal((250, 256)).astype(np.float32)
    inp = tc.InferInput("x", [250, 256], "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    data, json_size = tc.InferenceServerClient.generate_request_body([inp])
    headers = {"Inference-Header-Content-Length": str(json_size)}

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=limits, timeout=30) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post("/api/v2/models/mlp/infer", content=data, headers=headers)
                        for _ in range(6)
                    )
                )
            )

    responses = asyncio.run(flood())
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 429 in codes, codes
    rejected = next(r for r in responses if r.status_code == 429)
    assert rejected.headers["retry-after"].isdigit()
    assert "mlp:1" in rejected.json()["error"] and "300" in rejected.json()["error"]
    # The process keeps serving.
    assert httpx.post(limits + "/api/score?model=fraud", json={"data": ROWS}).status_code == 200
