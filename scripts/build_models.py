"""Build the example models from scratch (nothing is downloaded): ``make models``.

- ``fraud`` v1 and v2: scikit-learn classifiers trained on synthetic card transactions,
  converted with skl2onnx; v2 also gets ``risk.onnx``, its post-processing graph.
- ``vision``: a Triton-style ensemble repository (``scripts/build_vision.py``).
- ``--mlp DIR``: the benchmark MLP package (256 -> 2048 -> 2048 -> 16), not served by
  default.

Everything is deterministic (fixed seeds) and written next to the committed model.yaml /
config.pbtxt files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from shared.pipeline.session import IR_VERSION  # noqa: E402

OPSET = 17
FEATURES = 8


def synthetic_transactions(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the 8 fraud features and a 0/1 fraud label (about 8% positives)."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.5, 1.2, n)
    hour = rng.integers(0, 24, n).astype(np.float64)
    merchant_risk = rng.beta(2, 8, n)
    distance = rng.exponential(20, n)
    foreign = (rng.random(n) < 0.1).astype(np.float64)
    txn_24h = rng.poisson(3, n).astype(np.float64)
    avg_30d = amount * rng.lognormal(0, 0.5, n)
    card_present = (rng.random(n) < 0.7).astype(np.float64)
    x = np.column_stack(
        [amount, hour, merchant_risk, distance, foreign, txn_24h, avg_30d, card_present]
    )
    logit = (
        -4.2
        + 1.1 * np.log1p(amount / (avg_30d + 1))
        + 3.0 * merchant_risk
        + 0.015 * distance
        + 1.2 * foreign
        + 0.15 * txn_24h
        - 1.0 * card_present
        + 0.6 * ((hour < 5) | (hour > 22))
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return x.astype(np.float32), y


def _convert(clf: object, path: Path) -> None:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        clf,
        initial_types=[("x", FloatTensorType([None, FEATURES]))],
        options={id(clf): {"zipmap": False}},
        target_opset=OPSET,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(onx, str(path))


def risk_graph(suspicious: float = 0.5, highly: float = 0.8) -> onnx.ModelProto:
    """probabilities [N, 2] -> risk [N] strings: not_fraud / suspicious / highly_suspicious."""

    def const(name: str, arr: np.ndarray) -> onnx.NodeProto:
        return helper.make_node(
            "Constant", [], [name], value=numpy_helper.from_array(arr, name + "_v")
        )

    nodes = [
        const("one", np.array([1], dtype=np.int64)),
        const("two", np.array([2], dtype=np.int64)),
        const("axis1", np.array([1], dtype=np.int64)),
        const("t_hi", np.array(highly, dtype=np.float32)),
        const("t_mid", np.array(suspicious, dtype=np.float32)),
        helper.make_node(
            "Constant",
            [],
            ["s_hi"],
            value=helper.make_tensor("s_hi_v", TensorProto.STRING, [], [b"highly_suspicious"]),
        ),
        helper.make_node(
            "Constant",
            [],
            ["s_mid"],
            value=helper.make_tensor("s_mid_v", TensorProto.STRING, [], [b"suspicious"]),
        ),
        helper.make_node(
            "Constant",
            [],
            ["s_lo"],
            value=helper.make_tensor("s_lo_v", TensorProto.STRING, [], [b"not_fraud"]),
        ),
        helper.make_node("Slice", ["probabilities", "one", "two", "axis1"], ["p2"]),
        helper.make_node("Squeeze", ["p2", "axis1"], ["p"]),
        helper.make_node("GreaterOrEqual", ["p", "t_hi"], ["is_hi"]),
        helper.make_node("GreaterOrEqual", ["p", "t_mid"], ["is_mid"]),
        helper.make_node("Where", ["is_mid", "s_mid", "s_lo"], ["mid_or_lo"]),
        helper.make_node("Where", ["is_hi", "s_hi", "mid_or_lo"], ["risk"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fraud_risk",
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("risk", TensorProto.STRING, [None])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    onnx.checker.check_model(model)
    return model


def build_fraud(models: Path) -> None:
    """Train and convert fraud v1 (logistic regression) and v2 (gradient boosting)."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = synthetic_transactions(20_000)
    v1 = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    _convert(v1, models / "fraud" / "1" / "model.onnx")
    v2 = GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0).fit(x, y)
    _convert(v2, models / "fraud" / "2" / "model.onnx")
    onnx.save_model(risk_graph(), str(models / "fraud" / "2" / "risk.onnx"))


def mlp_graph(
    inputs: int = 256, hidden: int = 2048, outputs: int = 16, seed: int = 0
) -> onnx.ModelProto:
    """The benchmark MLP: x [N, 256] -> Gemm/Relu x2 -> y [N, 16]."""
    rng = np.random.default_rng(seed)
    sizes = [inputs, hidden, hidden, outputs]
    inits, nodes = [], []
    prev = "x"
    for i in range(3):
        w = (rng.standard_normal((sizes[i], sizes[i + 1])) / np.sqrt(sizes[i])).astype(np.float32)
        b = np.zeros(sizes[i + 1], dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = "y" if i == 2 else f"h{i}"
        nodes.append(
            helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out if i == 2 else f"g{i}"])
        )
        if i < 2:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, outputs])],
        initializer=inits,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )


MLP_YAML = """\
name: mlp
version: "1"
description: Benchmark MLP (256 -> 2048 -> 2048 -> 16)
inputs:
  - {name: x, datatype: FP32, shape: [-1, 256]}
outputs:
  - {name: y, datatype: FP32, shape: [-1, 16]}
steps:
  - onnx: model.onnx
batching: {max_batch_size: 64, max_delay_ms: 2, max_queue_rows: 8192}
providers: [CUDAExecutionProvider, CPUExecutionProvider]
"""


def build_mlp(models: Path) -> Path:
    """Write the MLP package to ``models/mlp/1``; returns the folder."""
    folder = models / "mlp" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(mlp_graph(), str(folder / "model.onnx"))
    (folder / "model.yaml").write_text(MLP_YAML)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "models", help="models folder")
    parser.add_argument("--mlp", type=Path, default=None, help="also build the MLP here")
    args = parser.parse_args(argv)
    build_fraud(args.out)
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_vision import build_vision

    build_vision(args.out)
    if args.mlp is not None:
        build_mlp(args.mlp)
    print(f"models built in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
