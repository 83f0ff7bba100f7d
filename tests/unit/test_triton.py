"""Triton model repositories: the vision example loads, runs graph by graph, and every
broken config fails with a message naming the file, the field and what was expected."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from scripts.build_vision import VISION_MODELS, build_vision
from shared.errors import PackageError
from shared.pipeline.dtypes import to_numpy
from shared.pipeline.spec import BatchingSpec, PackageSpec, StepSpec, TensorSpec
from shared.pipeline.triton import (
    check_signature_against_graph,
    is_triton_model,
    load_triton_package,
    triton_versions,
)

GPU = ("CUDAExecutionProvider", "CPUExecutionProvider")
CPU = ("CPUExecutionProvider",)
BATCHED = BatchingSpec(enabled=True, max_batch_size=64, max_delay_ms=2.0)
ONNX_LABELS = {"format": "triton", "triton_platform": "onnxruntime_onnx"}
SUPPORTED_TYPES = (
    "TYPE_BOOL, TYPE_UINT8, TYPE_UINT16, TYPE_UINT32, TYPE_UINT64, TYPE_INT8, TYPE_INT16, "
    "TYPE_INT32, TYPE_INT64, TYPE_FP16, TYPE_FP32, TYPE_FP64, TYPE_STRING"
)
SUPPORTED_PLATFORMS = 'platform "onnxruntime_onnx" or "ensemble", or backend "onnxruntime"'

Tensors = dict[str, npt.NDArray[Any]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The vision repository, built once per module into a tmp folder."""
    repo = tmp_path_factory.mktemp("built") / "models"
    build_vision(repo)
    return repo


@pytest.fixture
def repo(built: Path, tmp_path: Path) -> Path:
    """A private copy of the vision repository that a test may break."""
    copy = tmp_path / "models"
    shutil.copytree(built, copy)
    return copy


def edit(path: Path, old: str, new: str) -> None:
    """Replace ``old`` (which must occur exactly once) in a file."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
    path.write_text(text.replace(old, new))


def drop_block(path: Path, start: str, *, before: str = "") -> None:
    """Remove the text from ``before + start`` through the first ``}`` after it."""
    text = path.read_text()
    begin = text.index(before + start)
    end = text.index("}", begin) + 1
    path.write_text(text[:begin] + text[end:])


def error(model_dir: Path, version: str | None = None) -> str:
    with pytest.raises(PackageError) as err:
        load_triton_package(model_dir, version)
    return str(err.value)


def tensor(name: str, datatype: str, *shape: int) -> TensorSpec:
    return TensorSpec(name=name, datatype=datatype, shape=shape)


def run_package(spec: PackageSpec, tensors: Tensors) -> Tensors:
    """Run a package graph by graph with raw onnxruntime, following PackageSpec semantics."""
    tensors = dict(tensors)
    for step in spec.steps:
        assert step.onnx is not None
        session = ort.InferenceSession(
            str(Path(spec.root) / step.onnx), providers=["CPUExecutionProvider"]
        )
        imap, omap = step.input_map or {}, step.output_map or {}
        feed = {i.name: tensors[imap.get(i.name, i.name)] for i in session.get_inputs()}
        names = [o.name for o in session.get_outputs()]
        for name, value in zip(names, session.run(names, feed), strict=True):
            tensors[omap.get(name, name)] = value
    return {t.name: tensors[t.name] for t in spec.outputs}


def assert_matches(spec: PackageSpec, outputs: Tensors, rows: int) -> None:
    for declared in spec.outputs:
        value = outputs[declared.name]
        assert value.dtype == to_numpy(declared.datatype), declared.name
        expected = tuple(rows if d == -1 else d for d in declared.shape)
        assert value.shape == expected, declared.name


# --------------------------------------------------------------------------- the example


def test_build_is_deterministic_small_and_complete(built: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    written = build_vision(again)
    assert sorted(p.relative_to(again).as_posix() for p in written) == [
        "vision/1/.gitkeep",
        "vision/config.pbtxt",
        "vision_classifier/1/model.onnx",
        "vision_classifier/config.pbtxt",
        "vision_postprocess/1/model.onnx",
        "vision_postprocess/config.pbtxt",
        "vision_preprocess/1/model.onnx",
        "vision_preprocess/config.pbtxt",
        "vision_quality/1/model.onnx",
        "vision_quality/config.pbtxt",
    ]

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    for path in written:
        assert digest(path) == digest(built / path.relative_to(again)), path
    onnx_bytes = sum(p.stat().st_size for p in again.glob("*/1/model.onnx"))
    assert onnx_bytes < 1_000_000
    assert [p.name for p in (again / "vision" / "1").iterdir()] == [".gitkeep"]
    for path in again.glob("*/1/model.onnx"):
        model = onnx.load(str(path))
        assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]


def test_build_into_committed_folder_writes_only_onnx(tmp_path: Path) -> None:
    written = build_vision(tmp_path, config_source=tmp_path)
    assert all(p.name in ("model.onnx", ".gitkeep") for p in written)
    assert not list(tmp_path.glob("*/config.pbtxt"))


def test_is_triton_model_and_versions(built: Path, tmp_path: Path) -> None:
    assert all(is_triton_model(built / name) for name in VISION_MODELS)
    assert not is_triton_model(tmp_path)
    for name in ("1", "2", "10", "01", "0", "abc", "٣"):
        (tmp_path / name).mkdir()
    (tmp_path / "3").write_text("a file, not a folder")
    assert triton_versions(tmp_path) == ["1", "2", "10"]
    assert triton_versions(built / "vision") == ["1"]
    assert triton_versions(tmp_path / "missing") == []


def test_composing_models_load(built: Path) -> None:
    def expected(
        name: str,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        providers: tuple[str, ...],
    ) -> PackageSpec:
        return PackageSpec(
            name=name,
            version="1",
            platform="onnx",
            inputs=inputs,
            outputs=outputs,
            steps=(StepSpec(onnx="1/model.onnx", name=name),),
            batching=BATCHED,
            providers=providers,
            labels=ONNX_LABELS,
            root=str((built / name).resolve()),
        )

    probabilities = tensor("probabilities", "FP32", -1, 10)
    assert load_triton_package(built / "vision_preprocess") == expected(
        "vision_preprocess",
        (tensor("image", "UINT8", -1, 3, 64, 64),),
        (tensor("pixels", "FP32", -1, 3, 32, 32),),
        CPU,
    )
    assert load_triton_package(built / "vision_classifier") == expected(
        "vision_classifier",
        (tensor("input", "FP32", -1, 3, 32, 32),),
        (tensor("output", "FP32", -1, 10),),
        GPU,
    )
    assert load_triton_package(built / "vision_postprocess") == expected(
        "vision_postprocess",
        (tensor("logits", "FP32", -1, 10),),
        (
            probabilities,
            tensor("class_id", "INT64", -1, 1),
            tensor("top_classes", "INT64", -1, 3),
            tensor("top_scores", "FP32", -1, 3),
        ),
        CPU,
    )
    # vision_quality names `backend: "onnxruntime"` instead of a platform.
    assert load_triton_package(built / "vision_quality", "1") == expected(
        "vision_quality",
        (tensor("probs", "FP32", -1, 10),),
        (tensor("score", "FP32", -1, 1),),
        CPU,
    )


def test_ensemble_loads_in_dependency_order(built: Path) -> None:
    spec = load_triton_package(built / "vision")

    def step(model: str, imap: dict[str, str], omap: dict[str, str]) -> StepSpec:
        return StepSpec(
            onnx=f"../{model}/1/model.onnx",
            name=model,
            model=model,
            input_map=imap,
            output_map=omap,
        )

    assert spec == PackageSpec(
        name="vision",
        version="1",
        description=(
            "Triton ensemble: vision_preprocess -> vision_classifier -> vision_postprocess "
            "-> vision_quality"
        ),
        platform="ensemble",
        inputs=(tensor("image", "UINT8", -1, 3, 64, 64),),
        outputs=(
            tensor("probabilities", "FP32", -1, 10),
            tensor("class_id", "INT64", -1, 1),
            tensor("top_classes", "INT64", -1, 3),
            tensor("quality", "FP32", -1, 1),
        ),
        steps=(
            step("vision_preprocess", {"image": "image"}, {"pixels": "pixels"}),
            step("vision_classifier", {"input": "pixels"}, {"output": "logits"}),
            step(
                "vision_postprocess",
                {"logits": "logits"},
                {
                    "probabilities": "probabilities",
                    "class_id": "class_id",
                    "top_classes": "top_classes",
                },
            ),
            step("vision_quality", {"probs": "probabilities"}, {"score": "quality"}),
        ),
        batching=BATCHED,
        providers=GPU,  # vision_classifier asks for KIND_GPU
        labels={"format": "triton", "triton_platform": "ensemble"},
        root=str((built / "vision").resolve()),
    )
    # The maps are kept in the composing model's declaration order (protobuf maps have none).
    assert list(spec.steps[2].output_map or {}) == ["probabilities", "class_id", "top_classes"]


def test_ensemble_runs_graph_by_graph(built: Path) -> None:
    spec = load_triton_package(built / "vision")
    rows = 5
    image = np.random.default_rng(0).integers(0, 256, (rows, 3, 64, 64), dtype=np.uint8)
    out = run_package(spec, {"image": image})
    assert_matches(spec, out, rows)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out["class_id"][:, 0], out["probabilities"].argmax(axis=1))
    np.testing.assert_array_equal(out["top_classes"][:, 0], out["class_id"][:, 0])
    assert ((out["quality"] > 0) & (out["quality"] < 1)).all()

    # The same result, model by model, each through its own PackageSpec.
    def alone(name: str, tensors: Tensors) -> Tensors:
        model = load_triton_package(built / name)
        result = run_package(model, tensors)
        assert_matches(model, result, rows)
        return result

    pixels = alone("vision_preprocess", {"image": image})["pixels"]
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)
    pooled = image.astype(np.float32).reshape(rows, 3, 32, 2, 32, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(pixels, (pooled / 255 - mean) / std, atol=1e-5)
    logits = alone("vision_classifier", {"input": pixels})["output"]
    post = alone("vision_postprocess", {"logits": logits})
    np.testing.assert_allclose(post["probabilities"], out["probabilities"], rtol=1e-6)
    score = alone("vision_quality", {"probs": post["probabilities"]})["score"]
    np.testing.assert_allclose(score, out["quality"], rtol=1e-6)


# --------------------------------------------------------------------------- versions


def test_latest_version_is_chosen_and_followed_by_the_ensemble(repo: Path) -> None:
    shutil.copytree(repo / "vision_classifier" / "1", repo / "vision_classifier" / "10")
    (repo / "vision_classifier" / "9").mkdir()
    assert load_triton_package(repo / "vision_classifier").version == "10"
    assert load_triton_package(repo / "vision_classifier", "1").version == "1"
    steps = load_triton_package(repo / "vision").steps
    assert steps[1].onnx == "../vision_classifier/10/model.onnx"
    # vision_quality is pinned to version 1 by its step's model_version.
    assert steps[3].onnx == "../vision_quality/1/model.onnx"


def test_version_policy_specific(repo: Path) -> None:
    folder = repo / "vision_classifier"
    shutil.copytree(folder / "1", folder / "2")
    edit(
        folder / "config.pbtxt",
        "max_batch_size: 64",
        "max_batch_size: 64\nversion_policy: { specific: { versions: [ 1 ] } }",
    )
    assert load_triton_package(folder).version == "1"
    assert error(folder, "2") == (
        f"{folder}/config.pbtxt: version_policy.specific.versions: version 2 is not listed; "
        "allowed: 1"
    )


def test_missing_version_folder(repo: Path) -> None:
    folder = repo / "vision_classifier"
    assert error(folder, "3") == (
        f"{folder}/3: version: version folder not found; available versions: 1"
    )
    shutil.rmtree(folder / "1")
    assert error(folder) == (
        f"{folder}: version: no version folder; a Triton model keeps its files in numeric "
        "folders such as 1/"
    )


def test_ensemble_version_folder_is_required(repo: Path) -> None:
    shutil.rmtree(repo / "vision" / "1")
    assert error(repo / "vision") == (
        f"{repo}/vision: version: no version folder; a Triton model keeps its files in "
        "numeric folders such as 1/"
    )


def test_missing_model_onnx(repo: Path) -> None:
    (repo / "vision_classifier" / "1" / "model.onnx").unlink()
    assert error(repo / "vision_classifier") == (
        f"{repo}/vision_classifier/1/model.onnx: model file not found; an onnxruntime_onnx "
        "model loads <version>/model.onnx (default_model_filename)"
    )
    # The ensemble reports the composing model's own error.
    assert error(repo / "vision") == error(repo / "vision_classifier")


def test_default_model_filename(repo: Path) -> None:
    folder = repo / "vision_classifier"
    (folder / "1" / "model.onnx").rename(folder / "1" / "cnn.onnx")
    edit(
        folder / "config.pbtxt",
        'platform: "onnxruntime_onnx"',
        'platform: "onnxruntime_onnx"\ndefault_model_filename: "cnn.onnx"',
    )
    assert load_triton_package(folder).steps[0].onnx == "1/cnn.onnx"
    assert load_triton_package(repo / "vision").steps[1].onnx == "../vision_classifier/1/cnn.onnx"


def test_unreadable_onnx(repo: Path) -> None:
    path = repo / "vision_classifier" / "1" / "model.onnx"
    path.write_bytes(b"not onnx")
    assert error(repo / "vision_classifier") == (
        f"{path}: not a readable ONNX model: Error parsing message with type "
        "'onnx.ModelProto': Wire format was corrupt"
    )
    path.write_bytes(b"")
    assert error(repo / "vision_classifier") == (
        f"{path}: not an ONNX model: the graph has no outputs"
    )


# --------------------------------------------------------------------------- config parsing


def test_missing_config(tmp_path: Path) -> None:
    assert error(tmp_path / "nothing") == (
        f"{tmp_path}/nothing/config.pbtxt: file not found; a Triton model folder needs a "
        "config.pbtxt"
    )


def test_syntax_error_names_line_and_column(repo: Path) -> None:
    config = repo / "vision_classifier" / "config.pbtxt"
    edit(config, "    dims: [ 10 ]\n", "    dims: [ 10 \n")
    assert error(repo / "vision_classifier") == (
        f"{config}: not a valid Triton ModelConfig in protobuf text format: "
        "18:3 : '  }': Expected \",\"."
    )


def test_unknown_field_names_line_and_column(repo: Path) -> None:
    config = repo / "vision_classifier" / "config.pbtxt"
    edit(config, "max_batch_size: 64", "max_batch_size: 64\nmax_batch: 8")
    assert error(repo / "vision_classifier") == (
        f"{config}: not a valid Triton ModelConfig in protobuf text format: "
        '5:1 : Message type "inference.ModelConfig" has no field named "max_batch".'
    )


def test_misspelt_data_type_is_a_parse_error(repo: Path) -> None:
    config = repo / "vision_classifier" / "config.pbtxt"
    edit(config, "data_type: TYPE_FP32\n    format", "data_type: TYPE_FLOAT\n    format")
    assert error(repo / "vision_classifier") == (
        f"{config}: not a valid Triton ModelConfig in protobuf text format: "
        "8:16 : '    data_type: TYPE_FLOAT': "
        'Enum type "inference.DataType" has no value named TYPE_FLOAT.'
    )


def test_name_must_match_folder(repo: Path) -> None:
    config = repo / "vision_classifier" / "config.pbtxt"
    edit(config, 'name: "vision_classifier"', 'name: "classifier"')
    assert error(repo / "vision_classifier") == (
        f"{config}: name: is 'classifier' but the model folder is 'vision_classifier'; "
        "Triton requires them to match"
    )


def test_name_may_be_omitted(repo: Path) -> None:
    edit(repo / "vision_classifier" / "config.pbtxt", 'name: "vision_classifier"\n', "")
    assert load_triton_package(repo / "vision_classifier").name == "vision_classifier"


@pytest.mark.parametrize(
    ("old", "new", "field", "problem"),
    [
        (
            "data_type: TYPE_FP32\n    format",
            "data_type: TYPE_BF16\n    format",
            "input[0].data_type",
            f"TYPE_BF16 is not supported (tensor 'input'); supported: {SUPPORTED_TYPES}",
        ),
        (
            "    data_type: TYPE_FP32\n    dims: [ 10 ]\n",
            "    dims: [ 10 ]\n",
            "output[0].data_type",
            f"missing (tensor 'output'); supported: {SUPPORTED_TYPES}",
        ),
        (
            "dims: [ 10 ]",
            "dims: [ 0 ]",
            "output[0].dims",
            "dimension 0 is not allowed (tensor 'output'); use a positive size or -1",
        ),
        (
            "    dims: [ 10 ]\n",
            "",
            "output[0].dims",
            "missing (tensor 'output'); use [ 1 ] for one value per row",
        ),
        (
            'platform: "onnxruntime_onnx"',
            'platform: "tensorrt_plan"',
            "platform",
            f"'tensorrt_plan' is not supported; use {SUPPORTED_PLATFORMS}",
        ),
        (
            'platform: "onnxruntime_onnx"',
            'backend: "python"',
            "backend",
            f"'python' is not supported; use {SUPPORTED_PLATFORMS}",
        ),
        (
            'platform: "onnxruntime_onnx"\n',
            "",
            "platform",
            f"missing; set {SUPPORTED_PLATFORMS}",
        ),
        (
            "    dims: [ 3, 32, 32 ]\n",
            "    dims: [ 3, 32, 32 ]\n    reshape: { shape: [ 3, 1024 ] }\n",
            "input[0].reshape",
            "not supported; make the graph's shape match dims",
        ),
        (
            "    dims: [ 3, 32, 32 ]\n",
            "    dims: [ 3, 32, 32 ]\n    optional: true\n",
            "input[0].optional",
            "not supported",
        ),
        (
            "max_batch_size: 64",
            "max_batch_size: 0",
            "dynamic_batching",
            "needs max_batch_size > 0 (the model must accept a batch dimension)",
        ),
        (
            "max_batch_size: 64",
            "max_batch_size: -1",
            "max_batch_size",
            "is -1; expected >= 0",
        ),
    ],
    ids=[
        "bf16",
        "no-data-type",
        "zero-dim",
        "no-dims",
        "platform",
        "backend",
        "no-platform",
        "reshape",
        "optional",
        "dynamic-batching-unbatched",
        "negative-batch",
    ],
)
def test_bad_config_fields(repo: Path, old: str, new: str, field: str, problem: str) -> None:
    config = repo / "vision_classifier" / "config.pbtxt"
    edit(config, old, new)
    assert error(repo / "vision_classifier") == f"{config}: {field}: {problem}"


def test_duplicate_tensor_name(repo: Path) -> None:
    config = repo / "vision_postprocess" / "config.pbtxt"
    edit(config, 'name: "top_scores"', 'name: "class_id"')
    assert error(repo / "vision_postprocess") == (
        f"{config}: output[3].name: 'class_id' is declared twice"
    )


def test_sequence_batching_is_refused(repo: Path) -> None:
    config = repo / "vision_quality" / "config.pbtxt"
    # dynamic_batching and sequence_batching are a oneof: replace the one by the other.
    edit(
        config,
        "dynamic_batching {\n  max_queue_delay_microseconds: 2000\n}",
        "sequence_batching {\n  max_sequence_idle_microseconds: 5000000\n}",
    )
    assert error(repo / "vision_quality") == (
        f"{config}: sequence_batching: stateful models are not supported"
    )


def test_folder_name_that_is_no_package_name(repo: Path) -> None:
    folder = repo / "bad name"
    shutil.copytree(repo / "vision_quality", folder)
    edit(folder / "config.pbtxt", 'name: "vision_quality"', 'name: "bad name"')
    assert error(folder) == (
        f"{folder}/config.pbtxt: name: String should match pattern "
        "'^[A-Za-z0-9][A-Za-z0-9_.-]*$'; got 'bad name'"
    )


# --------------------------------------------------------------------------- config vs graph


@pytest.mark.parametrize(
    ("old", "new", "field", "problem"),
    [
        (
            "data_type: TYPE_FP32\n    format",
            "data_type: TYPE_FP16\n    format",
            "input 'input'",
            "the config says FP16 but the graph has FP32",
        ),
        (
            "dims: [ 3, 32, 32 ]",
            "dims: [ 3, 1024 ]",
            "input 'input'",
            "the config says shape [-1, 3, 1024] (rank 3) but the graph has "
            "[batch, 3, 32, 32] (rank 4)",
        ),
        (
            "dims: [ 3, 32, 32 ]",
            "dims: [ 3, 64, 64 ]",
            "input 'input'",
            "the config says shape [-1, 3, 64, 64] but the graph has [batch, 3, 32, 32]; "
            "dimension 2 differs",
        ),
        (
            "dims: [ 3, 32, 32 ]",
            "dims: [ 3, -1, -1 ]",
            "input 'input'",
            "the config says shape [-1, 3, -1, -1] but the graph has [batch, 3, 32, 32]; "
            "dimension 2 differs",
        ),
        (
            'name: "input"',
            'name: "pixels"',
            "input 'pixels'",
            "the graph has no input of that name; graph inputs: input",
        ),
        (
            'name: "output"',
            'name: "logits"',
            "output 'logits'",
            "the graph has no output of that name; graph outputs: output",
        ),
        (
            "max_batch_size: 64",
            "max_batch_size: 0",
            "input 'input'",
            "the config says shape [3, 32, 32] (rank 3) but the graph has "
            "[batch, 3, 32, 32] (rank 4)",
        ),
    ],
    ids=["dtype", "rank", "dim", "open-dim", "input-name", "output-name", "unbatched"],
)
def test_config_disagrees_with_graph(
    repo: Path, old: str, new: str, field: str, problem: str
) -> None:
    config = repo / "vision_classifier" / "config.pbtxt"
    edit(config, old, new)
    if new == "max_batch_size: 0":  # dynamic batching needs a batch dimension
        drop_block(config, "dynamic_batching {")
    assert error(repo / "vision_classifier") == f"{config}: {field}: {problem}"


def test_unbatched_model_uses_full_dims(repo: Path) -> None:
    config = repo / "vision_classifier" / "config.pbtxt"
    text = config.read_text()
    # Keep what precedes dynamic_batching: no batching and no instance_group.
    config.write_text(
        text[: text.index("dynamic_batching {")]
        .replace("max_batch_size: 64", "max_batch_size: 0")
        .replace("dims: [ 3, 32, 32 ]", "dims: [ -1, 3, 32, 32 ]")
        .replace("dims: [ 10 ]", "dims: [ -1, 10 ]")
    )
    spec = load_triton_package(repo / "vision_classifier")
    assert spec.inputs == (tensor("input", "FP32", -1, 3, 32, 32),)
    assert spec.outputs == (tensor("output", "FP32", -1, 10),)
    assert spec.batching == BatchingSpec(enabled=False)
    assert spec.providers == GPU  # no instance_group: Triton's KIND_AUTO


def test_check_signature_against_graph() -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"])],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4]),
            helper.make_tensor_value_info("bias", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, None),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        initializer=[onnx.numpy_helper.from_array(np.zeros(4, np.float32), "bias")],
    )
    x, y = tensor("x", "FP32", -1, 4), tensor("y", "FP32", -1, 4)
    mask = tensor("mask", "BOOL", -1, 7, 7)  # no shape in the graph: any rank is accepted
    # "bias" has an initializer, so it is an optional input.
    check_signature_against_graph([x, mask], [y], graph, file="model.yaml")
    check_signature_against_graph([x, mask, tensor("bias", "FP32", 4)], [y], graph, file="f")
    with pytest.raises(PackageError) as err:
        check_signature_against_graph([x], [y], graph, file="model.yaml")
    assert str(err.value) == (
        "model.yaml: input 'mask': the graph requires this input but it is not declared; "
        "declared inputs: x"
    )
    with pytest.raises(PackageError) as err:
        check_signature_against_graph([x, mask], [tensor("y", "FP64", -1, 4)], graph, file="m")
    assert str(err.value) == "m: output 'y': the config says FP64 but the graph has FP32"


# --------------------------------------------------------------------------- providers, batching


def test_instance_groups_and_accelerators_choose_providers(repo: Path) -> None:
    folder = repo / "vision_quality"
    config = folder / "config.pbtxt"
    edit(
        config, "    kind: KIND_CPU\n  }", "    kind: KIND_CPU\n  },\n  {\n    kind: KIND_GPU\n  }"
    )
    assert load_triton_package(folder).providers == GPU
    edit(
        config,
        "dynamic_batching {",
        "optimization { execution_accelerators { gpu_execution_accelerator: "
        '[ { name: "tensorrt" } ] } }\ndynamic_batching {',
    )
    assert load_triton_package(folder).providers == (
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    )
    # The ensemble takes the most capable provider list of its composing models.
    assert load_triton_package(repo / "vision").providers == (
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    )


def test_ensemble_of_cpu_models_runs_on_cpu(repo: Path) -> None:
    edit(repo / "vision_classifier" / "config.pbtxt", "KIND_GPU", "KIND_CPU")
    assert load_triton_package(repo / "vision").providers == CPU


def test_ensemble_batching_follows_composing_models(repo: Path) -> None:
    edit(
        repo / "vision_classifier" / "config.pbtxt",
        "max_queue_delay_microseconds: 2000",
        "max_queue_delay_microseconds: 5500",
    )
    assert load_triton_package(repo / "vision_classifier").batching == BatchingSpec(
        enabled=True, max_batch_size=64, max_delay_ms=5.5
    )
    assert load_triton_package(repo / "vision").batching == BatchingSpec(
        enabled=True, max_batch_size=64, max_delay_ms=5.5
    )
    edit(repo / "vision" / "config.pbtxt", "max_batch_size: 64", "max_batch_size: 16")
    assert load_triton_package(repo / "vision").batching.max_batch_size == 16
    for name in VISION_MODELS[:-1]:
        drop_block(repo / name / "config.pbtxt", "dynamic_batching {")
    assert load_triton_package(repo / "vision_quality").batching == BatchingSpec(
        enabled=False, max_batch_size=64
    )
    assert load_triton_package(repo / "vision").batching == BatchingSpec(
        enabled=False, max_batch_size=16
    )


# --------------------------------------------------------------------------- ensembles

ENSEMBLE = """\
name: "vision"
platform: "ensemble"
max_batch_size: 64
input [ { name: "image" data_type: TYPE_UINT8 dims: [ 3, 64, 64 ] } ]
output [ { name: "class_id" data_type: TYPE_INT64 dims: [ 1 ] } ]
"""


def step(model: str, imap: dict[str, str], omap: dict[str, str]) -> str:
    """One ``ensemble_scheduling.step`` entry in protobuf text format."""

    def entries(field: str, mapping: dict[str, str]) -> str:
        return " ".join(f'{field} {{ key: "{k}" value: "{v}" }}' for k, v in mapping.items())

    return (
        f'{{ model_name: "{model}" model_version: -1 '
        f"{entries('input_map', imap)} {entries('output_map', omap)} }}"
    )


def write_ensemble(repo: Path, *steps: str, head: str = ENSEMBLE) -> Path:
    config = repo / "vision" / "config.pbtxt"
    config.write_text(head + "ensemble_scheduling { step [\n" + ",\n".join(steps) + "\n] }\n")
    return config


PRE = step("vision_preprocess", {"image": "image"}, {"pixels": "pixels"})
CLS = step("vision_classifier", {"input": "pixels"}, {"output": "logits"})
POST = step("vision_postprocess", {"logits": "logits"}, {"class_id": "class_id"})
WRITTEN = "class_id, logits, pixels, probabilities, quality, top_classes"


def test_minimal_ensemble_from_helpers_loads(repo: Path) -> None:
    write_ensemble(repo, POST, CLS, PRE)
    spec = load_triton_package(repo / "vision")
    assert [s.model for s in spec.steps] == [
        "vision_preprocess",
        "vision_classifier",
        "vision_postprocess",
    ]


def test_step_names_unknown_model(repo: Path) -> None:
    config = repo / "vision" / "config.pbtxt"
    edit(config, 'model_name: "vision_classifier"', 'model_name: "vision_clf"')
    assert error(repo / "vision") == (
        f"{config}: ensemble_scheduling.step[1].model_name: model 'vision_clf' is not in the "
        f"repository {repo} (no vision_clf/config.pbtxt); models there: vision, "
        "vision_classifier, vision_postprocess, vision_preprocess, vision_quality"
    )


def test_cycle(repo: Path) -> None:
    config = write_ensemble(
        repo,
        PRE,
        CLS,
        step("vision_postprocess", {"logits": "b"}, {"probabilities": "a", "class_id": "class_id"}),
        step("vision_postprocess", {"logits": "a"}, {"probabilities": "b"}),
    )
    assert error(repo / "vision") == (
        f"{config}: ensemble_scheduling.step: the steps wait on each other in a cycle: "
        "step[2] (vision_postprocess) reads 'b' from step[3] (vision_postprocess), "
        "which reads 'a' from step[2] (vision_postprocess)"
    )


def test_self_loop(repo: Path) -> None:
    config = write_ensemble(
        repo,
        PRE,
        step("vision_postprocess", {"logits": "p"}, {"probabilities": "p", "class_id": "class_id"}),
    )
    assert error(repo / "vision") == (
        f"{config}: ensemble_scheduling.step: the steps wait on each other in a cycle: "
        "step[1] (vision_postprocess) reads 'p' from step[1] (vision_postprocess)"
    )


def test_tensor_not_produced(repo: Path) -> None:
    config = repo / "vision" / "config.pbtxt"
    edit(
        config,
        'input_map { key: "input" value: "pixels" }',
        'input_map { key: "input" value: "pixel" }',
    )
    assert error(repo / "vision") == (
        f"{config}: ensemble_scheduling.step[1].input_map: tensor 'pixel' is not an ensemble "
        f"input and no step writes it; ensemble inputs: image; written by steps: {WRITTEN}"
    )


def test_ensemble_output_not_written(repo: Path) -> None:
    config = repo / "vision" / "config.pbtxt"
    edit(config, 'name: "quality"', 'name: "confidence"')
    assert error(repo / "vision") == (
        f"{config}: output[3]: ensemble output 'confidence' is not written by any step; "
        f"written by steps: {WRITTEN}"
    )


def test_ensemble_input_not_read(repo: Path) -> None:
    config = repo / "vision" / "config.pbtxt"
    edit(config, "input [\n", 'input [\n  { name: "mask" data_type: TYPE_BOOL dims: [ 1 ] },\n')
    assert error(repo / "vision") == (
        f"{config}: input[0]: ensemble input 'mask' is not read by any step"
    )


def test_written_tensor_neither_read_nor_declared(repo: Path) -> None:
    config = repo / "vision" / "config.pbtxt"
    drop_block(config, '  {\n    name: "quality"', before=",\n")
    assert error(repo / "vision") == (
        f"{config}: ensemble_scheduling.step[2].output_map: tensor 'quality' is neither read "
        "by a step nor declared as an ensemble output; ensemble outputs: class_id, "
        "probabilities, top_classes"
    )


@pytest.mark.parametrize("kind", ["input", "output"])
def test_ensemble_must_declare_inputs_and_outputs(repo: Path, kind: str) -> None:
    head = "\n".join(line for line in ENSEMBLE.splitlines() if not line.startswith(kind))
    config = write_ensemble(repo, PRE, CLS, POST, head=head + "\n")
    assert error(repo / "vision") == (
        f"{config}: {kind}: an ensemble must declare its {kind}s; none are declared"
    )


def test_ensemble_needs_scheduling_and_steps(repo: Path) -> None:
    config = repo / "vision" / "config.pbtxt"
    config.write_text(ENSEMBLE)
    assert error(repo / "vision") == (
        f"{config}: ensemble_scheduling: missing; an ensemble lists its steps there"
    )
    config.write_text(ENSEMBLE + "ensemble_scheduling { }\n")
    assert error(repo / "vision") == (
        f"{config}: ensemble_scheduling.step: an ensemble needs at least one step"
    )


def test_ensemble_takes_no_instance_group(repo: Path) -> None:
    config = write_ensemble(
        repo, PRE, CLS, POST, head=ENSEMBLE + "instance_group [ { kind: KIND_GPU } ]\n"
    )
    assert error(repo / "vision") == (
        f"{config}: instance_group: an ensemble takes no instance_group; set it on the "
        "composing models"
    )


@pytest.mark.parametrize(
    ("bad_step", "field", "problem"),
    [
        (
            step("vision_classifier", {"pixels": "pixels"}, {"output": "logits"}),
            "ensemble_scheduling.step[1].input_map",
            "key 'pixels' is not an input of model 'vision_classifier'; its inputs: input",
        ),
        (
            step("vision_classifier", {"input": "pixels"}, {"logits": "logits"}),
            "ensemble_scheduling.step[1].output_map",
            "key 'logits' is not an output of model 'vision_classifier'; its outputs: output",
        ),
        (
            step("vision_classifier", {"input": "pixels"}, {}),
            "ensemble_scheduling.step[1].output_map",
            "empty; map the outputs of model 'vision_classifier' to ensemble tensors",
        ),
        (
            step("vision_classifier", {"input": "pixels"}, {"output": "class_id"}),
            "ensemble_scheduling.step[2].output_map",
            "tensor 'class_id' is already written by step[1] (vision_classifier); "
            "each ensemble tensor has one writer",
        ),
        (
            step("vision_classifier", {"input": "pixels"}, {"output": "image"}),
            "ensemble_scheduling.step[1].output_map",
            "tensor 'image' is an ensemble input; a step may not write it",
        ),
        (
            step("vision_classifier", {"input": "image"}, {"output": "logits"}),
            "ensemble_scheduling.step[1].input_map",
            "tensor 'image' is declared as ensemble input UINT8 [-1, 3, 64, 64] but input "
            "'input' of model 'vision_classifier' expects FP32 [-1, 3, 32, 32]",
        ),
        (
            step("vision_quality", {"probs": "pixels"}, {"score": "logits"}),
            "ensemble_scheduling.step[1].input_map",
            "tensor 'pixels' from step[0] (vision_preprocess) is FP32 [-1, 3, 32, 32] but "
            "input 'probs' of model 'vision_quality' expects FP32 [-1, 10]",
        ),
        (
            step("vision_postprocess", {"logits": "pixels"}, {"class_id": "logits"}),
            "ensemble_scheduling.step[1].input_map",
            "tensor 'pixels' from step[0] (vision_preprocess) is FP32 [-1, 3, 32, 32] but "
            "input 'logits' of model 'vision_postprocess' expects FP32 [-1, 10]",
        ),
    ],
    ids=[
        "input-key",
        "output-key",
        "empty-output-map",
        "written-twice",
        "writes-ensemble-input",
        "input-dtype",
        "step-shape",
        "step-rank",
    ],
)
def test_bad_step_maps(repo: Path, bad_step: str, field: str, problem: str) -> None:
    config = write_ensemble(repo, PRE, bad_step, POST)
    assert error(repo / "vision") == f"{config}: {field}: {problem}"


def test_model_input_must_be_mapped(repo: Path) -> None:
    # A composing model with two inputs, one of them left unmapped.
    folder = repo / "vision_blend"
    (folder / "1").mkdir(parents=True)
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])],
        "vision_blend",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 10]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 10]),
        ],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["n", 10])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save_model(model, str(folder / "1" / "model.onnx"))
    (folder / "config.pbtxt").write_text(
        'name: "vision_blend"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 64\n'
        'input [ { name: "a" data_type: TYPE_FP32 dims: [ 10 ] },\n'
        '        { name: "b" data_type: TYPE_FP32 dims: [ 10 ] } ]\n'
        'output [ { name: "sum" data_type: TYPE_FP32 dims: [ 10 ] } ]\n'
    )
    assert load_triton_package(folder).batching == BatchingSpec(enabled=False, max_batch_size=64)
    config = write_ensemble(
        repo, PRE, CLS, step("vision_blend", {"a": "logits"}, {"sum": "class_id"})
    )
    assert error(repo / "vision") == (
        f"{config}: ensemble_scheduling.step[2].input_map: input 'b' of model 'vision_blend' "
        "is not mapped; map it to an ensemble tensor"
    )


def test_declared_output_disagrees_with_writer(repo: Path) -> None:
    config = repo / "vision" / "config.pbtxt"
    edit(
        config,
        'name: "quality"\n    data_type: TYPE_FP32\n    dims: [ 1 ]',
        'name: "quality"\n    data_type: TYPE_FP32\n    dims: [ 2 ]',
    )
    assert error(repo / "vision") == (
        f"{config}: output[3]: ensemble output 'quality' is declared FP32 [-1, 2] but "
        "step[2] (vision_quality) writes FP32 [-1, 1]"
    )


def test_ensemble_batch_larger_than_a_composing_model(repo: Path) -> None:
    config = repo / "vision" / "config.pbtxt"
    edit(config, "max_batch_size: 64", "max_batch_size: 128")
    assert error(repo / "vision") == (
        f"{config}: max_batch_size: is 128 but composing model 'vision_preprocess' allows at "
        "most 64; lower it or raise the model's max_batch_size"
    )


def test_nested_ensemble_is_refused(repo: Path) -> None:
    outer = repo / "vision_outer"
    (outer / "1").mkdir(parents=True)
    (outer / "config.pbtxt").write_text(
        ENSEMBLE.replace('"vision"', '"vision_outer"')
        + "ensemble_scheduling { step [ "
        + step("vision", {"image": "image"}, {"class_id": "class_id"})
        + " ] }\n"
    )
    assert error(outer) == (
        f"{outer}/config.pbtxt: ensemble_scheduling.step[0].model_name: 'vision' is itself "
        "an ensemble; nested ensembles are not supported"
    )
    # An ensemble naming itself is refused the same way instead of recursing.
    config = write_ensemble(repo, step("vision", {"image": "image"}, {"class_id": "class_id"}))
    assert error(repo / "vision") == (
        f"{config}: ensemble_scheduling.step[0].model_name: 'vision' is itself an ensemble; "
        "nested ensembles are not supported"
    )


def test_unmapped_graph_output_would_overwrite_an_ensemble_tensor(repo: Path) -> None:
    # vision_postprocess also writes top_scores, which this ensemble does not map; our
    # runtime stores unmapped outputs under their own name, so the name must be free.
    config = repo / "vision" / "config.pbtxt"
    edit(config, 'name: "quality"', 'name: "top_scores"')
    edit(
        config,
        'output_map { key: "score" value: "quality" }',
        'output_map { key: "score" value: "top_scores" }',
    )
    assert error(repo / "vision") == (
        f"{config}: ensemble_scheduling.step[3].output_map: graph output 'top_scores' of "
        "model 'vision_postprocess' is not mapped but has the name of ensemble tensor "
        "'top_scores', which it would overwrite; map it"
    )
