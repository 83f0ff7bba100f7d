"""What the model store's refresh costs the serving process: CPU of a full listing with
properties (``ModelStoreClient.list_packages``) against the names-only probe
(``list_names``) that answers most refreshes, on a store of ``--packages`` packages of
three files each in an Azurite started for the run.

Usage: .venv/bin/python bench/store_listing.py [--packages 400] [--repeats 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

# this folder holds bench/http.py, which must not shadow the standard library's http
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azure.storage.blob import BlobServiceClient  # noqa: E402

from bench.common import release_work_folder  # noqa: E402
from shared.localhost.azurite import AzuriteProcess  # noqa: E402
from shared.modelstore.blobstore import ModelStoreClient  # noqa: E402

FILES = ("model.yaml", "model.onnx", "hooks.py")


def _cpu_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median CPU milliseconds of this thread over ``repeats`` calls of ``fn``."""
    spent = []
    for _ in range(repeats):
        started = time.thread_time()
        fn()
        spent.append((time.thread_time() - started) * 1000)
    return statistics.median(spent)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packages", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="scorefn-bench-listing-"))
    try:
        with AzuriteProcess(workdir / "azurite") as azurite:
            container = BlobServiceClient.from_connection_string(
                azurite.connection_string
            ).create_container("models")
            names = [f"m{i:04d}/1/{f}" for i in range(args.packages) for f in FILES]
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda n: container.upload_blob(n, b"x" * 100), names))
            store = ModelStoreClient.from_setting(azurite.connection_string, "models")
            assert len(store.list_packages()) == args.packages
            full = _cpu_ms(store.list_packages, args.repeats)
            probe = _cpu_ms(store.list_names, args.repeats)
    finally:
        release_work_folder(workdir, keep=False)
    blobs = args.packages * len(FILES)
    print(f"{blobs} blobs: full listing {full:.1f} ms CPU, names-only probe {probe:.1f} ms CPU "
          f"({probe / full:.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
