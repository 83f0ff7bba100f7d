"""The optimized-model cache: reused while it is at least as new as the model, rebuilt
from the model once the model file is replaced."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from shared.pipeline.session import IR_VERSION, create_session
from shared.pipeline.spec import SessionSpec

CACHE = SessionSpec(optimized_model_cache=True)
X = np.array([[-1.0, 2.0, -3.0]], np.float32)


def _write(path: Path, op: str) -> None:
    """A one-node graph y = op(x) over float [N, 3]."""
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION
    )
    onnx.save(model, str(path))


def _run(path: Path) -> np.ndarray:
    session = create_session(path, providers=("CPUExecutionProvider",), options=CACHE)
    (y,) = session.run(None, {"x": X})
    return np.asarray(y)


def _set_mtime(path: Path, seconds: float) -> None:
    os.utime(path, (seconds, seconds))


def test_cache_is_written_and_reused_while_fresh(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    _write(model, "Relu")
    np.testing.assert_array_equal(_run(model), np.maximum(X, 0))
    cached = tmp_path / "model.optimized.onnx"
    assert cached.is_file()
    # A cache newer than the model is what gets loaded: prove it by making it differ.
    _write(cached, "Abs")
    _set_mtime(model, 1_000_000)
    _set_mtime(cached, 2_000_000)
    np.testing.assert_array_equal(_run(model), np.abs(X))


def test_cache_older_than_the_model_is_rebuilt(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    _write(model, "Relu")
    np.testing.assert_array_equal(_run(model), np.maximum(X, 0))
    cached = tmp_path / "model.optimized.onnx"
    _write(model, "Neg")  # the model is replaced in place
    _set_mtime(cached, 1_000_000)
    _set_mtime(model, 2_000_000)
    np.testing.assert_array_equal(_run(model), -X)
    # ... and the cache now holds the new graph.
    assert [n.op_type for n in onnx.load(str(cached)).graph.node] == ["Neg"]
