"""Open Inference Protocol v2 metadata bodies: server metadata and model metadata."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from shared.pipeline.spec import PackageSpec, TensorSpec

__all__ = ["SERVER_NAME", "EXTENSIONS", "PLATFORMS", "server_metadata", "model_metadata"]

#: The ``name`` in server metadata.
SERVER_NAME: Final = "scorefn"
#: Protocol extensions scorefn implements, as listed in server metadata.
EXTENSIONS: Final = ("binary_tensor_data",)
#: Package platform -> metadata ``platform`` (Triton's names, which clients know).
PLATFORMS: Final[dict[str, str]] = {"onnx": "onnxruntime_onnx", "ensemble": "ensemble"}


def server_metadata(*, version: str, extensions: Sequence[str] = EXTENSIONS) -> dict[str, Any]:
    """``GET /v2``: ``{"name": "scorefn", "version": ..., "extensions": [...]}``."""
    return {"name": SERVER_NAME, "version": version, "extensions": list(extensions)}


def _tensor(t: TensorSpec) -> dict[str, Any]:
    return {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}


def model_metadata(spec: PackageSpec, *, versions: Sequence[str] | None = None) -> dict[str, Any]:
    """``GET /v2/models/<name>[/versions/<v>]``: name, the versions that can be asked for
    (default: the spec's own), platform, and inputs/outputs with datatype and shape
    (-1 for a dynamic dimension)."""
    return {
        "name": spec.name,
        "versions": list(versions) if versions is not None else [spec.version],
        "platform": PLATFORMS[spec.platform],
        "inputs": [_tensor(t) for t in spec.inputs],
        "outputs": [_tensor(t) for t in spec.outputs],
    }
