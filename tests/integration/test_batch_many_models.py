"""Partitioned batch jobs over many models: a real scoring host (the local Functions host)
on Azurite serves 50 store packages from its model store with a 20-model working set and
scores files whose rows each name their store's model (``model=sales-{store_id}``).

Every row must come out exactly once (predictions or errors), in order, each scored by its
own store's graph: a sample is checked against onnxruntime run here on that graph.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from azure.data.tables import TableClient
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings
from onnx import TensorProto, helper, numpy_helper

from shared.batch.jobs import BatchJobs, JobRequest
from shared.errors import BatchInputError
from shared.localhost.azurite import AzuriteProcess
from shared.localhost.ports import free_ports
from shared.localhost.runner import HostProcess
from shared.modelstore.blobstore import ModelStoreClient
from shared.pipeline.session import IR_VERSION
from shared.settings import BatchSettings
from tests.integration.stack_helpers import (
    batch_names,
    create_batch_resources,
    fast_queue_host_json,
    scoring_host,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

STORES = 50
FEATURES = ["f0", "f1", "f2", "f3"]
CONTAINER = "models-stores"
NAMES = batch_names("pm")
TIMEOUT = 60.0


def store_graph(seed: int) -> bytes:
    """y = x @ W + b, W and b drawn from ``seed``: a distinct tiny model per store."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((len(FEATURES), 2)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "store",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, len(FEATURES)])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION
    )
    data: bytes = model.SerializeToString()
    return data


def store_package(root: Path, name: str, seed: int, *, inputs: str | None = None) -> Path:
    folder = root / name / "1"
    folder.mkdir(parents=True, exist_ok=True)
    x = inputs or f"{{name: x, datatype: FP32, shape: [-1, 4], columns: [{', '.join(FEATURES)}]}}"
    (folder / "model.yaml").write_text(
        f'name: {name}\nversion: "1"\n'
        f"inputs: [{x}]\n"
        "outputs: [{name: y, datatype: FP32, shape: [-1, 2], columns: [demand, margin]}]\n"
        "steps:\n  - onnx: model.onnx\n"
        "batching: {max_batch_size: 1024, max_delay_ms: 0}\n"
        "providers: [CPUExecutionProvider]\n"
    )
    (folder / "model.onnx").write_bytes(store_graph(seed))
    return folder


def push_stores(storage: str, root: Path, stores: int, container: str = CONTAINER) -> None:
    """``sales-1`` .. ``sales-<stores>`` (seed = store id) pushed to the model store."""
    client = ModelStoreClient.from_setting(storage, container)
    for store in range(1, stores + 1):
        name = f"sales-{store}"
        client.push(store_package(root, name, store), name, "1", overwrite=True)


class Reference:
    """onnxruntime sessions on each store's graph (the expected outputs)."""

    def __init__(self) -> None:
        self._sessions: dict[int, ort.InferenceSession] = {}

    def run(self, store: int, x: np.ndarray) -> np.ndarray:
        if store not in self._sessions:
            self._sessions[store] = ort.InferenceSession(
                store_graph(store), providers=["CPUExecutionProvider"]
            )
        (y,) = self._sessions[store].run(["y"], {"x": x.astype(np.float32)})
        return np.asarray(y)


def store_host(tmp: Path, storage: str, *, max_loaded: int = 20, **env: str) -> HostProcess:
    """A scoring host whose data plane is the model store (``sales-*`` and ``other-*``)."""
    (port,) = free_ports(1)
    return scoring_host(
        tmp,
        storage,
        {
            "SCOREFN_DEPLOYMENT": "stores",
            "SCOREFN_MODEL_STORE": storage,
            "SCOREFN_MODEL_STORE_CONTAINER": CONTAINER,
            "SCOREFN_MODEL_STORE_MODELS": "sales-*,odd-*",
            "SCOREFN_MODEL_CACHE_DIR": str(tmp / "cache"),
            "SCOREFN_MAX_LOADED_MODELS": str(max_loaded),
            "SCOREFN_BATCH_CHUNK_BYTES": "131072",
            "SCOREFN_BATCH_CHUNK_ROWS": "2000",
            "SCOREFN_LOCALHOST_BLOB_POLL_INTERVAL": "0.2",
            **NAMES,
            **env,
        },
        port=port,
        host_id=f"pm-{port}",
        host_json=fast_queue_host_json(tmp),
    )


@pytest.fixture(scope="module")
def storage(azurite: AzuriteProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("stores")
    push_stores(azurite.connection_string, root, STORES)
    # a store whose model reads other columns: its rows are error rows, not a failed chunk
    odd = '{name: x, datatype: FP32, shape: [-1, 4], columns: ["a", "b", "c", "d"]}'
    ModelStoreClient.from_setting(azurite.connection_string, CONTAINER).push(
        store_package(root, "sales-odd", 99, inputs=odd), "sales-odd", "1", overwrite=True
    )
    # a package whose bytes do not match their Content-MD5: its rows are error rows too
    ModelStoreClient.from_setting(azurite.connection_string, CONTAINER).push(
        store_package(root, "sales-corrupt", 98), "sales-corrupt", "1", overwrite=True
    )
    ContainerClient.from_connection_string(azurite.connection_string, CONTAINER).get_blob_client(
        "sales-corrupt/1/model.onnx"
    ).set_http_headers(ContentSettings(content_md5=bytearray(b"\0" * 16)))
    create_batch_resources(azurite.connection_string, "pm")
    return azurite.connection_string


@pytest.fixture(scope="module")
def host(storage: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostProcess]:
    with store_host(tmp_path_factory.mktemp("pm-host"), storage) as running:
        yield running


def _summary(storage: str, blob: str, timeout: float = TIMEOUT) -> tuple[str, dict[str, Any]]:
    table = TableClient.from_connection_string(storage, "pmjobs")
    output = BlobServiceClient.from_connection_string(storage).get_container_client("pm-output")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in table.query_entities("blob eq @b", parameters={"b": blob}):
            if job["state"] in ("succeeded", "failed"):
                path = f"{job['PartitionKey']}/{job['RowKey']}/summary.json"
                return str(job["RowKey"]), json.loads(output.download_blob(path).readall())
        time.sleep(0.2)
    raise TimeoutError(f"no finished job for {blob} within {timeout} s")


def _read(storage: str, path: str) -> bytes:
    service = BlobServiceClient.from_connection_string(storage)
    return service.get_container_client("pm-output").download_blob(path).readall()


def sales_rows(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Store ids (text) 1..STORES for ``n`` rows and their features."""
    rng = np.random.default_rng(seed)
    stores = [str(s) for s in rng.integers(1, STORES + 1, n)]
    return stores, rng.uniform(-3, 3, (n, len(FEATURES))).astype(np.float32)


def test_csv_rows_scored_by_their_stores_model_in_order(host: HostProcess, storage: str) -> None:
    n = 20_000
    stores, x = sales_rows(n, seed=11)
    missing = set(range(100, n, 997))  # store 77 has no model
    empty = {5, 15_001}
    odd = {42, 43}
    corrupt = {60, 12_345}
    for i in missing:
        stores[i] = "77"
    for i in empty:
        stores[i] = ""
    for i in odd:
        stores[i] = "odd"
    for i in corrupt:
        stores[i] = "corrupt"
    table = pa.table(
        {
            "sale_id": [f"s{i:06d}" for i in range(n)],
            "store_id": stores,
            **{c: x[:, j] for j, c in enumerate(FEATURES)},
        }
    )
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    lines = buffer.getvalue().decode().splitlines()
    lines[1 + 7] = lines[1 + 7].replace(lines[1 + 7].split(",")[2], "many", 1)  # not a number
    name = "sales/model=sales-{store_id}/day1.csv"
    BlobServiceClient.from_connection_string(storage).get_container_client("pm-input").upload_blob(
        name, ("\n".join(lines) + "\n").encode(), overwrite=True
    )

    job, summary = _summary(storage, name)
    bad = missing | empty | odd | corrupt | {7}
    assert summary["status"] == "succeeded", summary
    assert summary["chunks"] >= 4
    assert (summary["rows"], summary["predicted"], summary["failed_rows"]) == (
        n,
        n - len(bad),
        len(bad),
    )
    assert summary["model"] == "sales-{store_id}:latest"

    errors = [json.loads(line) for line in _read(storage, f"sales/{job}/errors.jsonl").splitlines()]
    reasons = {e["row"]: e["reason"] for e in errors}
    assert [e["row"] for e in errors] == sorted(bad)
    for i in missing:
        assert reasons[i] == "model 'sales-77' not found in the model store"
    for i in empty:
        assert reasons[i] == "partition column 'store_id' is empty"
    for i in odd:
        assert reasons[i].startswith(
            "model 'sales-odd' version '1' has a signature other than the job's reference "
            "model sales-1:1 (inputs x FP32 [-1, 4] columns a, b, c, d; outputs y FP32 "
            "[-1, 2] columns demand, margin; the reference has inputs x FP32 [-1, 4] columns "
            "f0, f1, f2, f3; outputs"
        ), reasons[i]
    for i in corrupt:
        assert reasons[i].startswith("model 'sales-corrupt' version '1': failed to load: ")
        assert "sales-corrupt/1/model.onnx: Content-MD5: the downloaded bytes hash to" in reasons[i]
    assert reasons[7] == "column 'f0' 'many' is not a number (FP32)"

    predictions = pacsv.read_csv(
        pa.py_buffer(_read(storage, f"sales/{job}/predictions.csv")),
        convert_options=pacsv.ConvertOptions(column_types={"store_id": pa.string()}),
    )
    assert predictions.column_names == ["row", "sale_id", "store_id", "demand", "margin"]
    rows = predictions["row"].to_pylist()
    assert rows == sorted(set(range(n)) - bad)  # every row once, in order
    assert predictions["sale_id"].to_pylist() == [f"s{i:06d}" for i in rows]
    assert predictions["store_id"].to_pylist() == [stores[i] for i in rows]

    reference = Reference()
    got = np.column_stack([predictions["demand"].to_numpy(), predictions["margin"].to_numpy()])
    sample = np.random.default_rng(5).choice(len(rows), 1000, replace=False)
    for k in sample:
        i = rows[k]
        expected = reference.run(int(stores[i]), x[i : i + 1])[0]
        np.testing.assert_allclose(got[k], expected, rtol=1e-5, atol=1e-5)
    # the other models differ, so a row scored by a wrong store's model would fail above
    assert not np.allclose(reference.run(1, x[:1]), reference.run(2, x[:1]))


def test_job_api_template_on_parquet_and_refusals(host: HostProcess, storage: str) -> None:
    names = {k.removeprefix("SCOREFN_BATCH_").lower(): v for k, v in NAMES.items()}
    jobs = BatchJobs(BatchSettings().model_copy(update={"storage": storage, **names}))
    n = 3000
    stores, x = sales_rows(n, seed=3)
    ids = np.asarray([int(s) for s in stores], dtype=np.int64)
    table = pa.table({"store_id": ids, **{c: x[:, j] for j, c in enumerate(FEATURES)}})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=500)
    container = BlobServiceClient.from_connection_string(storage).get_container_client("pm-input")
    container.upload_blob("sales/week.parquet", buffer.getvalue(), overwrite=True)

    record, created = jobs.submit(
        "sales",
        JobRequest(input="sales/week.parquet", model="sales-{store_id}:1"),
        deployment="stores",
    )
    assert created
    _, summary = _summary(storage, "sales/week.parquet")
    assert (summary["status"], summary["rows"], summary["predicted"]) == ("succeeded", n, n), (
        summary
    )
    assert summary["model"] == "sales-{store_id}:1"
    result = pq.read_table(pa.py_buffer(_read(storage, f"sales/{record.job}/predictions.parquet")))
    assert result["row"].to_pylist() == list(range(n))
    assert result["store_id"].to_pylist() == ids.tolist()
    reference = Reference()
    for i in range(0, n, 97):
        expected = reference.run(int(ids[i]), x[i : i + 1])[0]
        got = [result["demand"][i].as_py(), result["margin"][i].as_py()]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    for bad, why in {
        "sales-{}": "model template 'sales-{}': {} is not a column name (letters, digits, "
        "'_', '.', '-'); expected one placeholder naming the partition column, e.g. "
        "'sales-{store_id}'",
        "sales-{a}-{b}": "model template 'sales-{a}-{b}': expected one placeholder naming the "
        "partition column, e.g. 'sales-{store_id}'",
        "sales-{store_id": "model template 'sales-{store_id': expected one placeholder naming "
        "the partition column, e.g. 'sales-{store_id}'",
    }.items():
        with pytest.raises(BatchInputError) as info:
            jobs.submit(
                "sales", JobRequest(input="sales/week.parquet", model=bad), deployment="stores"
            )
        assert str(info.value) == why

    # no served model matches / the partition column is not in the file: failed jobs
    container.upload_blob(
        "sales/model=nothing-{store_id}/a.parquet", buffer.getvalue(), overwrite=True
    )
    container.upload_blob("sales/model=sales-{region}/b.parquet", buffer.getvalue(), overwrite=True)
    _, summary = _summary(storage, "sales/model=nothing-{store_id}/a.parquet")
    assert (summary["status"], summary["reason"]) == (
        "failed",
        "model template 'nothing-{store_id}': no model of this deployment matches 'nothing-*'",
    )
    _, summary = _summary(storage, "sales/model=sales-{region}/b.parquet")
    assert (summary["status"], summary["reason"]) == (
        "failed",
        "partition column 'region' (model template 'sales-{region}') is not in the file; it "
        "has store_id, f0, f1, f2, f3",
    )
