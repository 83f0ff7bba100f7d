"""Fixtures for every test layer: tiny real ONNX packages written into tmp folders."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from shared.pipeline.session import IR_VERSION

ROOT = Path(__file__).resolve().parents[1]


def linear_graph(features: int = 4, outputs: int = 3, elem: int = TensorProto.FLOAT) -> bytes:
    """y = x @ W + b with fixed weights; also z = sum(y, axis=1)."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((features, outputs)).astype(np.float32)
    b = rng.standard_normal(outputs).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["y"]),
        helper.make_node("ReduceSum", ["y", "axes"], ["z"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", elem, [None, features])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, outputs]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [None]),
        ],
        initializer=[
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION
    )
    return bytes(model.SerializeToString())


LINEAR_YAML = """\
name: lin
version: "1"
inputs:
  - {name: x, datatype: FP32, shape: [-1, 4]}
outputs:
  - {name: y, datatype: FP32, shape: [-1, 3]}
  - {name: z, datatype: FP32, shape: [-1]}
steps:
  - onnx: model.onnx
providers: [CPUExecutionProvider]
"""

PackageFactory = Callable[..., Path]


@pytest.fixture
def make_package(tmp_path: Path) -> PackageFactory:
    """Write ``tmp/models/<name>/<version>/`` with model.yaml (text given) and files."""

    def make(
        yaml_text: str = LINEAR_YAML,
        *,
        name: str = "lin",
        version: str = "1",
        files: dict[str, bytes | str] | None = None,
    ) -> Path:
        folder = tmp_path / "models" / name / version
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.yaml").write_text(yaml_text)
        all_files: dict[str, bytes | str] = {"model.onnx": linear_graph()}
        all_files.update(files or {})
        for rel, content in all_files.items():
            p = folder / rel
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(content)
        return folder

    return make


@pytest.fixture(scope="session")
def example_models() -> Path:
    """The repository's example models folder, built if `make models` has not run."""
    models = ROOT / "models"
    if (
        not (models / "fraud" / "2" / "risk.onnx").is_file()
        or not (models / "vision_classifier" / "1" / "model.onnx").is_file()
    ):
        sys.path.insert(0, str(ROOT / "scripts"))
        import build_models

        build_models.main(["--out", str(models)])
    return models
