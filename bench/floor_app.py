"""The floor for ``bench/http.py``: the least a FastAPI app does to serve the same requests.

One ``onnxruntime.InferenceSession`` per model, created at start with the package's session
options (``session.intra_op_threads`` / ``inter_op_threads`` / ``graph_optimization`` from
its ``model.yaml``), plus the package's Python post-processing hook when it has one (fraud
v1's risk labels), so the response carries the same outputs as scorefn's. One route,
``POST /api/v2/models/{model}/infer``: parse the v2 JSON body with orjson, build the
arrays, ``session.run``, answer the v2 JSON response with orjson. No validation beyond
what numpy and onnxruntime do, no batching, no error mapping: a floor, not a server.

``--handler`` picks how the endpoint calls ``session.run``:

- ``inline`` (default): an ``async def`` endpoint that calls it directly on the event
  loop. It must be ``async`` to read the raw body (a sync endpoint only gets a
  pydantic-parsed one), and a sub-millisecond ``run`` gains nothing from a thread hop.
- ``threadpool``: the same endpoint awaiting ``run_in_threadpool`` (what FastAPI does
  for a ``def`` endpoint), so the event loop never blocks on a run.

Served by uvicorn with uvloop and httptools, access log off (as the local host does).

Usage::

    python bench/floor_app.py --models-dir DIR --models fraud:1,mlp --port 8000 \\
        [--handler inline|threadpool]

``GET /api/v2/health/ready`` answers ``{"ready": true}``; models load before the server
binds, so it answers only once everything is loaded.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# Run as a script, this file puts bench/ first on sys.path, where bench/http.py would
# shadow the standard library's http package that uvicorn imports: drop that entry first.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _HERE]

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import orjson  # noqa: E402
import uvicorn  # noqa: E402
import yaml  # noqa: E402
from fastapi import FastAPI, Request, Response  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402

__all__ = ["FloorModel", "create_app", "load_model", "main"]

Handler = Literal["inline", "threadpool"]

_NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}
_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_JSON = "application/json"


@dataclass
class FloorModel:
    """One model: its session, its hook, and the v2 names it answers with."""

    name: str
    version: str
    session: ort.InferenceSession
    input_dtypes: dict[str, Any]
    output_datatypes: dict[str, str]
    postprocess: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None

    def predict(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``session.run`` for every graph output, then the hook's outputs."""
        names = [o.name for o in self.session.get_outputs()]
        tensors = dict(zip(names, self.session.run(names, feeds), strict=True))
        if self.postprocess is not None:
            tensors.update(self.postprocess(tensors))
        return tensors


def _package_folder(models_dir: Path, item: str) -> Path:
    name, _, version = item.partition(":")
    if version:
        return models_dir / name / version
    versions = sorted(
        (p for p in (models_dir / name).iterdir() if (p / "model.yaml").is_file()),
        key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name),
    )
    if not versions:
        raise SystemExit(f"no package of model {name!r} in {models_dir}")
    return versions[-1]


def _load_hook(
    path: Path, params: dict[str, Any]
) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    spec = importlib.util.spec_from_file_location(f"floor_hook_{path.parent.name}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import hook {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if hasattr(module, "init"):
        module.init(params)
    hook: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = module.postprocess
    return hook


def load_model(folder: Path, providers: list[str]) -> FloorModel:
    """A package of one ONNX step, optionally followed by one Python postprocess hook."""
    doc: dict[str, Any] = yaml.safe_load((folder / "model.yaml").read_text())
    steps: list[dict[str, Any]] = doc["steps"]
    if (
        "onnx" not in steps[0]
        or len(steps) > 2
        or (len(steps) == 2 and steps[1].get("stage") != "postprocess")
    ):
        raise SystemExit(f"{folder}: the floor serves one onnx step (+ a postprocess hook)")
    session_doc: dict[str, Any] = doc.get("session") or {}
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(session_doc.get("intra_op_threads", 0))
    so.inter_op_num_threads = int(session_doc.get("inter_op_threads", 0))
    so.graph_optimization_level = _OPT_LEVELS[session_doc.get("graph_optimization", "all")]
    so.log_severity_level = 3
    session = ort.InferenceSession(str(folder / steps[0]["onnx"]), so, providers=providers)
    hook = None
    if len(steps) == 2:
        hook = _load_hook(folder / steps[1]["python"], steps[1].get("params") or {})
    return FloorModel(
        name=str(doc["name"]),
        version=str(doc["version"]),
        session=session,
        input_dtypes={t["name"]: _NUMPY[t["datatype"]] for t in doc["inputs"]},
        output_datatypes={t["name"]: t["datatype"] for t in doc["outputs"]},
        postprocess=hook,
    )


def _to_json(arr: np.ndarray) -> list[Any]:
    if arr.dtype == object:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in arr.ravel()]
    flat: list[Any] = arr.ravel().tolist()
    return flat


def create_app(models: dict[str, FloorModel], *, handler: Handler = "inline") -> FastAPI:
    """The floor app serving ``models`` (by name)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/api/v2/health/ready")
    async def ready() -> Response:
        return Response(b'{"ready":true}', media_type=_JSON)

    @app.post("/api/v2/models/{model}/infer")
    async def infer(model: str, request: Request) -> Response:
        served = models.get(model)
        if served is None:
            return Response(b'{"error":"model not found"}', status_code=404, media_type=_JSON)
        doc = orjson.loads(await request.body())
        feeds = {
            i["name"]: np.asarray(i["data"], dtype=served.input_dtypes[i["name"]]).reshape(
                i["shape"]
            )
            for i in doc["inputs"]
        }
        if handler == "inline":
            outputs = served.predict(feeds)
        else:
            outputs = await run_in_threadpool(served.predict, feeds)
        answer: dict[str, Any] = {
            "model_name": served.name,
            "model_version": served.version,
            "outputs": [
                {
                    "name": name,
                    "datatype": served.output_datatypes.get(name, "FP32"),
                    "shape": list(arr.shape),
                    "data": _to_json(arr),
                }
                for name, arr in outputs.items()
            ],
        }
        if "id" in doc:
            answer["id"] = doc["id"]
        return Response(orjson.dumps(answer), media_type=_JSON)

    return app


def main(argv: list[str] | None = None) -> int:
    """Load the models, then serve until SIGINT/SIGTERM."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", type=Path, required=True, help="folder of model packages")
    ap.add_argument("--models", required=True, help="comma-separated name[:version]")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--handler", choices=["inline", "threadpool"], default="inline")
    ap.add_argument(
        "--providers", default="CPUExecutionProvider", help="comma-separated ORT providers"
    )
    args = ap.parse_args(argv)
    providers = [p for p in args.providers.split(",") if p]
    models: dict[str, FloorModel] = {}
    for item in (s.strip() for s in args.models.split(",")):
        if item:
            loaded = load_model(_package_folder(args.models_dir, item), providers)
            models[loaded.name] = loaded
    app = create_app(models, handler=args.handler)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
