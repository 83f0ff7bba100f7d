"""The pipeline's outputs equal raw onnxruntime's on the same inputs, for every example."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from shared.errors import NonFiniteError, ShapeError, UnexpectedInputError
from shared.pipeline.model import Model, example_inputs
from shared.pipeline.package import load_package
from shared.pipeline.session import cuda_usable
from shared.pipeline.spec import BatchingSpec
from shared.pipeline.validate import Validated

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import build_models  # noqa: E402


def _raw(path: Path, threads: int = 0) -> ort.InferenceSession:
    """A plain session; ``threads`` as the package sets it (tree sums depend on it)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _transactions() -> np.ndarray:
    x, _ = build_models.synthetic_transactions(500, seed=11)
    # A few extreme rows so every risk label appears.
    risky = np.array(
        [[5000, 3, 0.95, 400, 1, 25, 20, 0], [900, 2, 0.6, 150, 1, 12, 40, 0]], dtype=np.float32
    )
    return np.vstack([x, risky])


def _labels(p: np.ndarray) -> np.ndarray:
    return np.where(p >= 0.8, "highly_suspicious", np.where(p >= 0.5, "suspicious", "not_fraud"))


@pytest.mark.parametrize("version", ["1", "2"])
def test_fraud_equals_raw(example_models: Path, version: str) -> None:
    folder = example_models / "fraud" / version
    model = Model.load(load_package(folder))
    x = _transactions()
    out = model.predict({"x": x})
    threads = model.spec.session.intra_op_threads
    label, proba = _raw(folder / "model.onnx", threads).run(["label", "probabilities"], {"x": x})
    np.testing.assert_array_equal(out["label"], label)
    np.testing.assert_array_equal(out["probabilities"], proba)
    if version == "2":
        (risk,) = _raw(folder / "risk.onnx", threads).run(["risk"], {"probabilities": proba})
        np.testing.assert_array_equal(out["risk"], risk)
    np.testing.assert_array_equal(out["risk"].astype(str), _labels(proba[:, 1]))
    assert set(out["risk"]) == {"not_fraud", "suspicious", "highly_suspicious"}


def test_fraud_single_row_and_cast(example_models: Path) -> None:
    model = Model.load(load_package(example_models / "fraud" / "1"))
    x = _transactions()[:1].astype(np.float64)  # FP64 is cast to FP32 by the default policy
    out = model.predict({"x": x})
    assert out["label"].shape == (1,) and out["probabilities"].shape == (1, 2)


def test_mlp_equals_raw(tmp_path: Path) -> None:
    folder = build_models.build_mlp(tmp_path)
    model = Model.load(load_package(folder))
    x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    (y,) = _raw(folder / "model.onnx").run(["y"], {"x": x})
    np.testing.assert_array_equal(model.predict({"x": x})["y"], y)


def test_example_inputs_follow_signature(example_models: Path) -> None:
    spec = load_package(example_models / "fraud" / "2")
    ex = example_inputs(spec, rows=3)
    assert ex["x"].shape == (3, 8) and ex["x"].dtype == np.float32


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_usable(), reason="no usable CUDA device on this machine")
def test_mlp_runs_on_cuda(tmp_path: Path) -> None:
    folder = build_models.build_mlp(tmp_path)
    model = Model.load(load_package(folder))
    assert model.providers[0] == "CUDAExecutionProvider"
    x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    (y,) = _raw(folder / "model.onnx").run(["y"], {"x": x})
    np.testing.assert_allclose(model.predict({"x": x})["y"], y, rtol=1e-3, atol=1e-3)


def test_vision_ensemble_equals_raw_chain(example_models: Path) -> None:
    model = Model.load(load_package(example_models / "vision"))
    image = np.random.default_rng(3).integers(0, 256, (5, 3, 64, 64), dtype=np.uint8)
    out = model.predict({"image": image})

    def run(name: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        sess = _raw(example_models / name / "1" / "model.onnx")
        return list(sess.run(None, feed))

    (pixels,) = run("vision_preprocess", {"image": image})
    (logits,) = run("vision_classifier", {"input": pixels})
    probabilities, class_id, top_classes, _top_scores = run(
        "vision_postprocess", {"logits": logits}
    )
    (quality,) = run("vision_quality", {"probs": probabilities})
    np.testing.assert_array_equal(out["probabilities"], probabilities)
    np.testing.assert_array_equal(out["class_id"], class_id)
    np.testing.assert_array_equal(out["top_classes"], top_classes)
    np.testing.assert_array_equal(out["quality"], quality)
    assert [t.name for t in model.spec.outputs] == [
        "probabilities",
        "class_id",
        "top_classes",
        "quality",
    ]


def test_batcher_checks_nan_per_batch_and_fails_only_the_bad_request(
    example_models: Path,
) -> None:
    """The serving path: ``validate(defer_finite=True)`` into ``model.batcher()``."""
    model = Model.load(load_package(example_models / "fraud" / "2"))
    x = _transactions()[:6]
    bad = x[2:5].copy()
    bad[1, 3] = np.nan
    requests = [x[:1], x[1:2], bad, x[5:6].astype(np.float64)]  # the last one is cast
    with pytest.raises(NonFiniteError) as alone:
        model.predict({"x": bad})

    async def serve() -> list[dict[str, np.ndarray] | BaseException]:
        batcher = model.batcher(BatchingSpec(max_batch_size=16, max_delay_ms=50))
        async with batcher:
            valid = [model.validate({"x": r}, defer_finite=True) for r in requests]
            got = await asyncio.gather(*(batcher.infer(v) for v in valid), return_exceptions=True)
            assert batcher.stats.refused == 1 and batcher.stats.batches == 1
            return got

    outcomes = asyncio.run(serve())
    err = outcomes[2]
    assert isinstance(err, NonFiniteError)
    assert str(err) == str(alone.value) == (
        "input 'x' holds NaN or infinity (first at row 1); model fraud:2 accepts finite values only"
    )
    for i in (0, 1, 3):
        got = outcomes[i]
        assert isinstance(got, dict)
        expected = model.predict({"x": requests[i]})
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name])


def test_validate_fast_path_matches_the_general_one(example_models: Path) -> None:
    model = Model.load(load_package(example_models / "fraud" / "1"))
    x = _transactions()[:3]
    assert model.validate({"x": x})["x"] is x
    with pytest.raises(ShapeError, match=r"has shape \[3, 7\]; model fraud:1 expects \[-1, 8\]"):
        model.validate({"x": x[:, :7]})
    with pytest.raises(UnexpectedInputError, match="input 'features' is not an input"):
        model.validate({"features": x})


def test_validated_inputs_reach_the_session_without_a_copy(tmp_path: Path) -> None:
    """A single-graph package hands ``Validated`` inputs (a dict subclass) straight to
    onnxruntime's ``run``, which records what it was given here."""
    model = Model.load(load_package(build_models.build_mlp(tmp_path)))
    run = model._single_run
    assert run is not None
    feeds: list[object] = []

    def recording_run(names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        feeds.append(feed)
        return run(names, feed)

    model._single_run = recording_run
    x = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    valid = model.validate({"x": x})
    assert type(valid) is Validated
    out = model.run(valid)
    assert feeds == [valid] and feeds[0] is valid
    (y,) = _raw(tmp_path / "mlp" / "1" / "model.onnx").run(["y"], {"x": x})
    np.testing.assert_array_equal(out["y"], y)
