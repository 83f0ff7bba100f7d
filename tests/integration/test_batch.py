"""Batch scoring end to end: real local hosts (APP_ROLE=scoring) on Azurite, real ONNX.

Files are dropped in the input container; the hosts' blob trigger plans jobs, their
queue triggers score chunks, and the last chunk commits. Containers, queue and table
have names of their own so other modules' hosts never see them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
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
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared.localhost.azurite import AzuriteProcess
from shared.localhost.ports import free_ports
from shared.localhost.runner import HostProcess

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import build_models  # noqa: E402

pytestmark = pytest.mark.integration

COLUMNS = [
    "amount", "hour", "merchant_risk", "distance_km",
    "foreign", "txn_24h", "avg_amount_30d", "card_present",
]  # fmt: skip
NAMES = {
    "SCOREFN_BATCH_INPUT_CONTAINER": "bt-input",
    "SCOREFN_BATCH_OUTPUT_CONTAINER": "bt-output",
    "SCOREFN_BATCH_STAGING_CONTAINER": "bt-staging",
    "SCOREFN_BATCH_JOBS_TABLE": "btjobs",
    "SCOREFN_BATCH_QUEUE": "bt-chunks",
}
TIMEOUT = 60.0


def _host_json(tmp: Path) -> Path:
    document = json.loads((ROOT / "host.json").read_text())
    document["functionTimeout"] = "00:00:15"  # a killed worker's messages come back soon
    document["extensions"]["queues"].update(
        visibilityTimeout="00:00:01", maxPollingInterval="00:00:00.5", batchSize=4
    )
    path = tmp / "host.json"
    path.write_text(json.dumps(document))
    return path


def _host(tmp: Path, azurite: AzuriteProcess, models: Path, name: str) -> HostProcess:
    (port,) = free_ports(1)
    env = {
        "APP_ROLE": "scoring",
        "AzureWebJobsStorage": azurite.connection_string,
        "SCOREFN_MODELS": "fraud:1",
        "SCOREFN_MODELS_DIR": str(models),
        "SCOREFN_DEPLOYMENT": "blue",
        "SCOREFN_BATCH_CHUNK_BYTES": "16384",
        "SCOREFN_BATCH_CHUNK_ROWS": "500",
        "SCOREFN_LOCALHOST_BLOB_POLL_INTERVAL": "0.2",
        **NAMES,
    }
    return HostProcess(
        "function_app:app",
        port=port,
        cwd=ROOT,
        env=env,
        storage=azurite.connection_string,
        host_json=_host_json(tmp),
        host_id=f"batch-{name}",
        log_path=tmp / f"host-{name}.log",
    )


@pytest.fixture(scope="module")
def host(
    azurite: AzuriteProcess, example_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostProcess]:
    tmp = tmp_path_factory.mktemp("batch")
    with _host(tmp, azurite, example_models, "a") as running:
        yield running


@pytest.fixture(scope="module")
def blobs(azurite: AzuriteProcess) -> BlobServiceClient:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    for name in ("bt-input", "bt-output"):
        with contextlib.suppress(ResourceExistsError):
            service.create_container(name)
    TableServiceClient.from_connection_string(azurite.connection_string).create_table_if_not_exists(
        "btjobs"
    )
    return service


def _drop(blobs: BlobServiceClient, name: str, data: bytes) -> None:
    blobs.get_container_client("bt-input").upload_blob(name, data, overwrite=True)


def _jobs(azurite: AzuriteProcess, blob: str) -> list[dict[str, Any]]:
    table = TableClient.from_connection_string(azurite.connection_string, "btjobs")
    return [dict(e) for e in table.query_entities("blob eq @b", parameters={"b": blob})]


def _summary(
    azurite: AzuriteProcess, blobs: BlobServiceClient, blob: str, timeout: float = TIMEOUT
) -> tuple[str, dict[str, Any]]:
    """Poll until the job of ``blob`` wrote summary.json; returns (job id, summary)."""
    output = blobs.get_container_client("bt-output")
    deadline = time.monotonic() + timeout
    endpoint = blob.split("/", 1)[0]
    while time.monotonic() < deadline:
        for job in _jobs(azurite, blob):
            if job["state"] in ("succeeded", "failed"):
                path = f"{endpoint}/{job['RowKey']}/summary.json"
                data = output.download_blob(path).readall()
                return str(job["RowKey"]), json.loads(data)
        time.sleep(0.2)
    raise TimeoutError(f"no finished job for {blob} within {timeout} s: {_jobs(azurite, blob)}")


def _read(output: ContainerClient, path: str) -> bytes:
    return output.download_blob(path).readall()


def _fraud_csv(n: int, seed: int = 3) -> tuple[bytes, np.ndarray]:
    x, _ = build_models.synthetic_transactions(n, seed=seed)
    table = pa.table(
        {"txn_id": [f"t{i:06d}" for i in range(n)], **{c: x[:, j] for j, c in enumerate(COLUMNS)}}
    )
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    return buffer.getvalue(), x


def _reference(models: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(
        str(models / "fraud" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    probabilities = session.run(["probabilities"], {"x": x.astype(np.float32)})[0]
    return np.asarray(probabilities)


def test_csv_every_row_once_in_order_and_equal_to_onnxruntime(
    host: HostProcess, azurite: AzuriteProcess, blobs: BlobServiceClient, example_models: Path
) -> None:
    data, x = _fraud_csv(3000)
    lines = data.decode().splitlines()
    # bad rows: a word for a number, a ragged row, an empty value
    lines[11] = lines[11].replace(lines[11].split(",")[1], "abc", 1)
    lines[501] = ",".join(lines[501].split(",")[:5])
    parts = lines[1001].split(",")
    parts[3] = ""
    lines[1001] = ",".join(parts)
    _drop(blobs, "shop/day1.csv", ("\n".join(lines) + "\n").encode())
    job, summary = _summary(azurite, blobs, "shop/day1.csv")
    assert summary["status"] == "succeeded", summary
    assert summary["chunks"] > 5
    assert (summary["rows"], summary["predicted"], summary["failed_rows"]) == (3000, 2997, 3)
    assert (summary["deployment"], summary["model"], summary["format"]) == (
        "blue",
        "fraud:1",
        "csv",
    )
    output = blobs.get_container_client("bt-output")
    assert _read(output, f"shop/{job}/_SUCCESS") == b""
    predictions = pacsv.read_csv(pa.py_buffer(_read(output, f"shop/{job}/predictions.csv")))
    errors = [json.loads(line) for line in _read(output, f"shop/{job}/errors.jsonl").splitlines()]
    assert errors == [
        {
            "row": 10,
            "chunk": errors[0]["chunk"],
            "reason": "column 'amount' 'abc' is not a number (FP32)",
        },
        {"row": 500, "chunk": errors[1]["chunk"], "reason": "row has 5 fields; the header has 9"},
        {"row": 1000, "chunk": errors[2]["chunk"], "reason": "column 'merchant_risk' is empty"},
    ]
    rows = predictions["row"].to_pylist()
    assert rows == sorted(set(range(3000)) - {10, 500, 1000})
    assert predictions["txn_id"].to_pylist() == [f"t{i:06d}" for i in rows]
    assert predictions.column_names == [
        "row", "txn_id", "label", "probabilities_0", "probabilities_1", "risk"
    ]  # fmt: skip
    expected = _reference(example_models, x[rows])
    got = np.column_stack(
        [predictions["probabilities_0"].to_numpy(), predictions["probabilities_1"].to_numpy()]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _exactly_once(output: ContainerClient, prefix: str, n: int, name: str) -> None:
    predictions = pacsv.read_csv(pa.py_buffer(_read(output, prefix + name)))
    errors = [json.loads(line) for line in _read(output, prefix + "errors.jsonl").splitlines()]
    assert sorted(predictions["row"].to_pylist() + [e["row"] for e in errors]) == list(range(n))
    assert predictions["row"].to_pylist() == sorted(predictions["row"].to_pylist())


def test_same_blob_event_three_times_makes_one_job(
    host: HostProcess,
    azurite: AzuriteProcess,
    blobs: BlobServiceClient,
    example_models: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from shared.batch.service import BatchService
    from shared.serving.dataplane import DataPlane
    from shared.settings import BatchSettings

    for key, value in {**NAMES, "SCOREFN_BATCH_STORAGE": azurite.connection_string}.items():
        monkeypatch.setenv(key, value)
    plane = DataPlane(example_models, "fraud:1")
    plane.start_loading()
    service = BatchService(BatchSettings(), plane, deployment="blue")
    data, _ = _fraud_csv(1500, seed=5)
    _drop(blobs, "dup/x.csv", data)
    with ThreadPoolExecutor(3) as pool:  # the host's own event makes a fourth
        planned = list(pool.map(lambda _: service.plan("dup/x.csv"), range(3)))
    assert len({p.job for p in planned if p is not None}) == 1
    job, summary = _summary(azurite, blobs, "dup/x.csv")
    assert [j["RowKey"] for j in _jobs(azurite, "dup/x.csv")] == [job]
    assert (summary["status"], summary["rows"], summary["predicted"]) == ("succeeded", 1500, 1500)
    _exactly_once(blobs.get_container_client("bt-output"), f"dup/{job}/", 1500, "predictions.csv")
    assert service.plan("dup/x.csv") is not None  # a late duplicate finds the job...
    assert [j["state"] for j in _jobs(azurite, "dup/x.csv")] == ["succeeded"]  # ...and leaves it


def test_jsonl_and_parquet(
    host: HostProcess, azurite: AzuriteProcess, blobs: BlobServiceClient
) -> None:
    x, _ = build_models.synthetic_transactions(1200, seed=9)
    records = [{"id": i, **{c: float(x[i, j]) for j, c in enumerate(COLUMNS)}} for i in range(1200)]
    records[7]["amount"] = "lots"
    del records[8]["hour"]
    lines = [json.dumps(r) for r in records]
    lines[9] = "{not json"
    _drop(blobs, "shop/day2.jsonl", ("\n".join(lines) + "\n").encode())
    table = pa.table({"id": np.arange(1200), **{c: x[:, j] for j, c in enumerate(COLUMNS)}})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=200)
    _drop(blobs, "shop/model=fraud:1/day3.parquet", buffer.getvalue())
    output = blobs.get_container_client("bt-output")
    job, summary = _summary(azurite, blobs, "shop/day2.jsonl")
    assert (summary["status"], summary["rows"], summary["failed_rows"]) == ("succeeded", 1200, 3)
    errors = [json.loads(line) for line in _read(output, f"shop/{job}/errors.jsonl").splitlines()]
    assert [(e["row"], e["reason"]) for e in errors] == [
        (7, "column 'amount' 'lots' is not a number (FP32)"),
        (8, "column 'hour' is missing"),
        (9, errors[2]["reason"]),
    ]
    assert errors[2]["reason"].startswith("not valid JSON: ")
    _exactly_once(output, f"shop/{job}/", 1200, "predictions.csv")
    job, summary = _summary(azurite, blobs, "shop/model=fraud:1/day3.parquet")
    assert (summary["status"], summary["chunks"], summary["predicted"]) == ("succeeded", 2, 1200)
    result = pq.read_table(pa.py_buffer(_read(output, f"shop/{job}/predictions.parquet")))
    assert result["row"].to_pylist() == list(range(1200))
    assert result["id"].to_pylist() == list(range(1200))


BAD = {
    "bad/empty.csv": b"",
    "bad/header.csv": (",".join(COLUMNS) + "\n").encode(),
    "bad/notes.txt": b"hello\n",
    "bad/corrupt.parquet": b"PAR1 this is not parquet",
    "bad/columns.csv": b"amount,hour\n1,2\n",
}


def test_bad_inputs_fail_their_job_with_a_reason(
    host: HostProcess, azurite: AzuriteProcess, blobs: BlobServiceClient
) -> None:
    for name, data in BAD.items():
        _drop(blobs, name, data)
    reasons = {}
    for name in BAD:
        _, summary = _summary(azurite, blobs, name)
        assert summary["status"] == "failed"
        reasons[name] = summary["reason"]
    needs = ", ".join(COLUMNS)
    assert reasons["bad/empty.csv"] == (
        "bt-input/bad/empty.csv: the file is empty; expected a header line and at least one row"
    )
    assert reasons["bad/header.csv"] == "bt-input/bad/header.csv: the file has a header but no rows"
    assert reasons["bad/notes.txt"] == (
        "bt-input/bad/notes.txt: extension '.txt' is not a batch input format; "
        "allowed: .csv, .jsonl, .ndjson, .parquet"
    )
    assert reasons["bad/corrupt.parquet"].startswith(
        "bt-input/bad/corrupt.parquet: not a valid Parquet file: "
    )
    assert reasons["bad/columns.csv"] == (
        "bt-input/bad/columns.csv: column(s) merchant_risk, distance_km, foreign, txn_24h, "
        f"avg_amount_30d, card_present missing; the file has amount, hour; model fraud:1 "
        f"needs {needs}"
    )


def test_worker_killed_mid_job_still_exactly_once(
    host: HostProcess,
    azurite: AzuriteProcess,
    blobs: BlobServiceClient,
    example_models: Path,
    tmp_path: Path,
) -> None:
    victim = _host(tmp_path, azurite, example_models, "victim").start()
    try:
        data, _ = _fraud_csv(20000, seed=11)
        _drop(blobs, "kill/big.csv", data)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:  # kill once some chunks are done
            jobs = _jobs(azurite, "kill/big.csv")
            if jobs and jobs[0].get("done"):
                break
            time.sleep(0.05)
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        job, summary = _summary(azurite, blobs, "kill/big.csv", timeout=90)
    finally:
        victim.stop()
    assert (summary["status"], summary["rows"], summary["predicted"]) == ("succeeded", 20000, 20000)
    _exactly_once(blobs.get_container_client("bt-output"), f"kill/{job}/", 20000, "predictions.csv")
