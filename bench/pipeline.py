"""Pipeline benchmark: scorefn's pipeline and batcher against raw onnxruntime, same run.

For ``fraud`` (v2: model.onnx then risk.onnx, all ONNX) and the benchmark MLP
(256 -> 2048 -> 2048 -> 16), reports:
- raw: ``session.run`` single-row calls/s (the same graphs, in sequence);
- pipeline: ``Model.predict`` single-row calls/s (validation + steps);
- batcher: rows/s with 64 concurrent single-row callers through the dynamic batcher;
- raw batch-64: ``session.run`` on 64-row batches, rows/s;
and the ratios the foundation issue sets targets for. Figures are ratios measured in one
process; each measurement is repeated and the best round kept (this machine is noisy).

Usage: .venv/bin/python bench/pipeline.py [--seconds 2] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import build_models  # noqa: E402

from shared.pipeline.batcher import Batcher  # noqa: E402
from shared.pipeline.model import Model  # noqa: E402
from shared.pipeline.package import load_package  # noqa: E402


def rate(fn: Callable[[], object], seconds: float, per_call: int = 1) -> float:
    """Calls (times per_call) per second of ``fn`` over about ``seconds``."""
    fn()
    n, t0 = 0, time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(16):
            fn()
        n += 16
        now = time.perf_counter()
        if now >= deadline:
            return n * per_call / (now - t0)


async def _batcher_rate(model: Model, x1: np.ndarray, seconds: float, callers: int) -> float:
    batcher = Batcher(model.run, model.spec.batching, name=model.key)
    await batcher.start()
    stop = time.perf_counter() + seconds
    done = 0

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await batcher.infer(model.validate({"x": x1}))
            done += 1

    await asyncio.gather(*(caller() for _ in range(callers)))  # warm
    stop = time.perf_counter() + seconds
    done = 0
    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - t0
    await batcher.close()
    return done / elapsed


def bench_model(
    name: str,
    folder: Path,
    graphs: list[tuple[Path, list[str], Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]]],
    x_all: np.ndarray,
    seconds: float,
    rounds: int,
) -> dict[str, float]:
    model = Model.load(load_package(folder))
    sessions = [
        (
            ort.InferenceSession(str(p), sess_options=_opts(model), providers=model.providers),
            outs,
            feed,
        )
        for p, outs, feed in graphs
    ]
    x1 = x_all[:1]
    x64 = x_all[:64]

    def raw(x: np.ndarray) -> None:
        tensors: dict[str, np.ndarray] = {"x": x}
        for sess, outs, feed in sessions:
            tensors.update(zip(outs, sess.run(outs, feed(tensors)), strict=True))

    best: dict[str, float] = {}
    for _ in range(rounds):
        figures = {
            "raw_single_calls_s": rate(lambda: raw(x1), seconds),
            "pipeline_single_calls_s": rate(lambda: model.predict({"x": x1}), seconds),
            "raw_batch64_rows_s": rate(lambda: raw(x64), seconds, per_call=64),
            "batcher_64callers_rows_s": asyncio.run(_batcher_rate(model, x1, seconds, 64)),
        }
        for k, v in figures.items():
            best[k] = max(best.get(k, 0.0), v)
    best["pipeline_vs_raw_single"] = best["pipeline_single_calls_s"] / best["raw_single_calls_s"]
    best["batcher_vs_raw_batch64"] = best["batcher_64callers_rows_s"] / best["raw_batch64_rows_s"]
    best["providers"] = model.providers[0]  # type: ignore[assignment]
    print(f"\n{name} ({model.providers[0]})")
    for k, v in best.items():
        print(f"  {k:28s} {v:12.3f}" if isinstance(v, float) else f"  {k:28s} {v:>12s}")
    return best


def _opts(model: Model) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = model.spec.session.intra_op_threads
    return so


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="repeat, keep the best")
    ap.add_argument("--json", type=Path, default=None, help="also write figures here")
    args = ap.parse_args(argv)

    models = ROOT / "models"
    if not (models / "fraud" / "2" / "risk.onnx").is_file():
        build_models.build_fraud(models)
    x_fraud, _ = build_models.synthetic_transactions(64, seed=5)
    fraud = bench_model(
        "fraud:2 (model.onnx -> risk.onnx)",
        models / "fraud" / "2",
        [
            (
                models / "fraud" / "2" / "model.onnx",
                ["label", "probabilities"],
                lambda t: {"x": t["x"]},
            ),
            (
                models / "fraud" / "2" / "risk.onnx",
                ["risk"],
                lambda t: {"probabilities": t["probabilities"]},
            ),
        ],
        x_fraud,
        args.seconds,
        args.rounds,
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_models.build_mlp(Path(tmp))
        x_mlp = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
        mlp = bench_model(
            "mlp:1 (256 -> 2048 -> 2048 -> 16)",
            folder,
            [(folder / "model.onnx", ["y"], lambda t: {"x": t["x"]})],
            x_mlp,
            args.seconds,
            args.rounds,
        )
    targets = [
        ("fraud pipeline single-row >= 0.70 x raw", fraud["pipeline_vs_raw_single"], 0.70),
        ("mlp pipeline single-row   >= 0.95 x raw", mlp["pipeline_vs_raw_single"], 0.95),
        ("mlp batcher 64 callers    >= 0.80 x raw batch-64", mlp["batcher_vs_raw_batch64"], 0.80),
    ]
    print("\ntargets")
    for label, value, want in targets:
        print(f"  {label}: {value:.2f} {'ok' if value >= want else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps({"fraud": fraud, "mlp": mlp}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
