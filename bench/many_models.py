"""Many-models benchmark: a deployment serving 200 packages from the model store with a
20-model working set, against a single-model deployment, in the same run.

Servers (both ``python -m shared.localhost`` serving ``function_app:app`` with
``APP_ROLE=scoring``, pinned with ``taskset`` to ``--server-core``, default 0):

- ``single``: the eager deployment (``SCOREFN_MODELS_DIR``) serving only ``m000``;
- ``many``: ``SCOREFN_MODEL_STORE`` = an Azurite started for the run (on the client
  core), ``--models`` tiny linear packages (4 -> 2, distinct weights) pushed to it,
  ``SCOREFN_MAX_LOADED_MODELS`` = ``--cache``.

Measured (``wrk -t1`` pinned to ``--client-core``, default 1, single-row v2 JSON bodies):

1. **Hit** latency: ``m000`` (loaded) on ``many`` against ``m000`` on ``single`` at c=1,
   alternating the two for ``--rounds`` runs of ``--duration`` seconds each; medians of
   the runs' p50 and p99. Target: hit p50 at most 1.10x the single-model p50. The same
   at c=8 for req/s.
2. **Cold load** per model: the first request to each of ``--cold`` models never loaded
   (download from the store, MD5 check, session creation, warm-up, the request), one at
   a time from this process; then the same models again once evicted (*reload*: from the
   local disk cache, no download). Median, p90 and max of the request latency.
3. **Zipf mix**: req/s at c=8 for ``2 x --duration`` seconds over all models, each request's
   model drawn from a Zipf law (``--zipf-s``, rank 1 = m000) by ``bench/wrk/zipf_models.lua``;
   loads, evictions and the hit ratio from ``GET /api/v2/repository/stats``; against the
   single-model deployment's c=8 req/s of step 1.

Run it under the benchmark lock::

    flock /tmp/scorefn-bench.lock .venv/bin/python bench/many_models.py
    flock /tmp/scorefn-bench.lock .venv/bin/python bench/many_models.py --duration 3 --rounds 3

Nothing but 127.0.0.1 is contacted; every process started is stopped at the end (also on
error). The working folder (``--workdir``, default ``.run/bench-many``) keeps the packages,
the bodies and each server's log.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != HERE]
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from shared.localhost.azurite import AzuriteProcess  # noqa: E402
from shared.localhost.ports import free_ports  # noqa: E402
from shared.localhost.runner import HostProcess  # noqa: E402
from shared.modelstore.blobstore import ModelStoreClient  # noqa: E402
from shared.pipeline.session import IR_VERSION  # noqa: E402

FIXED_SCRIPT = ROOT / "bench" / "wrk" / "post_json.lua"
ZIPF_SCRIPT = ROOT / "bench" / "wrk" / "zipf_models.lua"
CONTAINER = "models-bench"
TARGET_HIT_P50 = 1.10
ROW = [[0.5, -1.0, 2.0, 0.25]]


def linear_package(root: Path, name: str, seed: int) -> Path:
    """``root/<name>/1``: y = x @ W + b, weights from ``seed``."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 2)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION
    )
    folder = root / name / "1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    (folder / "model.yaml").write_text(
        f'name: {name}\nversion: "1"\n'
        "inputs: [{name: x, datatype: FP32, shape: [-1, 4]}]\n"
        "outputs: [{name: y, datatype: FP32, shape: [-1, 2]}]\n"
        "steps: [{onnx: model.onnx}]\n"
        "providers: [CPUExecutionProvider]\n"
        "session: {intra_op_threads: 1}\n"
    )
    return folder


def name_of(i: int) -> str:
    return f"m{i:03d}"


def pinned_python(workdir: Path, core: int) -> str:
    wrapper = workdir / f"python-core{core}"
    wrapper.write_text(f"#!/bin/sh\nexec taskset -c {core} '{sys.executable}' \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


@contextmanager
def host(workdir: Path, name: str, python: str, storage: str, env: dict[str, str]) -> Iterator[str]:
    (port,) = free_ports(1)
    process = HostProcess(
        "function_app:app",
        port=port,
        cwd=ROOT,
        storage=storage,
        python=python,
        log_path=workdir / f"{name}.log",
        env={
            "APP_ROLE": "scoring",
            "AzureWebJobsStorage": storage,
            "SCOREFN_DEPLOYMENT": name,
            "SCOREFN_BATCH_QUEUE": f"bench-{name}",
            **env,
        },
    )
    process.start(timeout=60)
    try:
        deadline = time.monotonic() + 60
        while httpx.get(f"{process.base_url}/api/v2/health/ready").status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready")
            time.sleep(0.05)
        yield process.base_url
    finally:
        process.stop()


def wrk(
    url: str,
    body: Path,
    *,
    connections: int,
    seconds: float,
    core: int,
    script: Path = FIXED_SCRIPT,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    command = [
        "taskset", "-c", str(core), "wrk", "-t1", f"-c{connections}",
        f"-d{max(1, round(seconds))}s", "--timeout", "10s", "--latency", "-s", str(script), url,
    ]  # fmt: skip
    done = subprocess.run(
        command,
        env={**os.environ, "WRK_BODY": str(body), **(env or {})},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    figures: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(figures["errors"].values()) + figures["non2xx"]
    figures["rps"] = (figures["requests"] - errors) / (figures["duration_us"] / 1e6)
    figures["bad"] = errors
    return figures


def stats(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/api/v2/repository/stats").json())


def first_request_ms(client: httpx.Client, url: str, name: str) -> float:
    t0 = time.perf_counter()
    r = client.post(f"{url}/api/v2/models/{name}/infer", json=infer_json())
    elapsed = (time.perf_counter() - t0) * 1e3
    if r.status_code != 200:
        raise RuntimeError(f"{name}: {r.status_code} {r.text}")
    return elapsed


def infer_json() -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max": ordered[-1],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir: Path = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    packages = workdir / "packages"
    body = workdir / "body.json"
    body.write_text(json.dumps(infer_json()))
    for i in range(args.models):
        linear_package(packages, name_of(i), seed=i)
    single_dir = workdir / "single"
    shutil.copytree(packages / name_of(0), single_dir / name_of(0))
    server = pinned_python(workdir, args.server_core)
    out: dict[str, Any] = {"models": args.models, "cache": args.cache}

    azurite = AzuriteProcess(workdir / "azurite")
    azurite.start()
    try:
        subprocess.run(
            ["taskset", "-pc", str(args.client_core), str(azurite.pid)],
            check=True,
            capture_output=True,
        )
        store = ModelStoreClient.from_setting(azurite.connection_string, CONTAINER)
        t0 = time.perf_counter()
        for i in range(args.models):
            store.push(packages / name_of(i) / "1", name_of(i), "1")
        out["push_ms_per_package"] = (time.perf_counter() - t0) * 1e3 / args.models
        many_env = {
            "SCOREFN_MODEL_STORE": azurite.connection_string,
            "SCOREFN_MODEL_STORE_CONTAINER": CONTAINER,
            "SCOREFN_MODEL_CACHE_DIR": str(workdir / "cache"),
            "SCOREFN_MAX_LOADED_MODELS": str(args.cache),
            "SCOREFN_MAX_MEMORY_MB": str(args.max_memory_mb),
        }
        single_env = {"SCOREFN_MODELS_DIR": str(single_dir), "SCOREFN_MODELS": name_of(0)}
        with (
            host(workdir, "single", server, azurite.connection_string, single_env) as single,
            host(workdir, "many", server, azurite.connection_string, many_env) as many,
        ):
            hit_url = {
                "single": f"{single}/api/v2/models/m000/infer",
                "many": f"{many}/api/v2/models/m000/infer",
            }
            with httpx.Client(timeout=30) as client:
                for url in hit_url.values():
                    first_request_ms(client, url.rsplit("/api/", 1)[0], "m000")
            for url in hit_url.values():  # warm-up
                wrk(url, body, connections=8, seconds=1, core=args.client_core)
            # 1. hit vs single-model, interleaved
            runs: dict[str, dict[int, list[dict[str, Any]]]] = {k: {1: [], 8: []} for k in hit_url}
            for _ in range(args.rounds):
                for c in (1, 8):
                    for kind, url in hit_url.items():
                        runs[kind][c].append(
                            wrk(
                                url,
                                body,
                                connections=c,
                                seconds=args.duration,
                                core=args.client_core,
                            )
                        )
            hit: dict[str, Any] = {}
            for kind in hit_url:
                c1, c8 = runs[kind][1], runs[kind][8]
                hit[kind] = {
                    "p50_ms_c1": statistics.median(r["latency_us"]["p50"] for r in c1) / 1e3,
                    "p99_ms_c1": statistics.median(r["latency_us"]["p99"] for r in c1) / 1e3,
                    "rps_c1": statistics.median(r["rps"] for r in c1),
                    "rps_c8": statistics.median(r["rps"] for r in c8),
                    "errors": sum(r["bad"] for r in c1 + c8),
                    "runs_p50_ms_c1": [r["latency_us"]["p50"] / 1e3 for r in c1],
                    "runs_rps_c8": [round(r["rps"]) for r in c8],
                }
            hit["p50_ratio"] = hit["many"]["p50_ms_c1"] / hit["single"]["p50_ms_c1"]
            hit["p99_ratio"] = hit["many"]["p99_ms_c1"] / hit["single"]["p99_ms_c1"]
            hit["rps_c8_ratio"] = hit["many"]["rps_c8"] / hit["single"]["rps_c8"]
            out["hit"] = hit
            # 2. cold loads, then reloads from the disk cache once evicted
            cold_names = [name_of(i) for i in range(args.models - args.cold, args.models)]
            with httpx.Client(timeout=60) as client:
                cold = [first_request_ms(client, many, n) for n in cold_names]
                filler = [name_of(i) for i in range(1, args.cache + 1)]
                for n in filler:  # push the cold models out of the working set
                    first_request_ms(client, many, n)
                reload = [first_request_ms(client, many, n) for n in cold_names]
                warm = [first_request_ms(client, many, cold_names[-1]) for _ in range(50)]
            out["cold_ms"] = summary(cold)
            out["reload_ms"] = summary(reload)
            out["warm_python_client_ms"] = summary(warm)
            # 3. Zipf mix over every model
            before = stats(many)
            names = ",".join(name_of(i) for i in range(args.models))
            zipf = wrk(
                hit_url["many"],
                body,
                connections=8,
                seconds=2 * args.duration,
                core=args.client_core,
                script=ZIPF_SCRIPT,
                env={"WRK_MODELS": names, "WRK_ZIPF_S": str(args.zipf_s)},
            )
            after = stats(many)
            loads = after["loads"] - before["loads"]
            hits = after["hits"] - before["hits"]
            out["zipf"] = {
                "s": args.zipf_s,
                "rps": zipf["rps"],
                "p50_ms": zipf["latency_us"]["p50"] / 1e3,
                "p99_ms": zipf["latency_us"]["p99"] / 1e3,
                "errors": zipf["bad"],
                "loads": loads,
                "evictions": after["evictions"] - before["evictions"],
                "hit_ratio": hits / max(1, hits + loads),
                "rps_vs_single_c8": zipf["rps"] / hit["single"]["rps_c8"],
                "loaded_after": after["loaded"],
                "memory_mb_after": after["memory_bytes"] / 2**20,
                "kib_per_model": after["memory_bytes"] / 1024 / max(1, after["loaded"]),
            }
    finally:
        azurite.stop()
    out["targets"] = {
        "hit p50 <= 1.10x single-model p50": out["hit"]["p50_ratio"] <= TARGET_HIT_P50
    }
    return out


def report(out: dict[str, Any]) -> None:
    h, z = out["hit"], out["zipf"]
    print(f"many models: {out['models']} packages, working set {out['cache']}")
    print(f"push: {out['push_ms_per_package']:.1f} ms per package (Azurite)")
    print("hit vs single-model deployment (c=1 p50 / p99, req/s at c=1 and c=8):")
    for kind in ("single", "many"):
        r = h[kind]
        print(
            f"  {kind:7s} p50 {r['p50_ms_c1']:.3f} ms  p99 {r['p99_ms_c1']:.3f} ms  "
            f"{r['rps_c1']:.0f} req/s (c=1)  {r['rps_c8']:.0f} req/s (c=8)  errors {r['errors']}"
        )
    for kind in ("single", "many"):
        r = h[kind]
        runs = ", ".join(f"{v:.3f}" for v in r["runs_p50_ms_c1"])
        print(f"  {kind:7s} runs: p50 ms c=1 [{runs}]  req/s c=8 {r['runs_rps_c8']}")
    print(
        f"  ratio   p50 {h['p50_ratio']:.3f}x  p99 {h['p99_ratio']:.3f}x  "
        f"req/s c=8 {h['rps_c8_ratio']:.3f}x"
    )
    labels = {
        "cold_ms": "cold load (download+verify+load+request)",
        "reload_ms": "reload from disk cache",
        "warm_python_client_ms": "same model loaded (this client)",
    }
    for key, label in labels.items():
        s = out[key]
        print(f"{label}: median {s['median']:.1f} ms  p90 {s['p90']:.1f} ms  max {s['max']:.1f} ms")
    print(
        f"zipf s={z['s']} over {out['models']} models: {z['rps']:.0f} req/s "
        f"({z['rps_vs_single_c8']:.2f}x single-model c=8), p50 {z['p50_ms']:.2f} ms, "
        f"p99 {z['p99_ms']:.2f} ms, errors {z['errors']}, loads {z['loads']}, "
        f"evictions {z['evictions']}, hit ratio {z['hit_ratio']:.3f}, "
        f"loaded after {z['loaded_after']}, measured {z['memory_mb_after']:.2f} MiB "
        f"({z['kib_per_model']:.0f} KiB per model)"
    )
    for name, ok in out["targets"].items():
        print(f"target {name}: {'PASS' if ok else 'FAIL'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--cache", type=int, default=20, help="SCOREFN_MAX_LOADED_MODELS")
    parser.add_argument("--max-memory-mb", type=int, default=4096)
    parser.add_argument("--cold", type=int, default=30, help="models timed on first request")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating hit/single runs")
    parser.add_argument("--zipf-s", type=float, default=1.0)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".run" / "bench-many")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    out = run(args)
    report(out)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))
    return 0 if all(out["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
