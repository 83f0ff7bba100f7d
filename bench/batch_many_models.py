"""Partitioned batch benchmark: 1,000,000 rows over 50 store models, each row scored by its
own store's model, against a single-model job and raw onnxruntime in the same run.

Starts Azurite and two scoring worker hosts whose data plane is the model store
(``SCOREFN_MODEL_STORE``; working set ``--max-loaded`` models, default 20, so each chunk
loads and evicts), pushes ``sales-1`` .. ``sales-50`` (tiny distinct linear graphs, the
integration test's), then measures:

- partitioned: ``bench/model=sales-{store_id}/t.csv`` dropped -> ``_SUCCESS`` (rows/s);
- single: the same rows as ``bench/model=sales-1/t.csv`` (one model; the cost of
  partitioning is the ratio of the two);
- raw: one process downloads the blob from the same Azurite, reads it with pyarrow, groups
  rows by store, runs each store's ``session.run``, puts the rows back in order and
  uploads the predictions (rows/s);

then checks every row is in predictions or errors exactly once and in order, and a sample
of predictions against onnxruntime on each row's own store graph; prints job time,
rows/s, the ratios, each worker's peak RSS (``VmHWM``) and model loads / evictions.

Usage: flock /tmp/scorefn-bench.lock .venv/bin/python bench/batch_many_models.py
       [--rows N] [--stores 50] [--max-loaded 20] [--json out.json] [--keep]
"""

from __future__ import annotations

import sys
from pathlib import Path

# this folder holds bench/http.py, which must not shadow the standard library's http
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
from azure.data.tables import TableServiceClient  # noqa: E402
from azure.storage.blob import BlobServiceClient, ContainerClient  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import peak_rss_kib, release_work_folder, upload_and_wait  # noqa: E402
from shared.localhost.azurite import AzuriteProcess  # noqa: E402
from shared.localhost.ports import free_ports  # noqa: E402
from shared.localhost.runner import HostProcess  # noqa: E402
from tests.integration.test_batch_many_models import (  # noqa: E402
    FEATURES,
    Reference,
    push_stores,
    store_graph,
)

CONTAINER = "models"
MISSING_EVERY = 10_007
"""Every this-many-th row names store 9999, which has no model (error rows)."""
SAMPLE = 5000


def sales_csv(rows: int, stores: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """CSV bytes, store id of each row (0 = the missing store) and the features."""
    rng = np.random.default_rng(7)
    store = rng.integers(1, stores + 1, rows)
    store[::MISSING_EVERY] = 0
    x = rng.uniform(-3, 3, (rows, len(FEATURES))).astype(np.float32)
    text = pa.array(np.where(store == 0, 9999, store)).cast(pa.string())
    table = pa.table(
        {
            "sale_id": np.arange(rows),
            "store_id": text,
            **{c: x[:, j] for j, c in enumerate(FEATURES)},
        }
    )
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    return buffer.getvalue(), store, x


# ---------------------------------------------------------------------- raw baseline
def raw_partitioned(blobs: BlobServiceClient, name: str, stores: int) -> float:
    """Seconds for download -> group by store -> session.run per store -> upload."""
    sessions = {
        s: ort.InferenceSession(store_graph(s), providers=["CPUExecutionProvider"])
        for s in range(1, stores + 1)
    }
    raw = blobs.get_container_client("bench-raw")
    started = time.perf_counter()
    data = raw.download_blob(name, max_concurrency=4).readall()
    table = pacsv.read_csv(
        pa.py_buffer(data),
        convert_options=pacsv.ConvertOptions(column_types={"store_id": pa.string()}),
    )
    x = np.column_stack([table[c].to_numpy() for c in FEATURES]).astype(np.float32)
    encoded = pc.dictionary_encode(table["store_id"].combine_chunks())
    codes = encoded.indices.to_numpy()
    y = np.full((len(x), 2), np.nan, dtype=np.float32)
    for code, value in enumerate(encoded.dictionary.to_pylist()):
        session = sessions.get(int(value))
        if session is None:
            continue
        rows = np.flatnonzero(codes == code)
        y[rows] = session.run(None, {"x": x[rows]})[0]
    kept = ~np.isnan(y[:, 0])
    out = pa.table(
        {
            "row": np.flatnonzero(kept),
            "sale_id": table["sale_id"].filter(pa.array(kept)),
            "demand": y[kept, 0],
            "margin": y[kept, 1],
        }
    )
    sink = io.BytesIO()
    pacsv.write_csv(out, sink)
    raw.upload_blob(name + ".predictions", sink.getvalue(), overwrite=True, max_concurrency=4)
    return time.perf_counter() - started


# ---------------------------------------------------------------------- end to end
def e2e(
    blobs: BlobServiceClient, tables: TableServiceClient, name: str, data: bytes
) -> tuple[float, str, dict[str, Any]]:
    """Seconds from the upload into batch-input returning to ``_SUCCESS``, the job id and
    its summary."""
    run = upload_and_wait(blobs, tables, name, data)
    return run.seconds, run.job, run.summary


def check(
    output: ContainerClient, job: str, store: np.ndarray, x: np.ndarray, stores: int
) -> dict[str, Any]:
    """Every row exactly once and in order; a sample equal to onnxruntime on its store's
    graph; the missing store's rows are error rows naming the model."""
    rows = len(store)
    predictions = pacsv.read_csv(
        pa.py_buffer(output.download_blob(f"bench/{job}/predictions.csv").readall()),
        convert_options=pacsv.ConvertOptions(column_types={"store_id": pa.string()}),
    )
    errors = [
        json.loads(line)
        for line in output.download_blob(f"bench/{job}/errors.jsonl").readall().splitlines()
    ]
    predicted = predictions["row"].to_numpy()
    missing = np.flatnonzero(store == 0)
    assert np.array_equal(predicted, np.flatnonzero(store != 0)), "predicted rows"
    assert [e["row"] for e in errors] == missing.tolist(), "error rows"
    assert {e["reason"] for e in errors} == {"model 'sales-9999' not found in the model store"}
    assert np.array_equal(
        predictions["store_id"].to_numpy(zero_copy_only=False).astype(int), store[predicted]
    )
    reference = Reference()
    got = np.column_stack([predictions["demand"].to_numpy(), predictions["margin"].to_numpy()])
    size = min(SAMPLE, len(predicted))
    sample = np.random.default_rng(1).choice(len(predicted), size, replace=False)
    worst = 0.0
    for k in sample:
        i = int(predicted[k])
        expected = reference.run(int(store[i]), x[i : i + 1])[0]
        np.testing.assert_allclose(got[k], expected, rtol=1e-5, atol=1e-5)
        worst = max(worst, float(np.max(np.abs(got[k] - expected))))
    return {
        "rows_once_in_order": True,
        "error_rows": len(errors),
        "sample_checked": size,
        "sample_max_abs_diff": worst,
        "stores_in_sample": len({int(store[int(predicted[k])]) for k in sample}),
        "rows": rows,
    }


def peak_rss_mb(pid: int | None) -> int:
    return peak_rss_kib(pid) // 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--stores", type=int, default=50)
    ap.add_argument("--max-loaded", type=int, default=20, help="SCOREFN_MAX_LOADED_MODELS")
    ap.add_argument("--chunk-bytes", type=int, default=4 * 1024 * 1024)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (worker logs)")
    ap.add_argument("--json", type=Path, default=None, help="also write figures here")
    args = ap.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="scorefn-bench-pm-"))
    results: dict[str, Any] = {}
    try:
        with AzuriteProcess(workdir / "azurite") as azurite:
            storage = azurite.connection_string
            blobs = BlobServiceClient.from_connection_string(storage)
            tables = TableServiceClient.from_connection_string(storage)
            for container in ("batch-input", "batch-output", "bench-raw"):
                blobs.create_container(container)
            tables.create_table("jobs")
            push_stores(storage, workdir / "packages", args.stores, CONTAINER)
            workers = []
            for i in range(2):
                (port,) = free_ports(1)
                workers.append(
                    HostProcess(
                        "function_app:app",
                        port=port,
                        cwd=ROOT,
                        storage=storage,
                        host_id=f"bench-pm-worker-{i}",
                        log_path=workdir / f"worker-{i}.log",
                        env={
                            "APP_ROLE": "scoring",
                            "AzureWebJobsStorage": storage,
                            "SCOREFN_DEPLOYMENT": "bench",
                            "SCOREFN_MODEL_STORE": storage,
                            "SCOREFN_MODEL_STORE_CONTAINER": CONTAINER,
                            "SCOREFN_MODEL_STORE_MODELS": "sales-*",
                            "SCOREFN_MODEL_CACHE_DIR": str(workdir / f"cache-{i}"),
                            "SCOREFN_MAX_LOADED_MODELS": str(args.max_loaded),
                            "SCOREFN_BATCH_CHUNK_BYTES": str(args.chunk_bytes),
                            "SCOREFN_LOCALHOST_BLOB_POLL_INTERVAL": "0.2",
                        },
                    ).start(timeout=120)
                )
            try:
                data, store, x = sales_csv(args.rows, args.stores)
                raw_name = "bench/t.csv"
                blobs.get_container_client("bench-raw").upload_blob(
                    raw_name, data, overwrite=True, max_concurrency=4
                )
                raw_s = raw_partitioned(blobs, raw_name, args.stores)
                single_s, _, single = e2e(blobs, tables, "bench/model=sales-1/t.csv", data)
                part_s, job, summary = e2e(
                    blobs, tables, "bench/model=sales-{store_id}/t.csv", data
                )
                checked = check(
                    blobs.get_container_client("batch-output"), job, store, x, args.stores
                )
                worker_stats = [
                    httpx.get(f"{w.base_url}/api/v2/repository/stats", timeout=10).json()
                    for w in workers
                ]
                rows = args.rows
                results = {
                    "rows": rows,
                    "stores": args.stores,
                    "bytes": len(data),
                    "max_loaded_models": args.max_loaded,
                    "chunks": summary["chunks"],
                    "partitioned_job_s": round(part_s, 2),
                    "partitioned_rows_s": round(rows / part_s),
                    "single_model_job_s": round(single_s, 2),
                    "single_model_rows_s": round(rows / single_s),
                    "raw_s": round(raw_s, 2),
                    "raw_rows_s": round(rows / raw_s),
                    "partitioned_vs_single": round(single_s / part_s, 3),
                    "partitioned_vs_raw": round(raw_s / part_s, 3),
                    "predicted": summary["predicted"],
                    "failed_rows": summary["failed_rows"],
                    "single_model_predicted": single["predicted"],
                    "peak_rss_mb": {
                        f"worker-{i}": peak_rss_mb(w.pid) for i, w in enumerate(workers)
                    },
                    "model_loads": [s["loads"] for s in worker_stats],
                    "evictions": [s["evictions"] for s in worker_stats],
                    "check": checked,
                }
                print(json.dumps(results, indent=2), flush=True)
            finally:
                for worker in workers:
                    worker.stop()
    finally:
        release_work_folder(workdir, args.keep)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
