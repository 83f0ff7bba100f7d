"""Build the ONNX files of the ``vision`` example: a Triton model repository with an ensemble.

The repository mirrors a typical Triton image pipeline (pre-process, classify,
post-process, score) at toy size so that CI can load and run it in a second::

    models/
    ├── vision/                  platform "ensemble": image -> probabilities, class_id,
    │   ├── config.pbtxt                              top_classes, quality
    │   └── 1/.gitkeep           (an ensemble's version folder is empty)
    ├── vision_preprocess/       image UINT8 [N,3,64,64] -> pixels FP32 [N,3,32,32]
    ├── vision_classifier/       input FP32 [N,3,32,32] -> output FP32 [N,10] (logits)
    ├── vision_postprocess/      logits -> probabilities, class_id, top_classes, top_scores
    └── vision_quality/          probs FP32 [N,10] -> score FP32 [N,1]
        ├── config.pbtxt
        └── 1/model.onnx         (written by this script)

The ``config.pbtxt`` files are source and committed; this script writes only the
``model.onnx`` files (gitignored) and the ensemble's empty version folder. Output is
deterministic: weights come from fixed numpy seeds and nothing time-dependent is stored.
When ``--out`` is another folder, the committed configs are copied there too, so the
result is a complete repository.

Usage::

    .venv/bin/python scripts/build_vision.py --out models
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "COMMITTED_MODELS",
    "VISION_MODELS",
    "build_vision",
    "preprocess_model",
    "classifier_model",
    "postprocess_model",
    "quality_model",
    "main",
]

#: The committed repository folder whose ``config.pbtxt`` files describe these models.
COMMITTED_MODELS = Path(__file__).resolve().parents[1] / "models"

#: Every folder of the example repository; the last one is the ensemble.
VISION_MODELS = (
    "vision_preprocess",
    "vision_classifier",
    "vision_postprocess",
    "vision_quality",
    "vision",
)

OPSET = 17
# IR 8 is the version that introduced opset 17; older Triton onnxruntime backends load it.
IR_VERSION = 8
NUM_CLASSES = 10
IMAGE_SIZE = 64
MODEL_SIZE = 32
# ImageNet statistics, as most torchvision classifiers expect.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BATCH = "batch"


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="scorefn/scripts/build_vision.py",
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _init(name: str, array: npt.NDArray[np.generic]) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name=name)


def _weights(rng: np.random.Generator, *shape: int) -> npt.NDArray[np.float32]:
    # He initialisation keeps activations in a sane range through the ReLUs.
    fan_in = int(np.prod(shape[1:]))
    weights: npt.NDArray[np.float32] = rng.standard_normal(shape, dtype=np.float32)
    return weights * np.float32((2.0 / fan_in) ** 0.5)


def preprocess_model() -> onnx.ModelProto:
    """``image`` UINT8 [N,3,64,64] -> ``pixels`` FP32 [N,3,32,32]: cast, resize, normalise."""
    scale = 1.0 / 255.0
    mean = np.array(MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array(STD, dtype=np.float32).reshape(1, 3, 1, 1)
    factor = MODEL_SIZE / IMAGE_SIZE
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
            # Linear with half_pixel at scale 1/2 averages each 2x2 block.
            helper.make_node(
                "Resize",
                ["image_f", "", "scales"],
                ["resized"],
                mode="linear",
                coordinate_transformation_mode="half_pixel",
            ),
            helper.make_node("Mul", ["resized", "scale"], ["unit"]),
            helper.make_node("Sub", ["unit", "mean"], ["centred"]),
            helper.make_node("Div", ["centred", "std"], ["pixels"]),
        ],
        "vision_preprocess",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [BATCH, 3, 64, 64])],
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [BATCH, 3, 32, 32])],
        initializer=[
            _init("scales", np.array([1.0, 1.0, factor, factor], dtype=np.float32)),
            _init("scale", np.array(scale, dtype=np.float32)),
            _init("mean", mean),
            _init("std", std),
        ],
    )
    return _model(graph)


def classifier_model(seed: int = 1) -> onnx.ModelProto:
    """``input`` FP32 [N,3,32,32] -> ``output`` FP32 [N,10]: a two-block CNN, random weights."""
    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "conv1.w", "conv1.b"], ["c1"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Conv", ["p1", "conv2.w", "conv2.b"], ["c2"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c2"], ["r2"]),
            helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("GlobalAveragePool", ["p2"], ["gap"]),
            helper.make_node("Flatten", ["gap"], ["features"], axis=1),
            helper.make_node("Gemm", ["features", "fc.w", "fc.b"], ["output"], transB=1),
        ],
        "vision_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [BATCH, 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [BATCH, NUM_CLASSES])],
        initializer=[
            _init("conv1.w", _weights(rng, 8, 3, 3, 3)),
            _init("conv1.b", np.zeros(8, dtype=np.float32)),
            _init("conv2.w", _weights(rng, 16, 8, 3, 3)),
            _init("conv2.b", np.zeros(16, dtype=np.float32)),
            _init("fc.w", _weights(rng, NUM_CLASSES, 16)),
            _init("fc.b", (rng.standard_normal(NUM_CLASSES) * 0.1).astype(np.float32)),
        ],
    )
    return _model(graph)


def postprocess_model() -> onnx.ModelProto:
    """``logits`` [N,10] -> ``probabilities`` [N,10], ``class_id`` INT64 [N,1], top-3."""
    graph = helper.make_graph(
        [
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
            helper.make_node("ArgMax", ["logits"], ["class_id"], axis=1, keepdims=1),
            helper.make_node(
                "TopK", ["probabilities", "k"], ["top_scores", "top_classes"], axis=-1
            ),
        ],
        "vision_postprocess",
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [BATCH, NUM_CLASSES])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [BATCH, NUM_CLASSES]),
            helper.make_tensor_value_info("class_id", TensorProto.INT64, [BATCH, 1]),
            helper.make_tensor_value_info("top_classes", TensorProto.INT64, [BATCH, 3]),
            helper.make_tensor_value_info("top_scores", TensorProto.FLOAT, [BATCH, 3]),
        ],
        initializer=[_init("k", np.array([3], dtype=np.int64))],
    )
    return _model(graph)


def quality_model(seed: int = 2) -> onnx.ModelProto:
    """``probs`` FP32 [N,10] -> ``score`` FP32 [N,1] in (0, 1): a small MLP, random weights."""
    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["probs", "fc1.w", "fc1.b"], ["h"], transB=1),
            helper.make_node("Relu", ["h"], ["hr"]),
            helper.make_node("Gemm", ["hr", "fc2.w", "fc2.b"], ["z"], transB=1),
            helper.make_node("Sigmoid", ["z"], ["score"]),
        ],
        "vision_quality",
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [BATCH, NUM_CLASSES])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [BATCH, 1])],
        initializer=[
            _init("fc1.w", _weights(rng, 16, NUM_CLASSES)),
            _init("fc1.b", np.zeros(16, dtype=np.float32)),
            _init("fc2.w", _weights(rng, 1, 16)),
            _init("fc2.b", np.zeros(1, dtype=np.float32)),
        ],
    )
    return _model(graph)


def build_vision(out: Path, *, config_source: Path | None = COMMITTED_MODELS) -> list[Path]:
    """Write the vision repository's ONNX files under ``out`` and return the paths written.

    Each composing model goes to ``out/<model>/1/model.onnx``; the ensemble gets an empty
    ``out/vision/1/`` with a ``.gitkeep``. When ``config_source`` is a folder other than
    ``out``, its ``<model>/config.pbtxt`` files are copied into ``out`` as well; pass
    ``None`` to write the ONNX files only.
    """
    models = {
        "vision_preprocess": preprocess_model(),
        "vision_classifier": classifier_model(),
        "vision_postprocess": postprocess_model(),
        "vision_quality": quality_model(),
    }
    written: list[Path] = []
    copy_configs = config_source is not None and config_source.resolve() != out.resolve()
    for name in VISION_MODELS:
        version_dir = out / name / "1"
        version_dir.mkdir(parents=True, exist_ok=True)
        if copy_configs:
            assert config_source is not None
            config = out / name / "config.pbtxt"
            shutil.copyfile(config_source / name / "config.pbtxt", config)
            written.append(config)
        if name in models:
            path = version_dir / "model.onnx"
            onnx.save_model(models[name], str(path))
        else:
            path = version_dir / ".gitkeep"
            path.touch()
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: ``build_vision.py --out models``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, default=COMMITTED_MODELS, help="repository folder (default: models/)"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    for path in build_vision(out):
        print(f"{path}  {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
