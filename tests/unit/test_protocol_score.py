"""``/score`` payloads: every accepted form, column matching, every refusal's message, the
response rule, and fuzzing that nothing but a ``RequestError`` escapes the decoder."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import DecodeError, EmptyBatchError, ExecutionError, RequestError
from shared.pipeline.spec import PackageSpec
from shared.pipeline.validate import validate_inputs
from shared.protocol.score import (
    ScoreRequest,
    decode_score_request,
    encode_score_response,
    predictions_output,
)

COLUMNS = ["amount", "hour", "foreign"]


def spec(inputs: list[dict[str, Any]], outputs: list[dict[str, Any]] | None = None) -> PackageSpec:
    return PackageSpec.model_validate(
        {
            "name": "m",
            "version": "1",
            "inputs": inputs,
            "outputs": outputs or [{"name": "y", "datatype": "FP32", "shape": [-1]}],
            "steps": [{"onnx": "model.onnx"}],
        }
    )


# x with named columns: the fraud-style tabular model.
TABULAR = spec([{"name": "x", "datatype": "FP32", "shape": [-1, 3], "columns": COLUMNS}])
# One input, no column names.
PLAIN = spec([{"name": "x", "datatype": "FP64", "shape": [-1, 2]}])
# Several inputs of different datatypes.
MULTI = spec(
    [
        {"name": "x", "datatype": "FP32", "shape": [-1, 2], "columns": ["a", "b"]},
        {"name": "ids", "datatype": "INT64", "shape": [-1]},
        {"name": "text", "datatype": "BYTES", "shape": [-1, 1]},
    ]
)
FRAUD_OUTPUTS = [
    {"name": "label", "datatype": "INT64", "shape": [-1]},
    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
    {"name": "risk", "datatype": "BYTES", "shape": [-1]},
]


def decode(doc: Any, package: PackageSpec = TABULAR) -> ScoreRequest:
    return decode_score_request(json.dumps(doc).encode(), package)


def refused(doc: Any, package: PackageSpec = TABULAR) -> str:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(DecodeError) as err:
        decode_score_request(body, package)
    return str(err.value)


def assert_inputs(got: ScoreRequest, want: dict[str, np.ndarray]) -> None:
    assert list(got.inputs) == list(want)
    for name, arr in want.items():
        assert got.inputs[name].dtype == arr.dtype, name
        assert got.inputs[name].shape == arr.shape, name
        assert got.inputs[name].tolist() == arr.tolist(), name


ROWS: list[list[float]] = [[1.5, 3, 0], [20, 23, 1]]
X = np.array(ROWS, dtype=np.float32)


# --- accepted forms ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {"input_data": ROWS},
        {"data": ROWS},
        {"instances": ROWS},
        {"inputs": ROWS},
        {"inputs": {"x": ROWS}},
        {"input_data": {"x": ROWS}},
        {"instances": [{"x": row} for row in ROWS]},
        {"input_data": {"data": ROWS}},
        {"input_data": {"columns": COLUMNS, "data": ROWS}},
    ],
    ids=lambda d: orjson.dumps(d).decode()[:40],
)
def test_forms_of_a_single_input(doc: Any) -> None:
    got = decode(doc)
    assert_inputs(got, {"x": X})
    assert got.index is None


def test_split_table_reorders_columns_and_keeps_index() -> None:
    doc = {
        "input_data": {
            "columns": ["foreign", "amount", "hour"],
            "index": ["a", 7],
            "data": [[0, 1.5, 3], [1, 20, 23]],
        }
    }
    got = decode(doc)
    assert_inputs(got, {"x": X})
    assert got.index == ["a", 7]


def test_records_by_column_name() -> None:
    doc = {"instances": [dict(zip(reversed(COLUMNS), reversed(row), strict=True)) for row in ROWS]}
    assert_inputs(decode(doc), {"x": X})


def test_columnar_by_column_name() -> None:
    doc = {"inputs": {"hour": [3, 23], "foreign": [0, 1], "amount": [1.5, 20]}}
    assert_inputs(decode(doc), {"x": X})


def test_split_table_for_an_input_without_column_names_is_taken_as_sent() -> None:
    doc = {"input_data": {"columns": ["f0", "f1"], "index": [0], "data": [[1, 2]]}}
    got = decode(doc, PLAIN)
    assert_inputs(got, {"x": np.array([[1, 2]], dtype=np.float64)})
    assert got.index == [0]


def test_multi_input_split_table() -> None:
    doc = {
        "input_data": {
            "columns": ["text", "b", "ids", "a"],
            "data": [["hi", 2, 7, 1], ["é", 4.5, -1, 3]],
        }
    }
    assert_inputs(
        decode(doc, MULTI),
        {
            "x": np.array([[1, 2], [3, 4.5]], dtype=np.float32),
            "ids": np.array([7, -1], dtype=np.int64),
            "text": np.array([[b"hi"], ["é".encode()]], dtype=object),
        },
    )


def test_multi_input_records_and_columns() -> None:
    want: dict[str, np.ndarray] = {
        "x": np.array([[1, 2], [3, 4]], dtype=np.float32),
        "ids": np.array([7, 8], dtype=np.int64),
        "text": np.array([[b"p"], [b"q"]], dtype=object),
    }
    records = {
        "instances": [
            {"x": [1, 2], "ids": 7, "text": "p"},
            {"x": [3, 4], "ids": 8, "text": "q"},
        ]
    }
    columnar = {"inputs": {"text": [["p"], ["q"]], "ids": [7, 8], "a": [1, 3], "b": [2, 4]}}
    assert_inputs(decode(records, MULTI), want)
    assert_inputs(decode(columnar, MULTI), want)


def test_an_absent_input_is_left_for_the_validator() -> None:
    got = decode({"inputs": {"ids": [1]}}, MULTI)
    assert list(got.inputs) == ["ids"]


@pytest.mark.parametrize(
    "doc",
    [{"instances": []}, {"input_data": {"columns": COLUMNS, "data": []}}, {"inputs": {"x": []}}],
)
def test_empty_rows_reach_the_validator_as_an_empty_batch(doc: Any) -> None:
    got = decode(doc)
    assert got.inputs["x"].shape == (0, 3)
    with pytest.raises(EmptyBatchError) as err:
        validate_inputs(got.inputs, TABULAR)
    assert str(err.value) == "input 'x' has 0 rows; model m:1 needs at least 1"


def test_one_scalar_per_row_for_a_single_column_input() -> None:
    package = spec([{"name": "v", "datatype": "INT32", "shape": [-1, 1]}])
    assert_inputs(
        decode({"instances": [1, 2]}, package), {"v": np.array([[1], [2]], dtype=np.int32)}
    )


# --- refusals ---------------------------------------------------------------------------------

TAKES = "inputs: x; columns of x: amount, hour, foreign"
MULTI_TAKES = "inputs: x, ids, text; columns of x: a, b"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            b"{",
            "the /score body is not valid JSON: unexpected end of data: line 1 column 2 (char 1)",
        ),
        ([ROWS], "the /score body must be a JSON object; got an array"),
        (
            {},
            "the /score body must be a JSON object with exactly one of input_data, data, "
            "instances, inputs; got no fields",
        ),
        (
            {"input_data": ROWS, "params": {}},
            "the /score body must be a JSON object with exactly one of input_data, data, "
            "instances, inputs; got input_data, params",
        ),
        (
            {"rows": ROWS},
            "the /score body must be a JSON object with exactly one of input_data, data, "
            "instances, inputs; got rows",
        ),
        ({"input_data": "1,2"}, "input_data must be an array of rows or an object; got a string"),
        ({"instances": {"x": ROWS}}, "instances must be an array of rows; got an object"),
        (
            {"input_data": {"columns": ["amount", "hour", "colour"], "data": ROWS}},
            f"'colour' in input_data is neither an input nor a column of model m:1; {TAKES}",
        ),
        (
            {"inputs": {"x": ROWS, "y": [1], "z": [2]}},
            f"'y', 'z' in inputs are neither inputs nor columns of model m:1; {TAKES}",
        ),
        (
            {"input_data": {"columns": ["amount", "hour"], "data": [[1, 2]]}},
            "input 'x' is missing column 'foreign' in input_data; its columns are amount, hour, "
            "foreign",
        ),
        (
            {"instances": [{"amount": 1}]},
            "input 'x' is missing columns 'hour', 'foreign' in instances; its columns are amount, "
            "hour, foreign",
        ),
        (
            {"inputs": {"x": ROWS, "amount": [1, 2]}},
            "input 'x' is given both by name and by its columns 'amount' in inputs; send one",
        ),
        (
            {"input_data": {"columns": COLUMNS, "data": [[1, 2, 3], [4, 5]]}},
            "input_data.data must be rows of 3 values, one per column in input_data.columns",
        ),
        (
            {"input_data": {"columns": COLUMNS, "data": [[1, 2]]}},
            "input_data.data must be rows of 3 values, one per column in input_data.columns",
        ),
        (
            {"input_data": {"columns": ["amount", "amount", "hour"], "data": ROWS}},
            "input_data.columns names 'amount' more than once",
        ),
        (
            {"input_data": {"columns": "amount", "data": ROWS}},
            "input_data.columns must be an array of strings",
        ),
        (
            {"input_data": {"index": [1], "data": ROWS}},
            "input_data.index has 1 entries but input_data.data has 2 rows",
        ),
        (
            {"input_data": {"index": 1, "data": ROWS}},
            "input_data.index must be an array; got a number",
        ),
        ({"input_data": {"data": 5}}, "input_data.data must be an array of rows; got a number"),
        (
            {"instances": [{"x": [1, 2, 3]}, [1, 2, 3]]},
            "instances[1] is an array but instances[0] is an object; rows are all objects or all "
            "arrays",
        ),
        (
            {"instances": [{"amount": 1, "hour": 2, "foreign": 0}, {"amount": 1, "hour": 2}]},
            "instances[1] has fields amount, hour but instances[0] has fields amount, foreign, "
            "hour; every row names the same fields",
        ),
        (
            {"input_data": [["a", "b", "c"]]},
            "input 'x' has datatype 'FP32' but its data holds strings; FP32 data are JSON numbers",
        ),
        (
            {"inputs": {"amount": [1, "high"], "hour": [1, 2], "foreign": [0, 1]}},
            "column 'amount' of input 'x' has datatype 'FP32' but its data holds strings; FP32 "
            "data are JSON numbers",
        ),
        (
            {"inputs": {"amount": [1, 2], "hour": [1], "foreign": [0, 1]}},
            "the columns of input 'x' in inputs differ in length: amount 2, hour 1, foreign 2",
        ),
        (
            {"inputs": {"amount": [[1], [2]], "hour": [1, 2], "foreign": [0, 1]}},
            "column 'amount' of input 'x' in inputs must hold one value per row; got values "
            "nested as [2, 1]",
        ),
        (
            {"inputs": {"amount": 1, "hour": 2, "foreign": 0}},
            "column 'amount' of input 'x' in inputs must be an array of one value per row; got a "
            "number",
        ),
        ({"inputs": {"x": 3}}, "input 'x' in inputs must be an array of rows; got a number"),
        (
            {"input_data": [[1, 2, 3], [4, 5]]},
            "input 'x' data is not a rectangular nested list: its rows differ in length or depth",
        ),
    ],
)
def test_refusals(doc: Any, message: str) -> None:
    assert refused(doc) == message


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"input_data": [[1, 2]]},
            "input_data holds unnamed rows but model m:1 has 3 inputs (x, ids, text); name them "
            "with an object of inputs, instances as objects, or a table with columns",
        ),
        (
            {"input_data": {"columns": ["a", "b", "ids", "txt"], "data": [[1, 2, 3, "t"]]}},
            f"'txt' in input_data is neither an input nor a column of model m:1; {MULTI_TAKES}",
        ),
        (
            {"inputs": {"ids": [1.5], "a": [1], "b": [2]}},
            "input 'ids' has datatype 'INT64' but its data holds numbers that are not integers; "
            "INT64 data are JSON integers within [-9223372036854775808, 9223372036854775807]",
        ),
        (
            {"inputs": {"text": [[1]]}},
            "input 'text' has datatype 'BYTES' but its data holds numbers; BYTES data are JSON "
            "strings",
        ),
    ],
)
def test_multi_input_refusals(doc: Any, message: str) -> None:
    assert refused(doc, MULTI) == message


def test_unknown_columns_for_a_single_input_with_declared_columns() -> None:
    doc = {"input_data": {"columns": ["f0", "f1", "f2"], "data": [[1, 2, 3]]}}
    assert refused(doc) == (
        f"'f0', 'f1', 'f2' in input_data are neither inputs nor columns of model m:1; {TAKES}"
    )


# --- responses -----------------------------------------------------------------------------


def test_single_output_answers_predictions_only() -> None:
    body = encode_score_response({"y": np.array([0.25, 1.0], dtype=np.float32)}, TABULAR)
    assert orjson.loads(body) == {"predictions": [0.25, 1.0]}


def test_bytes_label_is_the_prediction_and_all_outputs_follow() -> None:
    package = spec(TABULAR.model_dump()["inputs"], FRAUD_OUTPUTS)
    assert predictions_output(package) == "risk"
    outputs: dict[str, np.ndarray] = {
        "label": np.array([0, 1], dtype=np.int64),
        "probabilities": np.array([[0.75, 0.25], [0.5, 0.5]], dtype=np.float32),
        "risk": np.array([b"low", b"hoch"], dtype=object),
        "extra": np.zeros(2),
    }
    body = encode_score_response(outputs, package, index=["r1", "r2"])
    assert orjson.loads(body) == {
        "predictions": ["low", "hoch"],
        "outputs": {
            "label": [0, 1],
            "probabilities": [[0.75, 0.25], [0.5, 0.5]],
            "risk": ["low", "hoch"],
        },
        "index": ["r1", "r2"],
    }


def test_first_declared_output_without_a_single_bytes_output() -> None:
    outputs_spec = [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "class_id", "datatype": "INT64", "shape": [-1, 1]},
    ]
    package = spec(TABULAR.model_dump()["inputs"], outputs_spec)
    assert predictions_output(package) == "probabilities"
    two_labels = spec(
        TABULAR.model_dump()["inputs"],
        [
            {"name": "a", "datatype": "INT64", "shape": [-1]},
            {"name": "b", "datatype": "BYTES", "shape": [-1]},
            {"name": "c", "datatype": "BYTES", "shape": [-1]},
        ],
    )
    assert predictions_output(two_labels) == "a"


def test_response_values_bytes_nan_and_scalars() -> None:
    package = spec(
        TABULAR.model_dump()["inputs"],
        [
            {"name": "s", "datatype": "BYTES", "shape": [-1]},
            {"name": "f", "datatype": "FP16", "shape": [-1]},
        ],
    )
    body = encode_score_response(
        {
            "s": np.array([b"\xffok", "plain"], dtype=object),
            "f": np.array([np.nan, 0.5], np.float16),
        },
        package,
    )
    assert orjson.loads(body) == {
        "predictions": ["\ufffdok", "plain"],
        "outputs": {"s": ["\ufffdok", "plain"], "f": [None, 0.5]},
    }
    scalar = encode_score_response({"y": np.array(2.5, dtype=np.float32)}, TABULAR)
    assert orjson.loads(scalar) == {"predictions": 2.5}


def test_response_refuses_a_missing_declared_output() -> None:
    package = spec(TABULAR.model_dump()["inputs"], FRAUD_OUTPUTS)
    with pytest.raises(ExecutionError) as err:
        encode_score_response({"label": np.zeros(1, np.int64)}, package)
    assert str(err.value) == "model m:1 produced no 'probabilities', 'risk'; it produced 'label'"


# --- fuzzing --------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
    | st.sampled_from(["amount", "hour", "foreign", "x", "ids", "a", "b", "text"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["amount", "hour", "foreign", "x", "ids", "a", "b", "text", "z"])
            | st.text(max_size=4),
            inner,
            max_size=4,
        )
    ),
    max_leaves=24,
)
split_tables = st.fixed_dictionaries(
    {"data": json_values},
    optional={
        "columns": st.lists(st.sampled_from(["amount", "hour", "foreign", "a", "b", "ids", "q"]))
        | json_values,
        "index": json_values,
    },
)
bodies = st.dictionaries(
    st.sampled_from(["input_data", "data", "instances", "inputs", "other"]),
    json_values | split_tables,
    min_size=1,
    max_size=2,
)
packages = st.sampled_from([TABULAR, PLAIN, MULTI])
# Mostly well-formed bodies, so that fuzzing reaches column matching and casting.
cells = st.integers(-5, 5) | st.floats(-10, 10) | st.booleans() | st.text(max_size=2) | st.none()
row_lists = st.lists(st.lists(cells, min_size=1, max_size=4) | cells, max_size=4)
field_names = st.sampled_from(["amount", "hour", "foreign", "x", "ids", "a", "b", "text", "q"])
plausible_bodies = st.one_of(
    st.builds(
        lambda k, v: {k: v},
        st.sampled_from(["input_data", "data", "instances", "inputs"]),
        row_lists,
    ),
    st.builds(
        lambda k, v: {k: v},
        st.sampled_from(["input_data", "inputs"]),
        st.dictionaries(field_names, row_lists, max_size=4),
    ),
    st.builds(
        lambda rows: {"instances": rows},
        st.lists(
            st.dictionaries(field_names, cells | st.lists(cells, max_size=3), max_size=4),
            max_size=3,
        ),
    ),
    st.builds(
        lambda cols, rows, index: {"input_data": {"columns": cols, "data": rows, "index": index}},
        st.lists(field_names, max_size=4),
        row_lists,
        st.lists(cells, max_size=4),
    ),
)


def only_request_errors(body: bytes, package: PackageSpec) -> None:
    with contextlib.suppress(RequestError):
        decode_score_request(body, package)


@given(body=st.binary(max_size=120), package=packages)
@settings(max_examples=150, deadline=None)
def test_fuzz_random_bytes(body: bytes, package: PackageSpec) -> None:
    only_request_errors(body, package)


@given(doc=json_values, package=packages)
@settings(max_examples=150, deadline=None)
def test_fuzz_random_json(doc: Any, package: PackageSpec) -> None:
    only_request_errors(json.dumps(doc).encode(), package)


@given(doc=bodies, package=packages)
@settings(max_examples=500, deadline=None)
def test_fuzz_score_shaped_json(doc: Any, package: PackageSpec) -> None:
    only_request_errors(json.dumps(doc).encode(), package)


@given(doc=plausible_bodies, package=packages)
@settings(max_examples=500, deadline=None)
def test_fuzz_plausible_bodies(doc: Any, package: PackageSpec) -> None:
    only_request_errors(json.dumps(doc).encode(), package)
