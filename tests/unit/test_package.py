"""Bad model packages fail at load with a message naming the file, field and expectation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

from shared.errors import ExecutionError, PackageError
from shared.pipeline.model import Model
from shared.pipeline.package import discover_packages, load_model_yaml, load_package
from shared.serving.dataplane import DataPlane, ModelState
from tests.conftest import LINEAR_YAML, PackageFactory, linear_graph


def _load(folder: Path) -> Model:
    return Model.load(load_model_yaml(folder))


def test_good_package_loads(make_package: PackageFactory) -> None:
    folder = make_package()
    spec = load_package(folder)  # dispatches on the folder's layout
    assert (spec.name, spec.version, spec.root) == ("lin", "1", str(folder))
    model = Model.load(spec)
    assert model.providers == ["CPUExecutionProvider"]
    assert model.stats.load_seconds > 0


def test_missing_model_yaml(tmp_path: Path) -> None:
    folder = tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    with pytest.raises(PackageError) as err:
        load_model_yaml(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: file not found; a package folder needs model.yaml or a config.pbtxt"
    )


def test_bad_yaml_names_line_and_column(make_package: PackageFactory) -> None:
    folder = make_package("name: lin\nversion: '1'\ninputs: [\n  - x\n")
    with pytest.raises(PackageError) as err:
        load_model_yaml(folder)
    assert str(err.value).startswith(f"{folder}/model.yaml: invalid YAML at line 4, column")


def test_top_level_not_a_mapping(make_package: PackageFactory) -> None:
    folder = make_package("- a\n- b\n")
    with pytest.raises(PackageError) as err:
        load_model_yaml(folder)
    assert str(err.value) == f"{folder}/model.yaml: expected a mapping at the top level, got list"


def test_unknown_datatype(make_package: PackageFactory) -> None:
    folder = make_package(
        LINEAR_YAML.replace("datatype: FP32, shape: [-1, 4]", "datatype: F32, shape: [-1, 4]")
    )
    with pytest.raises(PackageError) as err:
        load_model_yaml(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: inputs[0].datatype: Value error, unknown datatype 'F32'; "
        "expected one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, "
        "FP16, FP32, FP64, BYTES; got 'F32'"
    )
    assert err.value.field == "inputs[0].datatype"


def test_missing_field(make_package: PackageFactory) -> None:
    folder = make_package(LINEAR_YAML.replace("steps:\n  - onnx: model.onnx\n", ""))
    with pytest.raises(PackageError) as err:
        load_model_yaml(folder)
    assert str(err.value).startswith(f"{folder}/model.yaml: steps: Field required; got ")


def test_unknown_field_is_refused(make_package: PackageFactory) -> None:
    folder = make_package(LINEAR_YAML + "batchng: {max_batch_size: 8}\n")
    with pytest.raises(PackageError) as err:
        load_model_yaml(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: batchng: Extra inputs are not permitted; got {{'max_batch_size': 8}}"
    )


def test_name_must_match_folder(make_package: PackageFactory) -> None:
    folder = make_package(LINEAR_YAML.replace("name: lin", "name: other"))
    with pytest.raises(PackageError) as err:
        load_model_yaml(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: name: is 'other' but the package lives in lin/; expected 'lin'"
    )


def test_version_must_match_folder(make_package: PackageFactory) -> None:
    folder = make_package(LINEAR_YAML.replace('version: "1"', 'version: "7"'))
    with pytest.raises(PackageError) as err:
        load_model_yaml(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: version: is '7' but the version folder is 1/; expected '1'"
    )


def test_missing_onnx_file(make_package: PackageFactory) -> None:
    folder = make_package(LINEAR_YAML.replace("onnx: model.onnx", "onnx: nothere.onnx"))
    with pytest.raises(PackageError) as err:
        load_model_yaml(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: steps[0].onnx: file 'nothere.onnx' not found in {folder}"
    )


def test_corrupt_onnx_file(make_package: PackageFactory) -> None:
    folder = make_package(files={"model.onnx": b"not a protobuf at all"})
    with pytest.raises(PackageError) as err:
        _load(folder)
    assert str(err.value).startswith(f"{folder}/model.onnx: onnxruntime cannot load it: ")


def test_declared_dtype_differs_from_graph(make_package: PackageFactory) -> None:
    folder = make_package(
        LINEAR_YAML.replace("datatype: FP32, shape: [-1, 4]", "datatype: FP64, shape: [-1, 4]")
    )
    with pytest.raises(PackageError) as err:
        _load(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: model.onnx: tensor 'x' is FP64 but graph input 'x' of "
        "model.onnx takes FP32"
    )


def test_declared_rank_differs_from_graph(make_package: PackageFactory) -> None:
    folder = make_package(LINEAR_YAML.replace("shape: [-1, 4]", "shape: [-1, 2, 2]"))
    with pytest.raises(PackageError) as err:
        _load(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: model.onnx: tensor 'x' has rank 3 but graph input 'x' of "
        "model.onnx has rank 2"
    )


def test_input_name_not_in_graph(make_package: PackageFactory) -> None:
    folder = make_package(LINEAR_YAML.replace("name: x,", "name: features,"))
    with pytest.raises(PackageError) as err:
        _load(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: model.onnx: graph input 'x' needs tensor 'x', which no input "
        "or earlier step provides; available: features"
    )


def test_output_not_produced(make_package: PackageFactory) -> None:
    yaml_text = LINEAR_YAML.replace(
        "  - {name: z, datatype: FP32, shape: [-1]}",
        "  - {name: score, datatype: FP32, shape: [-1]}",
    )
    folder = make_package(yaml_text)
    with pytest.raises(PackageError) as err:
        _load(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: outputs: output 'score' is produced by no step; tensors: x, y, z"
    )


def test_output_declared_with_wrong_dtype(make_package: PackageFactory) -> None:
    folder = make_package(
        LINEAR_YAML.replace("{name: z, datatype: FP32", "{name: z, datatype: INT64")
    )
    with pytest.raises(PackageError) as err:
        _load(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: outputs: output 'z' is declared INT64 but the graph produces FP32"
    )


def test_int_graph_input_with_fp_declared(make_package: PackageFactory) -> None:
    folder = make_package(files={"model.onnx": linear_graph(elem=TensorProto.DOUBLE)})
    with pytest.raises(PackageError) as err:
        _load(folder)
    # The graph itself is invalid (MatMul of double by float): onnxruntime says so.
    assert str(err.value).startswith(f"{folder}/model.onnx: onnxruntime cannot load it: ")


HOOK_YAML = LINEAR_YAML.replace(
    "steps:\n  - onnx: model.onnx\n",
    "steps:\n  - onnx: model.onnx\n  - {python: hooks.py, stage: postprocess, params: {k: 2}}\n",
).replace(
    "  - {name: z, datatype: FP32, shape: [-1]}",
    "  - {name: z, datatype: FP32, shape: [-1]}\n  - {name: w, datatype: FP32, shape: [-1]}",
)


def test_hook_without_function(make_package: PackageFactory) -> None:
    folder = make_package(HOOK_YAML, files={"hooks.py": "def preprocess(t):\n    return t\n"})
    with pytest.raises(PackageError) as err:
        _load(folder)
    assert str(err.value) == (
        f"{folder}/hooks.py: postprocess: a postprocess step's module must define "
        "postprocess(tensors)"
    )


def test_hook_import_error(make_package: PackageFactory) -> None:
    folder = make_package(HOOK_YAML, files={"hooks.py": "import no_such_module_here\n"})
    with pytest.raises(PackageError) as err:
        _load(folder)
    assert str(err.value) == (
        f"{folder}/hooks.py: importing it failed: "
        "ModuleNotFoundError(\"No module named 'no_such_module_here'\")"
    )


def test_hook_init_failure(make_package: PackageFactory) -> None:
    src = "def init(params):\n    raise ValueError('bad k')\ndef postprocess(t):\n    return {}\n"
    folder = make_package(HOOK_YAML, files={"hooks.py": src})
    with pytest.raises(PackageError) as err:
        _load(folder)
    assert str(err.value) == f"{folder}/hooks.py: init: init(params) failed: ValueError('bad k')"


def test_hook_output_checked_at_warmup(make_package: PackageFactory) -> None:
    src = "import numpy as np\ndef postprocess(t):\n    return {'w': t['z'].astype(np.int64)}\n"
    folder = make_package(HOOK_YAML, files={"hooks.py": src})
    with pytest.raises(PackageError) as err:
        _load(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: outputs: output 'w' is declared FP32 but warm-up produced INT64"
    )


def test_hook_runs_with_params(make_package: PackageFactory) -> None:
    src = (
        "K = 0\n"
        "def init(params):\n    global K\n    K = params['k']\n"
        "def postprocess(t):\n    return {'w': t['z'] * K}\n"
    )
    folder = make_package(HOOK_YAML, files={"hooks.py": src})
    model = _load(folder)
    x = np.ones((2, 4), dtype=np.float32)
    out = model.predict({"x": x})
    np.testing.assert_allclose(out["w"], out["z"] * 2)


def test_unknown_provider(make_package: PackageFactory) -> None:
    folder = make_package(LINEAR_YAML.replace("[CPUExecutionProvider]", "[TPUExecutionProvider]"))
    with pytest.raises(PackageError) as err:
        load_model_yaml(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: providers: Value error, unknown execution provider "
        "'TPUExecutionProvider'; expected one of TensorrtExecutionProvider, "
        "CUDAExecutionProvider, CPUExecutionProvider; got ['TPUExecutionProvider']"
    )


def test_discover_finds_every_version(make_package: PackageFactory) -> None:
    make_package()
    folder2 = make_package(LINEAR_YAML.replace('version: "1"', 'version: "10"'), version="10")
    make_package(LINEAR_YAML.replace('version: "1"', 'version: "2"'), version="2")
    specs = discover_packages(folder2.parent.parent)
    assert [(s.name, s.version) for s in specs] == [("lin", "1"), ("lin", "2"), ("lin", "10")]


# -- hooks, warm-up and signature checks ---------------------------------------------------

# A pre-process hook turning the request input 'raw' into the graph input 'x'.
FEATURE_HOOK_YAML = LINEAR_YAML.replace("name: x,", "name: raw,").replace(
    "steps:\n  - onnx: model.onnx\n",
    "steps:\n  - {python: hooks.py, stage: preprocess}\n  - onnx: model.onnx\n",
)


def test_preprocess_hook_provides_a_graph_input(make_package: PackageFactory) -> None:
    src = "def preprocess(t):\n    return {'x': t['raw'] * 2}\n"
    model = _load(make_package(FEATURE_HOOK_YAML, files={"hooks.py": src}))
    plain = _load(make_package(name="plain", yaml_text=LINEAR_YAML.replace("lin", "plain")))
    raw = np.arange(8, dtype=np.float32).reshape(2, 4)
    out = model.predict({"raw": raw})
    expected = plain.predict({"x": raw * 2})
    np.testing.assert_array_equal(out["y"], expected["y"])
    np.testing.assert_array_equal(out["z"], expected["z"])


def test_preprocess_hook_may_replace_an_input_with_another_datatype(
    make_package: PackageFactory,
) -> None:
    yaml_text = LINEAR_YAML.replace("datatype: FP32, shape: [-1, 4]", "datatype: INT64, shape: [-1, 4]")
    yaml_text = yaml_text.replace(
        "steps:\n  - onnx: model.onnx\n",
        "steps:\n  - {python: hooks.py, stage: preprocess}\n  - onnx: model.onnx\n",
    )
    src = "import numpy as np\ndef preprocess(t):\n    return {'x': t['x'].astype(np.float32)}\n"
    model = _load(make_package(yaml_text, files={"hooks.py": src}))
    out = model.predict({"x": np.ones((3, 4), np.int64)})
    assert out["y"].shape == (3, 3) and out["y"].dtype == np.float32


def test_graph_input_no_hook_provides_fails_at_warm_up(make_package: PackageFactory) -> None:
    folder = make_package(FEATURE_HOOK_YAML, files={"hooks.py": "def preprocess(t):\n    return {}\n"})
    with pytest.raises(PackageError) as err:
        _load(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: steps: warm-up run failed on zero-valued example inputs: "
        "step model.onnx failed: graph input 'x' needs tensor 'x', which no input or earlier "
        "step provided; tensors: raw"
    )


def test_graph_input_a_hook_skips_at_run_time_is_an_execution_error(
    make_package: PackageFactory,
) -> None:
    src = "def preprocess(t):\n    return {} if (t['raw'] > 100).any() else {'x': t['raw']}\n"
    model = _load(make_package(FEATURE_HOOK_YAML, files={"hooks.py": src}))
    with pytest.raises(ExecutionError) as err:
        model.predict({"raw": np.full((1, 4), 1000, np.float32)})
    assert str(err.value) == (
        "step model.onnx failed: graph input 'x' needs tensor 'x', which no input or earlier "
        "step provided; tensors: raw"
    )


WARM_REFUSING_HOOK = (
    "from shared.errors import InputError\n"
    "def preprocess(t):\n"
    "    if not t['x'].any():\n"
    "        raise InputError('x', \"input 'x' is all zeros; at least one feature must be set\")\n"
    "    return {}\n"
)
WARM_REFUSING_YAML = LINEAR_YAML.replace(
    "steps:\n  - onnx: model.onnx\n",
    "steps:\n  - {python: hooks.py, stage: preprocess}\n  - onnx: model.onnx\n",
)


def test_hook_refusing_the_warm_up_inputs_is_a_package_error(make_package: PackageFactory) -> None:
    folder = make_package(WARM_REFUSING_YAML, files={"hooks.py": WARM_REFUSING_HOOK})
    with pytest.raises(PackageError) as err:
        _load(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: steps: warm-up run failed on zero-valued example inputs: "
        "step hooks.py raised InputError: input 'x' is all zeros; at least one feature must be set"
    )


def test_failed_warm_up_marks_the_package_failed_and_the_next_one_loads(
    make_package: PackageFactory,
) -> None:
    folder = make_package(WARM_REFUSING_YAML, files={"hooks.py": WARM_REFUSING_HOOK})
    make_package(LINEAR_YAML.replace("name: lin", "name: ok"), name="ok")
    plane = DataPlane(folder.parent.parent)
    assert plane.wait_loaded(60)
    states = {(e.spec.name, e.state, e.error) for e in plane.entries()}
    assert states == {
        (
            "lin",
            ModelState.FAILED,
            f"{folder}/model.yaml: steps: warm-up run failed on zero-valued example inputs: "
            "step hooks.py raised InputError: input 'x' is all zeros; at least one feature "
            "must be set",
        ),
        ("ok", ModelState.READY, ""),
    }


def test_fixed_first_dimension_refused_with_batching(make_package: PackageFactory) -> None:
    folder = make_package(LINEAR_YAML.replace("shape: [-1, 4]", "shape: [2, 4]"))
    with pytest.raises(PackageError) as err:
        load_model_yaml(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: Value error, input 'x' has shape [2, 4]; with batching on (the "
        "default) its first dimension is the rows and must be -1, as requests are "
        "concatenated along it: use [-1, 4], or batching: {enabled: false}"
    )


def test_fixed_first_dimension_loads_without_batching(make_package: PackageFactory) -> None:
    folder = make_package(
        LINEAR_YAML.replace("shape: [-1, 4]", "shape: [2, 4]") + "batching: {enabled: false}\n"
    )
    model = _load(folder)
    assert model.predict({"x": np.ones((2, 4), np.float32)})["y"].shape == (2, 3)


def test_input_without_dimensions_refused(make_package: PackageFactory) -> None:
    folder = make_package(LINEAR_YAML.replace("shape: [-1, 4]", "shape: []"))
    with pytest.raises(PackageError) as err:
        load_model_yaml(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: inputs: Value error, input 'x' has shape []; an input needs "
        "at least one dimension, the rows: use [-1] for one value per row; "
        "got [{'name': 'x', 'datatype': 'FP32', 'shape': []}]"
    )


def test_declared_input_no_step_reads(make_package: PackageFactory) -> None:
    folder = make_package(
        LINEAR_YAML.replace(
            "  - {name: x, datatype: FP32, shape: [-1, 4]}\n",
            "  - {name: x, datatype: FP32, shape: [-1, 4]}\n"
            "  - {name: z2, datatype: FP32, shape: [-1, 1]}\n"
            "  - {name: w, datatype: INT64, shape: [-1]}\n",
        )
    )
    with pytest.raises(PackageError) as err:
        _load(folder)
    assert str(err.value) == (
        f"{folder}/model.yaml: inputs: declared inputs 'z2', 'w' are read by no step; "
        "the steps read: x"
    )


def test_declared_input_a_hook_may_read_is_allowed(make_package: PackageFactory) -> None:
    yaml_text = HOOK_YAML.replace(
        "  - {name: x, datatype: FP32, shape: [-1, 4]}\n",
        "  - {name: x, datatype: FP32, shape: [-1, 4]}\n  - {name: k, datatype: FP32, shape: [-1]}\n",
    )
    src = "def postprocess(t):\n    return {'w': t['z'] * t['k']}\n"
    model = _load(make_package(yaml_text, files={"hooks.py": src}))
    out = model.predict({"x": np.ones((2, 4), np.float32), "k": np.array([2, 3], np.float32)})
    np.testing.assert_allclose(out["w"], out["z"] * [2, 3])
