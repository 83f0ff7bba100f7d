"""Batch scoring end to end: real local hosts (APP_ROLE=scoring) on Azurite, real ONNX.

Files are dropped in the input container; the hosts' blob trigger plans jobs, their
queue triggers score chunks, and the last chunk commits. Containers, queue and table
have names of their own so other modules' hosts never see them.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import subprocess
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
from azure.storage.blob import BlobBlock, BlobServiceClient, ContainerClient

from shared.localhost.azurite import AzuriteProcess
from shared.localhost.ports import free_ports
from shared.localhost.runner import HostProcess
from tests.integration.stack_helpers import (
    batch_names,
    create_batch_resources,
    fast_queue_host_json,
    scoring_host,
)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import build_models  # noqa: E402

pytestmark = pytest.mark.integration

COLUMNS = [
    "amount", "hour", "merchant_risk", "distance_km",
    "foreign", "txn_24h", "avg_amount_30d", "card_present",
]  # fmt: skip
NAMES = batch_names("bt")
TIMEOUT = 60.0


def _host(
    tmp: Path,
    azurite: AzuriteProcess,
    models: Path,
    name: str,
    overrides: dict[str, str] | None = None,
) -> HostProcess:
    env = {
        "SCOREFN_MODELS": "fraud:1",
        "SCOREFN_MODELS_DIR": str(models),
        "SCOREFN_DEPLOYMENT": "blue",
        "SCOREFN_BATCH_CHUNK_BYTES": "16384",
        "SCOREFN_BATCH_CHUNK_ROWS": "500",
        "SCOREFN_LOCALHOST_BLOB_POLL_INTERVAL": "0.2",
        **NAMES,
        **(overrides or {}),
    }
    return scoring_host(
        tmp,
        azurite.connection_string,
        env,
        name=name,
        host_id=f"batch-{name}",
        # a killed worker's messages come back soon
        host_json=fast_queue_host_json(tmp, function_timeout="00:00:15"),
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
    return create_batch_resources(azurite.connection_string, "bt")


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


def _run_cli(azurite: AzuriteProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``scorefn batch ...`` in a child process against the test's names."""
    env = {**os.environ, **NAMES}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "batch", *args, "--storage",
         azurite.connection_string],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _cli(azurite: AzuriteProcess, *args: str) -> dict[str, Any]:
    out = _run_cli(azurite, *args)
    assert out.stdout, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_poison_chunk_fails_the_job_and_resume_finishes_it(
    host: HostProcess, azurite: AzuriteProcess, blobs: BlobServiceClient
) -> None:
    """Chunk 3's staged part is held by a lease (a writer elsewhere), so its every attempt
    fails; after maxDequeueCount attempts the job fails naming chunk 3. With the lease
    broken, resume scores chunk 3 only: the parts of the finished chunks are leased in
    turn, so rescoring any of them would fail the job again."""
    from shared.batch.naming import chunk_blob, job_id

    staging = blobs.get_container_client("bt-staging")
    with contextlib.suppress(ResourceExistsError):
        staging.create_container()
    data, _ = _fraud_csv(3000, seed=13)
    assert host.pid is not None
    os.kill(host.pid, signal.SIGSTOP)  # the lease must exist before the host plans the job
    try:
        uploaded = blobs.get_container_client("bt-input").upload_blob(
            "poison/day.csv", data, overwrite=True
        )
        job = job_id(uploaded.url, str(uploaded.get_blob_properties().etag))
        held = staging.upload_blob(chunk_blob(job, 3, "arrow"), b"held", overwrite=True)
        lease = held.acquire_lease(-1)
    finally:
        os.kill(host.pid, signal.SIGCONT)
    found, summary = _summary(azurite, blobs, "poison/day.csv", timeout=90)
    assert found == job
    assert (summary["status"], summary["reason"]) == ("failed", "1 chunk(s) failed: 3")
    (failed,) = summary["failed_chunks"]
    assert failed["chunk"] == 3
    assert failed["reason"].startswith("failed 5 times; last error: ")
    assert "lease" in failed["reason"].lower()
    first, last = failed["rows"]
    assert summary["failed_rows"] == last - first + 1 > 0
    output = blobs.get_container_client("bt-output")
    errors = [json.loads(line) for line in _read(output, f"poison/{job}/errors.jsonl").splitlines()]
    assert [e["row"] for e in errors] == list(range(first, last + 1))
    assert {e["reason"] for e in errors} == {"chunk 3 failed: " + failed["reason"]}
    assert not list(output.list_blobs(name_starts_with=f"poison/{job}/_SUCCESS"))
    status = _cli(azurite, "status", "poison", job)
    assert (status["state"], status["progress"]) == (
        "failed",
        {"chunks": summary["chunks"], "done": summary["chunks"] - 1, "failed": 1},
    )

    finished = {}
    for chunk in range(summary["chunks"]):
        if chunk != 3:
            part = staging.get_blob_client(chunk_blob(job, chunk, "arrow"))
            finished[chunk] = (part, part.acquire_lease(-1), part.get_blob_properties().etag)
    lease.break_lease()  # the cause is fixed
    try:
        resumed = _cli(azurite, "resume", "poison", job, "--wait", "--timeout", "90")
        assert (resumed["state"], resumed["chunks_sent"], resumed["resumes"]) == (
            "succeeded", 1, 1
        )  # fmt: skip
        assert resumed["rows"] == {"total": 3000, "predicted": 3000, "failed": 0}
        for part, _, etag in finished.values():  # never rewritten
            assert part.get_blob_properties().etag == etag
    finally:
        for _, held_part, _ in finished.values():
            held_part.release()
    summary = json.loads(_read(output, f"poison/{job}/summary.json"))
    assert (summary["status"], summary["failed_chunks"], summary["resumes"]) == (
        "succeeded", [], 1
    )  # fmt: skip
    assert _read(output, f"poison/{job}/_SUCCESS") == b""
    _exactly_once(output, f"poison/{job}/", 3000, "predictions.csv")
    assert _read(output, f"poison/{job}/errors.jsonl") == b""
    again = _run_cli(azurite, "resume", "poison", job)
    assert (again.returncode, again.stdout, again.stderr) == (
        1, "", f"scorefn: job {job} is succeeded; only failed or running jobs resume\n"
    )  # fmt: skip


def test_azurite_restarted_mid_job_still_exactly_once(
    example_models: Path, tmp_path: Path
) -> None:
    """A storage outage in the middle of a job: Azurite stops (same data folder, same
    ports) while two workers score, and starts again; the job still ends exactly once."""
    from shared.localhost.azurite import find_azurite_binary

    store = AzuriteProcess(tmp_path / "azurite", binary=find_azurite_binary()).start()
    try:
        service = BlobServiceClient.from_connection_string(store.connection_string)
        for name in ("bt-input", "bt-output"):
            service.create_container(name)
        TableServiceClient.from_connection_string(store.connection_string).create_table("btjobs")
        with (
            _host(tmp_path, store, example_models, "r1") as first,
            _host(tmp_path, store, example_models, "r2") as second,
        ):
            data, _ = _fraud_csv(20000, seed=17)
            _drop(service, "outage/big.csv", data)
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:  # stop storage once some chunks are done
                jobs = _jobs(store, "outage/big.csv")
                if jobs and jobs[0].get("done"):
                    break
                time.sleep(0.05)
            assert jobs and jobs[0]["state"] in ("planning", "running"), jobs
            store.stop()
            time.sleep(3.0)  # the workers' storage calls fail meanwhile
            store.start()
            job, summary = _summary(store, service, "outage/big.csv", timeout=180)
            assert first.running and second.running
        assert (summary["status"], summary["rows"], summary["predicted"]) == (
            "succeeded", 20000, 20000
        )  # fmt: skip
        output = service.get_container_client("bt-output")
        _exactly_once(output, f"outage/{job}/", 20000, "predictions.csv")
    finally:
        store.stop()


def test_job_api_on_the_router(
    host: HostProcess,
    azurite: AzuriteProcess,
    blobs: BlobServiceClient,
    tmp_path: Path,
) -> None:
    """Submit, follow and list jobs through a real router host with real dev tokens; the
    router records the job and the scoring host plans it from its plan queue."""
    import threading

    import httpx
    import uvicorn

    from shared.auth.dev_issuer import DEV_TENANT, DevIssuer
    from shared.routing.endpoint import EndpointSpec
    from shared.routing.store import EndpointStore

    (issuer_port, router_port) = free_ports(2)
    issuer = DevIssuer.from_key_file(tmp_path / "issuer.pem", f"http://127.0.0.1:{issuer_port}")
    server = uvicorn.Server(
        uvicorn.Config(issuer.app(), host="127.0.0.1", port=issuer_port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    audience = "api://scorefn-batch-test"
    store = EndpointStore.from_connection_string(azurite.connection_string)
    store.apply(EndpointSpec.model_validate({
        "name": "api",
        "auth": {"mode": "entra", "tenants": [DEV_TENANT], "audiences": [audience]},
        "deployments": [{"name": "blue", "models": ["fraud"], "local_port": host.port}],
        "traffic": {"blue": 100},
    }))  # fmt: skip
    router = HostProcess(
        "function_app:app", port=router_port, cwd=ROOT, storage=azurite.connection_string,
        log_path=tmp_path / "router.log",
        env={"APP_ROLE": "router", "SCOREFN_ROUTER_STORAGE": azurite.connection_string,
             "SCOREFN_ROUTER_LOCAL_ISSUER": issuer.base_url,
             "AzureWebJobsStorage": azurite.connection_string, **NAMES},
    )  # fmt: skip
    uploads = blobs.get_container_client("bt-uploads")
    with contextlib.suppress(ResourceExistsError):
        uploads.create_container()
    data, _ = _fraud_csv(1000, seed=21)
    source = uploads.upload_blob("in/day.csv", data, overwrite=True)
    try:
        router.start(timeout=60)
        base = f"{router.base_url}/api/endpoints/api/jobs"
        token = issuer.mint_token(audience, ["Endpoint.Invoke"], DEV_TENANT)
        auth = {"Authorization": f"Bearer {token}"}
        body = {"input": source.url, "output_format": "parquet", "id_columns": ["txn_id"]}
        r = httpx.post(base, json=body, timeout=30)
        assert r.status_code == 401, r.text
        r = httpx.post(base, json=body, headers=auth, timeout=30)
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        assert r.headers["location"] == f"/api/endpoints/api/jobs/{job}"
        assert (r.json()["state"], r.json()["deployment"]) == ("planning", "blue")
        again = httpx.post(base, json=body, headers=auth, timeout=30)  # same blob: same job
        assert (again.status_code, again.json()["job"]) == (200, job)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            status = httpx.get(f"{base}/{job}", headers=auth, timeout=30).json()
            if status["state"] in ("succeeded", "failed"):
                break
            time.sleep(0.3)
        assert status["state"] == "succeeded", status
        assert status["rows"] == {"total": 1000, "predicted": 1000, "failed": 0}
        assert status["progress"]["done"] == status["progress"]["chunks"] > 1
        assert status["outputs"]["predictions"] == f"api/{job}/predictions.parquet"
        result = pq.read_table(pa.py_buffer(_read(
            blobs.get_container_client("bt-output"), f"api/{job}/predictions.parquet"
        )))  # fmt: skip
        assert result.column_names[:2] == ["row", "txn_id"]
        assert result["row"].to_pylist() == list(range(1000))
        listed = httpx.get(base, headers=auth, timeout=30).json()
        assert [j["job"] for j in listed["jobs"]] == [job]
        bad = {
            "missing input": ({}, "job request: input: Field required"),
            "unknown field": (
                {"input": "api/x.csv", "speed": 1}, "job request: speed: Extra inputs are not permitted"
            ),
            "extension": (
                {"input": "api/x.txt"},
                "api/x.txt: extension '.txt' is not a batch input format; allowed: .csv, "
                ".jsonl, .ndjson, .parquet",
            ),
            "absent": ({"input": "api/none.csv"}, "input bt-input/api/none.csv does not exist"),
            "other folder": (
                {"input": "shop/day1.csv"},
                "input bt-input/shop/day1.csv is under another endpoint's folder; files in "
                "bt-input for endpoint 'api' are under api/",
            ),
            "deployment": (
                {"input": source.url, "deployment": "red"},
                "deployment 'red' is not one of the endpoint's: blue",
            ),
        }
        got = {
            name: (r.status_code, r.json())
            for name, (payload, _) in bad.items()
            for r in [httpx.post(base, json=payload, headers=auth, timeout=30)]
        }
        assert got == {name: (400, {"error": message}) for name, (_, message) in bad.items()}
        r = httpx.get(f"{base}/nosuchjob", headers=auth, timeout=30)
        assert (r.status_code, r.json()) == (
            404, {"error": "job 'nosuchjob' of endpoint 'api' not found"}
        )  # fmt: skip
        r = httpx.post(f"{base}/{job}/resume", headers=auth, timeout=30)
        assert (r.status_code, r.json()) == (
            400, {"error": f"job {job} is succeeded; only failed or running jobs resume"}
        )  # fmt: skip
    finally:
        router.stop()
        server.should_exit = True
        thread.join(timeout=10)
        store.close()


# --------------------------------------------------------------------------- a 5 GiB file
HUGE_NAMES = {
    **NAMES,
    "SCOREFN_BATCH_INPUT_CONTAINER": "bt-huge-input",
    "SCOREFN_BATCH_OUTPUT_CONTAINER": "bt-huge-output",
    "SCOREFN_BATCH_STAGING_CONTAINER": "bt-huge-staging",
    "SCOREFN_BATCH_JOBS_TABLE": "bthugejobs",
    "SCOREFN_BATCH_QUEUE": "bt-huge-chunks",
    "SCOREFN_BATCH_PLAN_QUEUE": "bt-huge-plans-{deployment}",
}
HUGE_BLOCK = 4 * 1024 * 1024
HUGE_BLOCKS = 1281  # a little over 5 GiB (the rows block ends at its last whole row)


def _huge_csv(container: ContainerClient, name: str, header: bytes) -> int:
    """A 5 GiB CSV made without 5 GiB: a header block, then one 4 MiB block of whole rows
    repeated in the block list. Returns its size."""
    x, _ = build_models.synthetic_transactions(64, seed=11)
    rows = b"".join(
        b",".join([f"t{i}".encode(), *(f"{v:.4f}".encode() for v in x[i % 64])]) + b"\n"
        for i in range(64)
    )
    body = (rows * (HUGE_BLOCK // len(rows) + 1))[:HUGE_BLOCK]
    body = body[: body.rindex(b"\n") + 1]
    blob = container.get_blob_client(name)
    head_id, body_id = (base64.b64encode(n).decode() for n in (b"head", b"body"))
    blob.stage_block(head_id, header)
    blob.stage_block(body_id, body)
    blob.commit_block_list(
        [BlobBlock(block_id=head_id)] + [BlobBlock(block_id=body_id)] * HUGE_BLOCKS
    )
    return len(header) + len(body) * HUGE_BLOCKS


def _peak_rss(pid: int | None) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def test_a_5gib_file_is_planned_at_once_without_being_read(
    azurite: AzuriteProcess, example_models: Path, tmp_path: Path
) -> None:
    """The host hands the planner a BlobClient (an SDK-type binding) and the planner reads
    only cut windows: a 5 GiB CSV is planned in seconds with the host's memory far below
    the file's size; one whose columns do not match fails at planning with the reason."""
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    inputs = service.get_container_client("bt-huge-input")
    with contextlib.suppress(ResourceExistsError):
        inputs.create_container()
    TableServiceClient.from_connection_string(azurite.connection_string).create_table_if_not_exists(
        "bthugejobs"
    )
    size = _huge_csv(inputs, "shop/huge.csv", ",".join(["txn_id", *COLUMNS]).encode() + b"\n")
    _huge_csv(inputs, "shop/huge-bad.csv", b"txn_id,amount,hour\n")
    assert size > 5 * 2**30
    chunk_bytes = 32 * 1024 * 1024
    table = TableClient.from_connection_string(azurite.connection_string, "bthugejobs")

    def job(blob: str) -> dict[str, Any] | None:
        found = list(table.query_entities("blob eq @b", parameters={"b": blob}))
        return dict(found[0]) if found else None

    overrides = {**HUGE_NAMES, "SCOREFN_BATCH_CHUNK_BYTES": str(chunk_bytes)}
    started = time.monotonic()
    with _host(tmp_path, azurite, example_models, "huge", overrides) as running:
        deadline = time.monotonic() + TIMEOUT
        good = bad = None
        while time.monotonic() < deadline:
            good, bad = job("shop/huge.csv"), job("shop/huge-bad.csv")
            if good and good["state"] != "planning" and bad and bad["state"] != "planning":
                break
            time.sleep(0.2)
        seconds = time.monotonic() - started
        rss = _peak_rss(running.pid)
    assert good is not None and bad is not None, (good, bad)
    # planned: every chunk a ~32 MiB range of whole lines, the file never held in memory
    assert good["state"] in ("running", "committing", "succeeded"), good
    assert good["size"].value == size  # an Int64 property (over 2 GiB)
    assert good["chunks"] == pytest.approx(size / chunk_bytes, abs=1)
    assert good["planned"] - good["created"] < 20, good
    assert seconds < TIMEOUT
    assert rss < 1 << 30, f"host peak RSS {rss / 2**20:.0f} MiB for a {size / 2**30:.1f} GiB file"
    # the bad one: a failed job naming the problem
    assert bad["state"] == "failed"
    summary = json.loads(
        service.get_blob_client("bt-huge-output", f"shop/{bad['RowKey']}/summary.json")
        .download_blob()
        .readall()
    )
    assert summary["status"] == "failed"
    assert "column(s) merchant_risk, distance_km" in summary["reason"], summary["reason"]
