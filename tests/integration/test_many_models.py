"""Many models: 200 packages in Azurite's model store, served by a real scoring host
process (the local Functions host) that keeps at most 20 loaded.

Outputs are checked against onnxruntime run here on the same graphs; loads, evictions
and measured sizes are read from ``GET /api/v2/repository/stats``; resident memory of
the host from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from azure.storage.blob import ContainerClient, ContentSettings
from onnx import TensorProto, helper, numpy_helper

from shared.cli import main as scorefn
from shared.errors import PackageError
from shared.localhost.azurite import AzuriteProcess, find_azurite_binary
from shared.localhost.runner import HostProcess
from shared.modelstore.blobstore import PUSH_MARKER, ModelStoreClient
from shared.modelstore.index import StoreIndex
from shared.modelstore.policy import parse_model_rules
from shared.pipeline.session import IR_VERSION
from tests.integration import stack_helpers
from tests.integration.stack_helpers import wait_ready

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

MODELS = 200
MAX_LOADED = 20
MAX_MEMORY_MB = 512
CONTAINER = "models-many"


def linear(seed: int, features: int = 4) -> tuple[bytes, np.ndarray, np.ndarray]:
    """y = x @ W + b with weights drawn from ``seed``: (graph bytes, W, b)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((features, 2)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION
    )
    return model.SerializeToString(), w, b


def package(root: Path, name: str, version: str, seed: int, *, hook: str | None = None) -> Path:
    folder = root / name / version
    folder.mkdir(parents=True, exist_ok=True)
    steps = "  - onnx: model.onnx\n"
    if hook is not None:
        (folder / "hooks.py").write_text(hook)
        steps += "  - {python: hooks.py, stage: postprocess}\n"
    (folder / "model.yaml").write_text(
        f'name: {name}\nversion: "{version}"\n'
        "inputs: [{name: x, datatype: FP32, shape: [-1, 4]}]\n"
        "outputs: [{name: y, datatype: FP32, shape: [-1, 2]}]\n"
        f"steps:\n{steps}"
        "batching: {max_batch_size: 64, max_delay_ms: 0}\n"
        "providers: [CPUExecutionProvider]\n"
    )
    (folder / "model.onnx").write_bytes(linear(seed)[0])
    return folder


def name_of(i: int) -> str:
    return f"m{i:03d}"


class Reference:
    """onnxruntime sessions on the pushed graphs (the expected outputs)."""

    def __init__(self) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self._options = so
        self.sessions: dict[tuple[str, str], ort.InferenceSession] = {}

    def add(self, name: str, version: str, seed: int) -> None:
        self.sessions[(name, version)] = ort.InferenceSession(
            linear(seed)[0], self._options, providers=["CPUExecutionProvider"]
        )

    def run(self, name: str, version: str, rows: list[list[float]]) -> np.ndarray:
        (y,) = self.sessions[(name, version)].run(["y"], {"x": np.array(rows, np.float32)})
        return np.asarray(y)


def infer_body(rows: list[list[float]]) -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}]}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def scoring_host(tmp: Path, storage: str, models: str = "*", **env: str) -> HostProcess:
    return stack_helpers.scoring_host(
        tmp,
        storage,
        {
            "SCOREFN_DEPLOYMENT": "many",
            "SCOREFN_MODEL_STORE": storage,
            "SCOREFN_MODEL_STORE_CONTAINER": CONTAINER,
            "SCOREFN_MODEL_STORE_MODELS": models,
            "SCOREFN_MODEL_STORE_REFRESH_S": "2",
            "SCOREFN_MODEL_CACHE_DIR": str(tmp / "cache"),
            "SCOREFN_MAX_LOADED_MODELS": str(MAX_LOADED),
            "SCOREFN_MAX_MEMORY_MB": str(MAX_MEMORY_MB),
            "SCOREFN_BATCH_QUEUE": "many-chunks",
            **env,
        },
    )


def stats(url: str) -> dict[str, int]:
    r = httpx.get(url + "/api/v2/repository/stats")
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.fixture(scope="module")
def store(
    azurite: AzuriteProcess, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, Reference]:
    """200 packages m000..m199 (v1, seed i) pushed to Azurite."""
    root = tmp_path_factory.mktemp("store") / "models"
    client = ModelStoreClient.from_setting(azurite.connection_string, CONTAINER)
    reference = Reference()
    for i in range(MODELS):
        folder = package(root, name_of(i), "1", seed=i)
        client.push(folder, name_of(i), "1")
        reference.add(name_of(i), "1", i)
    return azurite.connection_string, root, reference


@pytest.fixture(scope="module")
def host(
    store: tuple[str, Path, Reference], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostProcess]:
    storage, _, _ = store
    with scoring_host(tmp_path_factory.mktemp("many"), storage, "m*:all,cold*,broken*,gone*") as h:
        wait_ready(h.base_url)
        yield h


async def _send(
    client: httpx.AsyncClient, url: str, name: str, rows: list[list[float]]
) -> httpx.Response:
    return await client.post(f"{url}/api/v2/models/{name}/infer", json=infer_body(rows))


def test_random_requests_over_200_models_match_onnxruntime(
    host: HostProcess, store: tuple[str, Path, Reference]
) -> None:
    _, _, reference = store
    rng = random.Random(7)
    picks = [
        (name_of(rng.randrange(MODELS)), [[rng.uniform(-3, 3) for _ in range(4)]])
        for _ in range(400)
    ]

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            gate = asyncio.Semaphore(8)

            async def one(name: str, rows: list[list[float]]) -> httpx.Response:
                async with gate:
                    return await _send(client, host.base_url, name, rows)

            return await asyncio.gather(*(one(n, r) for n, r in picks))

    answers = asyncio.run(run())
    for (name, rows), r in zip(picks, answers, strict=True):
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["model_name"], body["model_version"]) == (name, "1")
        got = np.array(body["outputs"][0]["data"], np.float32).reshape(len(rows), 2)
        np.testing.assert_allclose(got, reference.run(name, "1", rows), rtol=1e-6, atol=1e-6)
    s = stats(host.base_url)
    assert s["loaded"] <= MAX_LOADED and s["evictions"] > 0
    assert s["memory_bytes"] <= s["max_memory_bytes"] == MAX_MEMORY_MB * 1024 * 1024


def test_score_route_selects_model_by_query_and_header(
    host: HostProcess, store: tuple[str, Path, Reference]
) -> None:
    _, _, reference = store
    rows = [[1.0, 2.0, 3.0, 4.0]]
    by_query = httpx.post(f"{host.base_url}/api/score?model=m010", json={"data": rows})
    by_header = httpx.post(
        f"{host.base_url}/api/score", json={"data": rows}, headers={"x-model": "m011:1"}
    )
    for r, name in ((by_query, "m010"), (by_header, "m011")):
        assert r.status_code == 200, r.text
        assert r.headers["x-model"] == f"{name}:1"
        np.testing.assert_allclose(
            r.json()["predictions"], reference.run(name, "1", rows), rtol=1e-6
        )


def test_fifty_concurrent_first_requests_cause_one_load(
    host: HostProcess, store: tuple[str, Path, Reference]
) -> None:
    storage, root, reference = store
    ModelStoreClient.from_setting(storage, CONTAINER).push(
        package(root, "cold", "1", seed=999), "cold", "1"
    )
    reference.add("cold", "1", 999)
    before = stats(host.base_url)

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=60)) as client:
            return await asyncio.gather(
                *(_send(client, host.base_url, "cold", [[float(i), 1, 2, 3]]) for i in range(50))
            )

    answers = asyncio.run(run())
    assert [r.status_code for r in answers] == [200] * 50
    for i, r in enumerate(answers):
        expected = reference.run("cold", "1", [[float(i), 1, 2, 3]])
        np.testing.assert_allclose(r.json()["outputs"][0]["data"], expected.ravel(), rtol=1e-6)
    after = stats(host.base_url)
    assert after["loads"] - before["loads"] == 1
    assert after["load_failures"] == before["load_failures"]


def test_unknown_model_is_404_naming_it(host: HostProcess) -> None:
    r = httpx.post(f"{host.base_url}/api/v2/models/nosuch/infer", json=infer_body([[1, 2, 3, 4]]))
    assert r.status_code == 404
    served = sorted(
        i["name"] for i in httpx.post(f"{host.base_url}/api/v2/repository/index").json()
    )
    assert r.json() == {
        "error": f"model 'nosuch' not found; this deployment serves {', '.join(served[:20])} "
        f"and {len(served) - 20} more"
    }
    r = httpx.post(
        f"{host.base_url}/api/v2/models/m001/versions/7/infer", json=infer_body([[1, 2, 3, 4]])
    )
    assert (r.status_code, r.json()) == (
        404,
        {"error": "model 'm001' has no version '7'; versions: 1"},
    )


def test_corrupt_and_mismatched_packages_fail_alone(
    host: HostProcess, store: tuple[str, Path, Reference]
) -> None:
    storage, root, _ = store
    client = ModelStoreClient.from_setting(storage, CONTAINER)
    client.push(package(root, "broken-md5", "1", seed=5), "broken-md5", "1")
    blob = ContainerClient.from_connection_string(storage, CONTAINER).get_blob_client(
        "broken-md5/1/model.onnx"
    )
    blob.set_http_headers(
        ContentSettings(content_md5=bytearray(b"\0" * 16))
    )  # bytes no longer match
    mismatched = package(root, "broken-sig", "1", seed=6)
    (mismatched / "model.yaml").write_text(
        (mismatched / "model.yaml").read_text().replace("shape: [-1, 4]", "shape: [-1, 8]")
    )
    client.push(mismatched, "broken-sig", "1")

    r = httpx.post(
        f"{host.base_url}/api/v2/models/broken-md5/infer", json=infer_body([[1, 2, 3, 4]])
    )
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    message = r.json()["error"]
    assert message.startswith("model 'broken-md5' version '1' failed to load: ")
    assert "broken-md5/1/model.onnx: Content-MD5: the downloaded bytes hash to" in message
    assert message.endswith(
        "but the blob's Content-MD5 is AAAAAAAAAAAAAAAAAAAAAA==: the package is corrupt; push it again"
    )

    r = httpx.post(
        f"{host.base_url}/api/v2/models/broken-sig/infer", json=infer_body([[1, 2, 3, 4]])
    )
    assert r.status_code == 503
    assert r.json()["error"].startswith("model 'broken-sig' version '1' failed to load: ")
    assert "broken-sig/1/model.yaml: steps: warm-up run failed" in r.json()["error"]
    assert "Got: 8 Expected: 4" in r.json()["error"]

    ok = httpx.post(f"{host.base_url}/api/v2/models/m002/infer", json=infer_body([[1, 2, 3, 4]]))
    assert ok.status_code == 200
    index = httpx.post(f"{host.base_url}/api/v2/repository/index").json()
    broken = {i["name"]: i for i in index if i["name"].startswith("broken")}
    assert broken["broken-md5"]["state"] == "UNAVAILABLE"
    assert broken["broken-md5"]["reason"].startswith("failed to load: ")


def test_repository_index_load_and_unload(host: HostProcess) -> None:
    url = host.base_url
    r = httpx.post(f"{url}/api/v2/repository/models/m150/load")
    assert (r.status_code, r.json()) == (200, [{"name": "m150", "version": "1", "state": "READY"}])
    ready = httpx.post(f"{url}/api/v2/repository/index", json={"ready": True}).json()
    assert {"name": "m150", "version": "1", "state": "READY", "reason": ""} in ready
    assert all(i["state"] == "READY" for i in ready) and len(ready) <= MAX_LOADED
    assert httpx.get(f"{url}/api/v2/models/m150/ready").status_code == 200
    r = httpx.post(f"{url}/api/v2/repository/models/m150/unload")
    assert (r.status_code, r.json()) == (
        200,
        [{"name": "m150", "version": "1", "state": "UNAVAILABLE"}],
    )
    everything = httpx.post(f"{url}/api/v2/repository/index").json()
    assert {
        "name": "m150",
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "not loaded",
    } in everything
    assert len({i["name"] for i in everything}) >= MODELS
    not_ready = httpx.get(f"{url}/api/v2/models/m150/ready")
    assert not_ready.status_code == 503
    # metadata loads on demand
    meta = httpx.get(f"{url}/api/v2/models/m150")
    assert meta.status_code == 200 and meta.json()["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, 4]}
    ]
    bad = httpx.post(f"{url}/api/v2/repository/index", content=b'{"ready": 1}')
    assert (bad.status_code, bad.json()) == (
        400,
        {"error": "the repository index body: 'ready' must be a boolean; got a number"},
    )
    missing = httpx.post(f"{url}/api/v2/repository/models/nosuch/load")
    assert missing.status_code == 404 and "model 'nosuch' not found" in missing.json()["error"]


def test_memory_stays_within_bound_over_5000_requests(host: HostProcess) -> None:
    """A skewed mix (most requests on 15 models, the rest over all 200) churns the
    working set; the measured total stays under the bound and the process does not grow."""
    rng = random.Random(11)
    hot = [name_of(i) for i in range(15)]
    names = [
        rng.choice(hot) if rng.random() < 0.85 else name_of(rng.randrange(MODELS))
        for _ in range(5000)
    ]

    async def run(batch: list[str]) -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            gate = asyncio.Semaphore(8)

            async def one(name: str) -> int:
                async with gate:
                    return (await _send(client, host.base_url, name, [[1, 2, 3, 4]])).status_code

            return await asyncio.gather(*(one(n) for n in batch))

    assert set(asyncio.run(run(names[:1000]))) == {200}
    rss_start = rss_kib(host.pid)
    peak = 0
    for start in range(1000, 5000, 1000):
        assert set(asyncio.run(run(names[start : start + 1000]))) == {200}
        s = stats(host.base_url)
        assert s["memory_bytes"] <= s["max_memory_bytes"]
        assert s["loaded"] <= MAX_LOADED
        peak = max(peak, rss_kib(host.pid))
    s = stats(host.base_url)
    assert s["evictions"] > 100  # the set really churned
    # Loading and evicting hundreds of models leaves resident memory where it was
    # (allowing 64 MiB for allocator fragmentation).
    assert peak - rss_start < 64 * 1024, (rss_start, peak)
    print(f"\nRSS after 1,000 requests {rss_start} KiB, peak over the next 4,000 {peak} KiB; {s}")


def test_memory_bound_limits_the_working_set(
    store: tuple[str, Path, Reference], tmp_path: Path
) -> None:
    """With 1 MiB for models, the measured sizes (not the count of 20) decide how many
    stay loaded."""
    storage, _, reference = store
    with scoring_host(tmp_path, storage, "m*", SCOREFN_MAX_MEMORY_MB="1") as h:
        wait_ready(h.base_url)
        with httpx.Client(timeout=30) as client:
            for i in range(40):
                r = client.post(
                    f"{h.base_url}/api/v2/models/{name_of(i)}/infer",
                    json=infer_body([[1, 2, 3, 4]]),
                )
                assert r.status_code == 200, r.text
                expected = reference.run(name_of(i), "1", [[1, 2, 3, 4]]).ravel()
                np.testing.assert_allclose(r.json()["outputs"][0]["data"], expected, rtol=1e-6)
                s = stats(h.base_url)
                assert s["memory_bytes"] <= s["max_memory_bytes"] == 1024 * 1024
        assert 1 <= s["loaded"] < MAX_LOADED and s["evictions"] == 40 - s["loaded"]


def test_pushed_version_is_served_within_10_s_and_in_flight_finish_on_theirs(
    host: HostProcess, store: tuple[str, Path, Reference]
) -> None:
    storage, root, reference = store
    client = ModelStoreClient.from_setting(storage, CONTAINER)
    slow = "import time\ndef postprocess(t):\n    time.sleep(3)\n    return {}\n"
    client.push(package(root, "gone", "1", seed=41, hook=slow), "gone", "1")
    reference.add("gone", "1", 41)
    reference.add("gone", "2", 42)
    rows = [[0.5, 1.5, 2.5, 3.5]]

    async def run() -> tuple[httpx.Response, float]:
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await _send(http, host.base_url, "gone", rows)).status_code == 200  # loaded
            in_flight = asyncio.create_task(_send(http, host.base_url, "gone", rows))
            await asyncio.sleep(0.5)  # the request now holds version 1
            await asyncio.to_thread(client.push, package(root, "gone", "2", seed=42), "gone", "2")
            pushed = time.monotonic()
            while True:
                r = await _send(http, host.base_url, "gone", rows)
                if r.status_code == 200 and r.json()["model_version"] == "2":
                    break
                assert time.monotonic() - pushed < 10, r.text
                await asyncio.sleep(0.2)
            return await in_flight, time.monotonic() - pushed

    old, seconds = asyncio.run(run())
    assert seconds < 10
    assert old.status_code == 200 and old.json()["model_version"] == "1"
    np.testing.assert_allclose(
        old.json()["outputs"][0]["data"], reference.run("gone", "1", rows).ravel(), rtol=1e-6
    )
    new = httpx.post(f"{host.base_url}/api/v2/models/gone/infer", json=infer_body(rows)).json()
    np.testing.assert_allclose(
        new["outputs"][0]["data"], reference.run("gone", "2", rows).ravel(), rtol=1e-6
    )


def test_unreachable_store_serves_cached_and_503s_cold(tmp_path: Path) -> None:
    binary = find_azurite_binary()
    if binary is None:
        pytest.skip("node_modules/.bin/azurite is missing")
    storage_dir = tmp_path / "azurite"
    storage_dir.mkdir()
    own = AzuriteProcess(storage_dir, binary=binary).start()
    try:
        client = ModelStoreClient.from_setting(own.connection_string, CONTAINER)
        for i in range(3):
            client.push(package(tmp_path / "models", name_of(i), "1", seed=i), name_of(i), "1")
        with scoring_host(
            tmp_path, own.connection_string, "*", SCOREFN_MODEL_STORE_REFRESH_S="1"
        ) as h:
            wait_ready(h.base_url)
            warm = httpx.post(
                f"{h.base_url}/api/v2/models/m000/infer", json=infer_body([[1, 2, 3, 4]])
            )
            assert warm.status_code == 200
            # m002: downloaded, then unloaded: only its disk copy is left
            url2 = f"{h.base_url}/api/v2/models/m002/infer"
            on_disk = httpx.post(url2, json=infer_body([[1, 2, 3, 4]]))
            assert on_disk.status_code == 200
            assert httpx.post(f"{h.base_url}/api/v2/repository/models/m002/unload").json() == [
                {"name": "m002", "version": "1", "state": "UNAVAILABLE"}
            ]
            own.stop()
            deadline = time.monotonic() + 15
            while not stats(h.base_url)["store_error"]:  # until a listing has failed
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert "cannot be reached (listing packages: ServiceRequestError)" in str(
                stats(h.base_url)["store_error"]
            )
            reloaded = httpx.post(url2, json=infer_body([[1, 2, 3, 4]]))
            assert reloaded.status_code == 200, reloaded.text
            assert reloaded.json()["outputs"] == on_disk.json()["outputs"]
            cached = httpx.post(
                f"{h.base_url}/api/v2/models/m000/infer", json=infer_body([[1, 2, 3, 4]])
            )
            assert cached.status_code == 200
            assert cached.json()["outputs"] == warm.json()["outputs"]
            cold = httpx.post(
                f"{h.base_url}/api/v2/models/m001/infer",
                json=infer_body([[1, 2, 3, 4]]),
                timeout=30,
            )
            assert cold.status_code == 503 and cold.headers["retry-after"] == "5"
            assert cold.json()["error"].startswith("model store http://127.0.0.1:")
            assert "cannot be reached" in cold.json()["error"]
            unknown = httpx.post(
                f"{h.base_url}/api/v2/models/new/infer", json=infer_body([[1, 2, 3, 4]]), timeout=30
            )
            assert unknown.status_code == 503 and unknown.headers["retry-after"] == "5"
            assert (
                httpx.post(
                    f"{h.base_url}/api/v2/models/m000/infer", json=infer_body([[1, 2, 3, 4]])
                ).status_code
                == 200
            )
    finally:
        own.stop()


def test_cli_push_validates_and_uploads(
    azurite: AzuriteProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "models"
    package(root, "clipkg", "1", seed=1)
    package(root, "clipkg", "2", seed=2)
    args = ["models", "push", "--storage", azurite.connection_string, "--container", "models-cli"]
    assert scorefn([*args, str(root / "clipkg")]) == 0
    assert capsys.readouterr().out == "pushed clipkg:2 (2 files) to models-cli/\n"
    assert scorefn([*args, str(root / "clipkg"), "--version", "1"]) == 0
    assert scorefn([*args, str(root / "clipkg"), "--version", "1"]) == 2
    assert capsys.readouterr().err.endswith(
        "version '1' of model 'clipkg' is already in the store (2 files); push another "
        "version or pass --overwrite\n"
    )
    assert scorefn([*args, str(root / "clipkg"), "--version", "9"]) == 2
    assert (
        capsys.readouterr().err
        == f"scorefn: {root / 'clipkg'}: has no version '9'; versions: 1, 2\n"
    )
    listing = ModelStoreClient.from_setting(azurite.connection_string, "models-cli").list_packages()
    assert sorted(listing) == [("clipkg", "1"), ("clipkg", "2")]
    onnx = next(f for f in listing[("clipkg", "2")].files if f.path == "model.onnx")
    import hashlib

    data = (root / "clipkg" / "2" / "model.onnx").read_bytes()
    assert onnx.md5 == hashlib.md5(data).digest(), base64.b64encode(onnx.md5 or b"")


def test_a_push_names_its_content_so_the_names_probe_sees_overwrites(
    azurite: AzuriteProcess, tmp_path: Path
) -> None:
    """Push writes a marker named by the pushed content last; the index's names-only probe
    then notices a version pushed again with other content, and lists in full."""
    client = ModelStoreClient.from_setting(azurite.connection_string, "models-probe")
    root = tmp_path / "models"
    client.push(package(root, "p", "1", seed=1), "p", "1")

    def markers() -> list[str]:
        return sorted(n for n in client.list_names() if PUSH_MARKER in n)

    (first,) = markers()
    index = StoreIndex(
        client.list_packages, parse_model_rules("*"), prober=client.list_names, full_every=100
    )
    before = index.refresh()
    assert before is not None and index.full_listings == 1
    files = sorted(f.path for f in before.models["p"]["1"].files)
    assert files == ["model.onnx", "model.yaml"]  # the marker is not a package file
    client.push(package(root, "p", "1", seed=1), "p", "1", overwrite=True)  # same content
    assert markers() == [first]
    index.refresh()
    assert index.full_listings == 1  # nothing changed: the probe answered
    client.push(package(root, "p", "1", seed=2), "p", "1", overwrite=True)  # other weights
    (second,) = markers()
    assert second != first
    after = index.refresh()
    assert after is not None and index.full_listings == 2
    assert after.models["p"]["1"].digest != before.models["p"]["1"].digest
    with pytest.raises(PackageError, match=r"already in the store \(2 files\)"):
        client.push(package(root, "p", "1", seed=3), "p", "1")
