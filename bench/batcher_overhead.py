"""The dynamic batcher's own cost: 64 concurrent single-row callers against a runner that
returns at once, so everything measured is the batcher and the event loop.

Reports microseconds per request and milliseconds per 64-row batch, with the batch run on
the batcher's worker thread (as for the MLP) and on the loop (``run_on_loop``, as for
fraud); the difference is the two thread hand-offs per batch. Compare the per-batch cost
with a real run of the model (``bench/pipeline.py`` prints the MLP's raw batch-of-64
rows/s). ``--uvloop`` runs the same on uvloop (the local host's loop when installed).

Usage: .venv/bin/python bench/batcher_overhead.py [--seconds 2] [--repeats 3] [--uvloop]
"""

from __future__ import annotations

import sys
from pathlib import Path

# this folder holds bench/http.py, which must not shadow the standard library's http
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.pipeline.batcher import Batcher, Tensors  # noqa: E402
from shared.pipeline.spec import BatchingSpec  # noqa: E402

CALLERS = 64
_OUT = np.zeros((CALLERS, 16), np.float32)


def _run(feeds: Tensors) -> Tensors:
    return {"y": _OUT[: len(feeds["x"])]}


async def _measure(threaded: bool, seconds: float) -> float:
    """Seconds per request with ``CALLERS`` callers for about ``seconds``."""
    spec = BatchingSpec(
        max_batch_size=CALLERS, max_delay_ms=2, max_queue_rows=8192, run_on_loop=not threaded
    )
    async with Batcher(_run, spec, name="noop") as batcher:
        x1 = np.zeros((1, 256), np.float32)
        stop = time.perf_counter() + seconds
        done = 0

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await batcher.infer({"x": x1})
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(CALLERS)))
        return (time.perf_counter() - started) / done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = ap.parse_args(argv)
    if args.uvloop:
        import uvloop

        run = uvloop.run
    else:
        run = asyncio.run
    for label, threaded in (("worker thread", True), ("on the loop", False)):
        per = sorted(run(_measure(threaded, args.seconds)) for _ in range(args.repeats))
        median = per[len(per) // 2]
        print(
            f"{label:13s}: {median * 1e6:6.2f} µs per request, "
            f"{median * CALLERS * 1e3:.3f} ms per {CALLERS}-row batch "
            f"(median of {args.repeats})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
