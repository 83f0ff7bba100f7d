"""Pipeline benchmark: scorefn's pipeline and batcher against raw onnxruntime, same run.

For ``fraud`` (v2: model.onnx then risk.onnx, all ONNX) and the benchmark MLP
(256 -> 2048 -> 2048 -> 16), reports:
- raw: ``session.run`` single-row calls/s (the same graphs, in sequence);
- pipeline: ``Model.predict`` single-row calls/s (validation + steps);
- batcher: rows/s with 64 concurrent single-row callers, each validating its input then
  queueing it in the dynamic batcher exactly as the serving path does
  (``model.validate(inputs, defer_finite=True)`` into ``model.batcher()``, whose worker
  checks NaN/inf once per batch); "batcher only" feeds the batcher inputs validated once,
  to separate the batcher from validation;
- raw batch-64: ``session.run`` on 64-row batches, rows/s;
and the ratios the foundation issue sets targets for. "raw" calls ``session.run`` on the
same ``InferenceSession`` objects the pipeline uses (same graphs, same options). The four
figures of a model are measured in one process in short interleaved slices (order
alternating), so load from neighbours on a shared machine hits the baseline and scorefn alike.

Usage: .venv/bin/python bench/pipeline.py [--seconds 8] [--slices 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import build_models  # noqa: E402

from shared.pipeline.batcher import Batcher  # noqa: E402
from shared.pipeline.model import Model  # noqa: E402
from shared.pipeline.package import load_package  # noqa: E402
from shared.pipeline.steps import OnnxStep  # noqa: E402


def _count(fn: Callable[[], object], seconds: float) -> tuple[int, float]:
    """Calls of ``fn`` in about ``seconds``, and the time they took."""
    n, t0 = 0, time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(8):
            fn()
        n += 8
        now = time.perf_counter()
        if now >= deadline:
            return n, now - t0


async def _batched(
    batcher: Batcher, model: Model, x1: np.ndarray, seconds: float, *, validate: bool = True
) -> tuple[int, float]:
    """Requests answered for 64 concurrent single-row callers in about ``seconds``; each
    caller validates its input first (the serving path) unless ``validate`` is False (the
    batcher alone, fed inputs validated once)."""
    stop = time.perf_counter() + seconds
    done = 0
    valid = model.validate({"x": x1})

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await batcher.infer(model.validate({"x": x1}, defer_finite=True) if validate else valid)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(64)))
    return done, time.perf_counter() - t0


async def _paired(
    model: Model, raw: Callable[[np.ndarray], None], x_all: np.ndarray, seconds: float, slices: int
) -> dict[str, float]:
    """Each figure measured in ``slices`` short slices, the four interleaved (order
    alternating), so that a neighbour's load hits raw and scorefn alike."""
    x1, x64 = x_all[:1], x_all[:64]
    batcher = model.batcher()  # as shared/serving/dataplane.py makes it
    await batcher.start()
    step = seconds / slices
    await _batched(batcher, model, x1, step)  # warm-up
    measures: dict[str, Callable[[], Awaitable[tuple[int, float]]]] = {
        "raw_single_calls_s": lambda: _sync(lambda: raw(x1), step, 1),
        "pipeline_single_calls_s": lambda: _sync(lambda: model.predict({"x": x1}), step, 1),
        "raw_batch64_rows_s": lambda: _sync(lambda: raw(x64), step, 64),
        "batcher_64callers_rows_s": lambda: _batched(batcher, model, x1, step),
        "batcher_only_64callers_rows_s": lambda: _batched(batcher, model, x1, step, validate=False),
    }
    totals = {k: [0, 0.0] for k in measures}
    rates: dict[str, list[float]] = {k: [] for k in measures}
    for i in range(slices):
        for key in list(measures) if i % 2 == 0 else list(measures)[::-1]:
            n, dt = await measures[key]()
            totals[key][0] += n
            totals[key][1] += dt
            rates[key].append(n / dt)
    await batcher.close()
    figures = {k: n / dt for k, (n, dt) in totals.items()}
    # The same ratios as the median over slices of the figures measured side by side:
    # a neighbour's burst that hits one slice moves it, not the median.
    for ratio, (num, den) in _RATIOS.items():
        figures[ratio] = figures[num] / figures[den]
        figures[ratio + "_slice_median"] = statistics.median(
            a / b for a, b in zip(rates[num], rates[den], strict=True)
        )
    return figures


#: Reported ratios: name -> (numerator figure, denominator figure).
_RATIOS = {
    "pipeline_vs_raw_single": ("pipeline_single_calls_s", "raw_single_calls_s"),
    "batcher_vs_raw_batch64": ("batcher_64callers_rows_s", "raw_batch64_rows_s"),
    "batcher_only_vs_raw_batch64": ("batcher_only_64callers_rows_s", "raw_batch64_rows_s"),
}


async def _sync(fn: Callable[[], object], seconds: float, per_call: int) -> tuple[int, float]:
    n, dt = _count(fn, seconds)
    return n * per_call, dt


def bench_model(
    name: str,
    folder: Path,
    graphs: list[tuple[Path, list[str], Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]]],
    x_all: np.ndarray,
    seconds: float,
    slices: int,
) -> dict[str, float]:
    model = Model.load(load_package(folder))
    # "raw" is plain session.run on the very sessions the pipeline holds: two sessions of
    # one graph would each keep intra-op threads spinning after their turn, and on two
    # cores that charges whichever runs next, whatever the code around it.
    by_file = {step.path.name: step.session for step in model.steps if isinstance(step, OnnxStep)}
    sessions = [(by_file[p.name], outs, feed) for p, outs, feed in graphs]

    def raw(x: np.ndarray) -> None:
        tensors: dict[str, np.ndarray] = {"x": x}
        for sess, outs, feed in sessions:
            tensors.update(zip(outs, sess.run(outs, feed(tensors)), strict=True))

    figures: dict[str, float] = asyncio.run(_paired(model, raw, x_all, seconds, slices))
    print(f"\n{name} ({model.providers[0]})")
    for k, v in figures.items():
        print(f"  {k:40s} {v:12.3f}")
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="per figure, in total")
    ap.add_argument("--slices", type=int, default=40, help="interleaved slices per figure")
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
        args.slices,
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
            args.slices,
        )
    targets = [
        ("fraud pipeline single-row >= 0.70 x raw", fraud, "pipeline_vs_raw_single", 0.70),
        ("mlp pipeline single-row   >= 0.95 x raw", mlp, "pipeline_vs_raw_single", 0.95),
        ("mlp batcher 64 callers    >= 0.80 x raw batch-64", mlp, "batcher_vs_raw_batch64", 0.80),
        ("  (batcher alone, inputs validated once)", mlp, "batcher_only_vs_raw_batch64", 0.80),
    ]
    print("\ntargets (ratio of totals; in brackets the median of per-slice ratios)")
    for label, figures, ratio, want in targets:
        value, median = figures[ratio], figures[ratio + "_slice_median"]
        print(f"  {label}: {value:.2f} [{median:.2f}] {'ok' if value >= want else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps({"fraud": fraud, "mlp": mlp}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
