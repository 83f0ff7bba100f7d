"""Batch benchmark: a dropped file to ``_SUCCESS`` against raw onnxruntime, same run.

Starts Azurite and two scoring worker hosts (``python -m shared.localhost``, as ``make
up`` runs them) on free ports, then for each case:

- fraud: a 1,000,000-row CSV scored by ``fraud:1`` (8 columns -> label, probabilities, risk);
- mlp: a 200,000-row Parquet (one list column of 256 floats) scored by the benchmark MLP
  (256 -> 2048 -> 2048 -> 16, ``scripts/build_models.build_mlp``);

measures
- raw: one process downloads the blob from the same Azurite, reads it with pyarrow, runs
  ``session.run`` in 10k-row chunks and uploads the predictions (rows/s);
- e2e: from the moment the upload into ``batch-input`` returned to ``_SUCCESS`` (rows/s);
and reports e2e / raw with the targets (fraud >= 0.5, mlp >= 0.8), each worker's peak
RSS (``VmHWM``) after the 1M-row job (target < 1 GB), and the CPU seconds each process
(the raw baseline's and Azurite; the workers and Azurite) used in either measurement.

Usage: flock /tmp/scorefn-bench.lock .venv/bin/python bench/batch.py [--fraud-rows N]
       [--mlp-rows N] [--cases fraud,mlp] [--json out.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

# this folder holds bench/http.py, which must not shadow the standard library's http
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from azure.data.tables import TableServiceClient  # noqa: E402
from azure.storage.blob import BlobServiceClient  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import build_models  # noqa: E402

from bench.common import (  # noqa: E402
    cpu_seconds,
    peak_rss_kib,
    pinned_python,
    release_work_folder,
    upload_and_wait,
)
from shared.localhost.azurite import AzuriteProcess  # noqa: E402
from shared.localhost.ports import free_ports  # noqa: E402
from shared.localhost.runner import HostProcess  # noqa: E402

COLUMNS = [
    "amount", "hour", "merchant_risk", "distance_km",
    "foreign", "txn_24h", "avg_amount_30d", "card_present",
]  # fmt: skip
RAW_CHUNK = 10_000
IDLE_S = 3.0
"""Seconds the stack is watched idle (queue and blob polling) before the cases."""
TARGETS = {"fraud": 0.5, "mlp": 0.8}
RSS_LIMIT = 1 << 30
CORES = len(os.sched_getaffinity(0))


def make_models(workdir: Path) -> Path:
    """fraud 1 (copied from ``models/``) and the benchmark MLP."""
    source = ROOT / "models" / "fraud" / "1"
    if not (source / "model.onnx").is_file():
        build_models.build_fraud(ROOT / "models")
    models = workdir / "models"
    shutil.copytree(source, models / "fraud" / "1")
    build_models.build_mlp(models)
    return models


def fraud_csv(rows: int) -> bytes:
    x, _ = build_models.synthetic_transactions(rows, seed=7)
    table = pa.table({"txn_id": np.arange(rows), **{c: x[:, j] for j, c in enumerate(COLUMNS)}})
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    return buffer.getvalue()


def mlp_parquet(rows: int) -> bytes:
    x = np.random.default_rng(3).standard_normal((rows, 256), dtype=np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 256)
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": np.arange(rows), "x": column}), buffer, row_group_size=10_000)
    return buffer.getvalue()


# ---------------------------------------------------------------------- raw baseline
def raw_fraud(blobs: BlobServiceClient, models: Path, name: str) -> float:
    session = ort.InferenceSession(
        str(models / "fraud" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )

    def score(data: bytes) -> bytes:
        table = pacsv.read_csv(pa.py_buffer(data))
        x = np.column_stack([table[c].to_numpy() for c in COLUMNS]).astype(np.float32)
        labels, probabilities = [], []
        for start in range(0, len(x), RAW_CHUNK):
            label, prob = session.run(None, {"x": x[start : start + RAW_CHUNK]})
            labels.append(label)
            probabilities.append(prob)
        prob = np.concatenate(probabilities)
        out = pa.table(
            {
                "txn_id": table["txn_id"],
                "label": np.concatenate(labels),
                "probabilities_0": prob[:, 0],
                "probabilities_1": prob[:, 1],
            }
        )
        sink = io.BytesIO()
        pacsv.write_csv(out, sink)
        return sink.getvalue()

    return _raw(blobs, name, score)


def raw_mlp(blobs: BlobServiceClient, models: Path, name: str) -> float:
    session = ort.InferenceSession(
        str(models / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )

    def score(data: bytes) -> bytes:
        table = pq.read_table(pa.py_buffer(data))
        flat = table["x"].combine_chunks().flatten().to_numpy()
        x = flat.reshape(table.num_rows, 256)
        y = np.concatenate(
            [session.run(None, {"x": x[s : s + RAW_CHUNK]})[0] for s in range(0, len(x), RAW_CHUNK)]
        )
        out = pa.table({"id": table["id"], **{f"y_{j}": y[:, j] for j in range(y.shape[1])}})
        sink = io.BytesIO()
        pq.write_table(out, sink)
        return sink.getvalue()

    return _raw(blobs, name, score)


def _raw(blobs: BlobServiceClient, name: str, score: Callable[[bytes], bytes]) -> float:
    """Seconds for download -> score -> upload of ``bench-raw/<name>``."""
    raw = blobs.get_container_client("bench-raw")
    started = time.perf_counter()
    data = raw.download_blob(name, max_concurrency=4).readall()
    predictions = score(data)
    raw.upload_blob(name + ".predictions", predictions, overwrite=True, max_concurrency=4)
    return time.perf_counter() - started


# ---------------------------------------------------------------------- end to end
def e2e(
    blobs: BlobServiceClient, tables: TableServiceClient, name: str, data: bytes
) -> tuple[float, dict[str, float]]:
    """Seconds from the upload into batch-input returning to the job's ``_SUCCESS``, and
    where they went (from the job's summary.json): upload -> planning started, planning,
    planned -> commit started, commit."""
    run = upload_and_wait(blobs, tables, name, data)
    t = run.summary["timings"]
    commit_start = t["committed"] - t["commit_s"]
    return run.seconds, {
        "trigger_s": round(t["created"] - run.uploaded, 3),
        "plan_s": round(t["planned"] - t["created"], 3),
        "score_s": round(commit_start - t["planned"], 3),
        "commit_s": round(t["commit_s"], 3),
        "chunks": run.summary["chunks"],
    }


def peak_rss(pid: int | None) -> int:
    """Peak resident set size (bytes) of a live process."""
    return peak_rss_kib(pid) * 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fraud-rows", type=int, default=1_000_000)
    ap.add_argument("--mlp-rows", type=int, default=200_000)
    ap.add_argument(
        "--cases", default="fraud,mlp", help="comma-separated cases to run (fraud, mlp)"
    )
    ap.add_argument(
        "--pin-workers",
        action="store_true",
        help="pin worker i to core i (each worker then runs onnxruntime on one thread, as one "
        "worker per instance would; the raw baseline keeps every core)",
    )
    ap.add_argument(
        "--chunk-bytes", type=int, default=4 * 1024 * 1024, help="SCOREFN_BATCH_CHUNK_BYTES"
    )
    ap.add_argument(
        "--queue-batch-size",
        type=int,
        default=None,
        help="host.json extensions.queues.batchSize for the workers (default: the repo's)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work folder (worker logs)")
    ap.add_argument("--json", type=Path, default=None, help="also write figures here")
    args = ap.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="scorefn-bench-batch-"))
    results: dict[str, Any] = {}
    try:
        models = make_models(workdir)
        with AzuriteProcess(workdir / "azurite") as azurite:
            blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
            tables = TableServiceClient.from_connection_string(azurite.connection_string)
            for container in ("batch-input", "batch-output", "bench-raw"):
                blobs.create_container(container)
            tables.create_table("jobs")
            host_json = ROOT / "host.json"
            if args.queue_batch_size is not None:
                document = json.loads(host_json.read_text())
                document["extensions"]["queues"].update(
                    batchSize=args.queue_batch_size,
                    newBatchThreshold=max(0, args.queue_batch_size // 2),
                )
                host_json = workdir / "host.json"
                host_json.write_text(json.dumps(document))
            workers = []
            for i in range(2):
                (port,) = free_ports(1)
                workers.append(
                    HostProcess(
                        "function_app:app",
                        port=port,
                        python=str(pinned_python(workdir, i % CORES))
                        if args.pin_workers
                        else sys.executable,
                        cwd=ROOT,
                        storage=azurite.connection_string,
                        host_id=f"bench-worker-{i}",
                        host_json=host_json,
                        log_path=workdir / f"worker-{i}.log",
                        env={
                            "APP_ROLE": "scoring",
                            "AzureWebJobsStorage": azurite.connection_string,
                            "SCOREFN_MODELS": "fraud:1,mlp:1",
                            "SCOREFN_MODELS_DIR": str(models),
                            "SCOREFN_DEPLOYMENT": "bench",
                            "SCOREFN_BATCH_CHUNK_BYTES": str(args.chunk_bytes),
                            "SCOREFN_BATCH_CHUNK_ROWS": "20000",
                            "SCOREFN_LOCALHOST_BLOB_POLL_INTERVAL": "0.2",
                        },
                    ).start(timeout=120)
                )
            try:
                pids = {"azurite": azurite.pid} | {
                    f"worker-{i}": w.pid for i, w in enumerate(workers)
                }
                before_idle = {k: cpu_seconds(pid) for k, pid in pids.items()}
                time.sleep(IDLE_S)
                results["idle_cpu_per_s"] = {
                    k: round((cpu_seconds(pid) - before_idle[k]) / IDLE_S, 3)
                    for k, pid in pids.items()
                }
                print(f"idle: {json.dumps(results['idle_cpu_per_s'])}", flush=True)
                cases = [
                    ("fraud", args.fraud_rows, fraud_csv, raw_fraud, "bench/model=fraud:1/t.csv"),
                    ("mlp", args.mlp_rows, mlp_parquet, raw_mlp, "bench/model=mlp:1/t.parquet"),
                ]
                wanted = {c.strip() for c in args.cases.split(",") if c.strip()}
                for label, rows, make, raw, name in cases:
                    if label not in wanted:
                        continue
                    data = make(rows)
                    blobs.get_container_client("bench-raw").upload_blob(
                        name, data, overwrite=True, max_concurrency=4
                    )
                    before = time.process_time(), cpu_seconds(azurite.pid)
                    raw_s = raw(blobs, models, name)
                    raw_cpu = {
                        "bench": round(time.process_time() - before[0], 2),
                        "azurite": round(cpu_seconds(azurite.pid) - before[1], 2),
                    }
                    before_e2e = {k: cpu_seconds(pid) for k, pid in pids.items()}
                    e2e_s, breakdown = e2e(blobs, tables, name, data)
                    e2e_cpu = {
                        k: round(cpu_seconds(pid) - before_e2e[k], 2) for k, pid in pids.items()
                    }
                    rss = {f"worker-{i}": peak_rss(w.pid) for i, w in enumerate(workers)}
                    ratio = raw_s / e2e_s
                    results[label] = {
                        "rows": rows,
                        "bytes": len(data),
                        "raw_rows_s": round(rows / raw_s),
                        "e2e_rows_s": round(rows / e2e_s),
                        "raw_s": round(raw_s, 2),
                        "e2e_s": round(e2e_s, 2),
                        "ratio": round(ratio, 3),
                        "target": TARGETS[label],
                        "met": ratio >= TARGETS[label],
                        "e2e_breakdown": breakdown,
                        "cpu_s": {"raw": raw_cpu, "e2e": e2e_cpu},
                        "peak_rss_mb": {k: round(v / 2**20) for k, v in rss.items()},
                        "rss_under_1gb": all(v < RSS_LIMIT for v in rss.values()),
                    }
                    print(f"{label}: {json.dumps(results[label])}", flush=True)
            finally:
                for worker in workers:
                    worker.stop()
    finally:
        release_work_folder(workdir, args.keep)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["met"] for k, r in results.items() if k in TARGETS) else 1


if __name__ == "__main__":
    raise SystemExit(main())
