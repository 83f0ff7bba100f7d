"""Open Inference Protocol v2 codec: round trips with tritonclient, every refusal's message,
and fuzzing that nothing but a ``RequestError`` ever escapes the decoder."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shared.errors import DecodeError, ExecutionError, InputError, RequestError
from shared.pipeline.dtypes import DATATYPES, to_numpy
from shared.pipeline.spec import PackageSpec
from shared.protocol.metadata import model_metadata, server_metadata
from shared.protocol.v2 import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    InferRequest,
    RequestedOutput,
    check_requested_outputs,
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
)

Client = triton.InferenceServerClient
NUMERIC = [d for d in DATATYPES if d != "BYTES"]
ALL_DATATYPES = list(DATATYPES)


def sample(datatype: str, *, utf8_only: bool = False) -> np.ndarray:
    """A 2x3 tensor of ``datatype`` with its extreme values."""
    if datatype == "BYTES":
        items: list[bytes] = [b"", b"abc", "é€".encode(), b"\x00mid\x00", b"tail\x00", b"x" * 300]
        if not utf8_only:
            items[5] = b"\xff\xfe not utf-8"
        return np.array(items, dtype=object).reshape(2, 3)
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    dtype = to_numpy(datatype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)  # type: ignore[type-var]
        values: list[Any] = [info.min, info.max, 0, 1, info.max // 3, info.min // 3]
    else:
        finfo = np.finfo(dtype)  # type: ignore[type-var]
        values = [finfo.min, finfo.max, 0.0, -1.5, float(finfo.tiny), 0.1]
    return np.array(values, dtype=dtype).reshape(2, 3)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    if want.dtype == object:
        assert got.dtype == object
        assert got.tolist() == want.tolist()
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def triton_body(
    arrays: dict[str, np.ndarray],
    *,
    binary: bool,
    outputs: list[Any] | None = None,
    request_id: str = "",
) -> tuple[bytes, int | None]:
    inputs = []
    for name, arr in arrays.items():
        datatype = "BYTES" if arr.dtype == object else triton_datatype(arr)
        inp = triton.InferInput(name, list(arr.shape), datatype)
        inp.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(inp)
    body, json_size = Client.generate_request_body(inputs, outputs=outputs, request_id=request_id)
    return bytes(body), json_size


def triton_datatype(arr: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(arr.dtype))


def parse(body: bytes, headers: dict[str, str]) -> Any:
    length = headers.get(HEADER_LENGTH)
    return Client.parse_response_body(body, header_length=int(length) if length else None)


def refused(body: bytes | dict[str, Any], header_length: int | None = None) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(DecodeError) as err:
        decode_infer_request(raw, header_length=header_length)
    return str(err.value)


def one_input(**fields: Any) -> dict[str, Any]:
    tensor = {"name": "x", "datatype": "FP32", "shape": [2, 4], "data": list(range(8))}
    tensor.update(fields)
    return {"inputs": [tensor]}


# --- compatibility with tritonclient -------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ALL_DATATYPES)
def test_decodes_tritonclient_requests(datatype: str, binary: bool) -> None:
    arr = sample(datatype, utf8_only=not binary)
    body, json_size = triton_body({"in": arr}, binary=binary, request_id="r-7")
    assert (json_size is not None) == binary

    request = decode_infer_request(body, header_length=json_size)

    assert request.id == "r-7"
    assert list(request.inputs) == ["in"]
    assert_same(request.inputs["in"], arr)
    # tritonclient asks for every output in binary when it names none.
    assert request.outputs == ()
    assert request.binary_data_output is True


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ALL_DATATYPES)
def test_tritonclient_parses_responses(datatype: str, binary: bool) -> None:
    arr = sample(datatype, utf8_only=not binary)
    body, headers = encode_infer_response(
        model_name="m",
        model_version="3",
        request_id="abc",
        outputs={"out": arr},
        requested=[RequestedOutput("out", binary_data=binary)],
    )

    result = parse(body, headers)

    assert result.get_response()["model_name"] == "m"
    assert result.get_response()["model_version"] == "3"
    assert result.get_response()["id"] == "abc"
    got = result.as_numpy("out")
    if datatype == "BYTES" and not binary:
        # JSON carries strings; tritonclient keeps them as str.
        assert got.tolist() == [[b.decode() for b in row] for row in arr.tolist()]
    else:
        assert_same(got, arr)
    if binary:
        assert headers["Content-Type"] == BINARY_CONTENT_TYPE
        assert int(headers[HEADER_LENGTH]) < len(body)
    else:
        assert headers == {"Content-Type": JSON_CONTENT_TYPE}


def test_mixed_request_and_response_through_tritonclient() -> None:
    a = np.arange(8, dtype=np.float16).reshape(2, 4)
    b = np.array([[b"ab", b"\x00c\x00"], [b"", "é".encode()]], dtype=object)
    c = np.array([1, -2], dtype=np.int64)
    inputs = []
    for name, arr, datatype, binary in (
        ("a", a, "FP16", True),
        ("b", b, "BYTES", True),
        ("c", c, "INT64", False),
    ):
        inp = triton.InferInput(name, list(arr.shape), datatype)
        inp.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(inp)
    outputs = [
        triton.InferRequestedOutput("c", binary_data=False),
        triton.InferRequestedOutput("a", binary_data=True),
    ]
    body, json_size = Client.generate_request_body(inputs, outputs=outputs, request_id="q")

    request = decode_infer_request(bytes(body), header_length=json_size)

    assert request.outputs == (RequestedOutput("c", False), RequestedOutput("a", True))
    assert request.binary_data_output is False
    assert_same(request.inputs["a"], a)
    assert_same(request.inputs["b"], b)
    assert_same(request.inputs["c"], c)

    out, headers = encode_infer_response(
        model_name="m",
        model_version=None,
        request_id=request.id,
        outputs=request.inputs,
        requested=request.outputs,
        binary_default=request.binary_data_output,
    )
    result = parse(out, headers)
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert names == ["c", "a"]  # the requested ones, in the requested order
    assert "model_version" not in result.get_response()
    assert_same(result.as_numpy("a"), a)
    assert_same(result.as_numpy("c"), c)
    assert result.as_numpy("b") is None


def test_binary_inputs_are_zero_copy_views() -> None:
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    body, json_size = triton_body({"x": arr}, binary=True)
    got = decode_infer_request(body, header_length=json_size).inputs["x"]
    assert not got.flags.writeable
    assert got.base is not None


@given(
    arr=hnp.arrays(
        dtype=st.sampled_from([to_numpy(d) for d in NUMERIC]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
    )
)
@settings(max_examples=60, deadline=None)
def test_binary_round_trip_any_numeric_array(arr: np.ndarray) -> None:
    body, json_size = triton_body({"t": arr}, binary=True)
    decoded = decode_infer_request(body, header_length=json_size).inputs["t"]
    np.testing.assert_array_equal(decoded, arr)
    assert decoded.dtype == arr.dtype and decoded.shape == arr.shape

    out, headers = encode_infer_response(
        model_name="m",
        model_version="1",
        request_id=None,
        outputs={"t": decoded},
        binary_default=True,
    )
    np.testing.assert_array_equal(parse(out, headers).as_numpy("t"), arr)


@given(
    items=st.lists(st.binary(max_size=20), min_size=0, max_size=6),
)
@settings(max_examples=40, deadline=None)
def test_bytes_round_trip_any_elements(items: list[bytes]) -> None:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    body, json_size = triton_body({"s": arr}, binary=True)
    assert decode_infer_request(body, header_length=json_size).inputs["s"].tolist() == items
    out, headers = encode_infer_response(
        model_name="m", model_version="1", request_id=None, outputs={"s": arr}, binary_default=True
    )
    assert list(parse(out, headers).as_numpy("s")) == items


# --- JSON requests ---------------------------------------------------------------------


def test_json_data_flat_or_nested() -> None:
    flat = decode_infer_request(orjson.dumps(one_input()), header_length=None)
    nested = decode_infer_request(
        orjson.dumps(one_input(data=[[0, 1, 2, 3], [4, 5, 6, 7]])), header_length=None
    )
    want = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert_same(flat.inputs["x"], want)
    assert_same(nested.inputs["x"], want)


def test_json_request_fields() -> None:
    doc = {
        "id": "42",
        "parameters": {"binary_data_output": True, "custom": "v"},
        "inputs": [
            {"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]},
            {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [True, False, True]},
            {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["hé"]},
            {"name": "e", "shape": [0, 3], "datatype": "INT8", "data": []},
        ],
        "outputs": [{"name": "output0"}, {"name": "o1", "parameters": {"binary_data": False}}],
    }
    request = decode_infer_request(orjson.dumps(doc), header_length=None)
    assert request == InferRequest(
        id="42",
        inputs=request.inputs,
        parameters={"binary_data_output": True, "custom": "v"},
        outputs=(RequestedOutput("output0", None), RequestedOutput("o1", False)),
        binary_data_output=True,
    )
    assert_same(request.inputs["input0"], np.array([[1, 2], [3, 4]], dtype=np.uint32))
    assert_same(request.inputs["input1"], np.array([True, False, True]))
    assert_same(request.inputs["s"], np.array(["hé".encode()], dtype=object))
    assert_same(request.inputs["e"], np.empty((0, 3), dtype=np.int8))


def test_json_ints_are_fine_for_floats_and_extremes_for_ints() -> None:
    doc = {
        "inputs": [
            {"name": "f", "shape": [2], "datatype": "FP16", "data": [1, 65504]},
            {"name": "u", "shape": [2], "datatype": "UINT64", "data": [0, 2**64 - 1]},
            {"name": "i", "shape": [2], "datatype": "INT64", "data": [-(2**63), 2**63 - 1]},
        ]
    }
    inputs = decode_infer_request(orjson.dumps(doc), header_length=None).inputs
    assert_same(inputs["f"], np.array([1, 65504], dtype=np.float16))
    assert_same(inputs["u"], np.array([0, 2**64 - 1], dtype=np.uint64))
    assert_same(inputs["i"], np.array([-(2**63), 2**63 - 1], dtype=np.int64))


def test_header_length_with_no_binary_inputs() -> None:
    body = orjson.dumps(one_input())
    assert decode_infer_request(body, header_length=len(body)).inputs["x"].shape == (2, 4)


def test_parse_header_length() -> None:
    assert parse_header_length(None) is None
    assert parse_header_length(" 12 ") == 12
    for bad in ("-1", "1.5", "x", "", "١٢", "1" * 21):
        with pytest.raises(DecodeError) as err:
            parse_header_length(bad)
        assert str(err.value) == (
            "Inference-Header-Content-Length must be a non-negative integer; "
            f"got {json.dumps(bad, ensure_ascii=False)}"
        )


# --- refusals: the request object ----------------------------------------------------------

TOP_FIELDS = "id, parameters, inputs, outputs"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([1], "the inference request must be a JSON object; got an array"),
        (
            {"input": []},
            f"the inference request has unknown field 'input'; its fields are {TOP_FIELDS}",
        ),
        ({"inputs": [], "id": 3}, "the inference request id must be a string; got 3"),
        (
            {"inputs": [], "parameters": []},
            "the request's parameters must be a JSON object; got an array",
        ),
        (
            {"inputs": [], "parameters": {"binary_data_output": "yes"}},
            'parameters.binary_data_output must be true or false; got "yes"',
        ),
        ({}, "the inference request has no 'inputs'; it needs an array of tensors"),
        ({"inputs": {"x": 1}}, "'inputs' must be an array; got an object"),
        ({"inputs": ["x"]}, "inputs[0] must be a JSON object; got a string"),
        ({"inputs": [{"shape": [1]}]}, "inputs[0] needs a 'name' that is a non-empty string"),
        ({"inputs": [{"name": ""}]}, "inputs[0] needs a 'name' that is a non-empty string"),
        (
            one_input(dims=[1]),
            "input 'x' has unknown field 'dims'; "
            "its fields are name, shape, datatype, parameters, data",
        ),
        (
            one_input(datatype="BF16"),
            "input 'x' has datatype 'BF16'; allowed datatypes are BOOL, UINT8, UINT16, UINT32, "
            "UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES",
        ),
        (
            one_input(datatype=["FP32"]),
            "input 'x' has datatype [\"FP32\"]; allowed datatypes are BOOL, UINT8, UINT16, UINT32, "
            "UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES",
        ),
        (
            one_input(shape=[2, -1]),
            "input 'x' has shape [2,-1]; a shape is an array of non-negative integers",
        ),
        (
            one_input(shape=[True, 8]),
            "input 'x' has shape [true,8]; a shape is an array of non-negative integers",
        ),
        (
            one_input(shape=[2**63]),
            "input 'x' has shape [9223372036854775808]; a shape is an array of non-negative "
            "integers",
        ),
        (
            one_input(shape="2x4"),
            "input 'x' has shape \"2x4\"; a shape is an array of non-negative integers",
        ),
        (one_input(parameters=[1]), "input 'x' parameters must be a JSON object; got an array"),
        (
            one_input(parameters={"shared_memory_region": "r"}),
            "input 'x' uses parameters.shared_memory_region, which this server does not support; "
            "send 'data' or binary data",
        ),
        (
            {"inputs": [one_input()["inputs"][0], one_input()["inputs"][0]]},
            "input 'x' appears twice in 'inputs'",
        ),
        ({"inputs": [], "outputs": {}}, "'outputs' must be an array; got an object"),
        ({"inputs": [], "outputs": [3]}, "outputs[0] must be a JSON object; got a number"),
        ({"inputs": [], "outputs": [{}]}, "outputs[0] needs a 'name' that is a non-empty string"),
        (
            {"inputs": [], "outputs": [{"name": "y", "datatype": "FP32"}]},
            "requested output 'y' has unknown field 'datatype'; its fields are name, parameters",
        ),
        (
            {"inputs": [], "outputs": [{"name": "y"}, {"name": "y"}]},
            "output 'y' is requested twice in 'outputs'",
        ),
        (
            {"inputs": [], "outputs": [{"name": "y", "parameters": None}]},
            "requested output 'y' parameters must be a JSON object; got null",
        ),
        (
            {"inputs": [], "outputs": [{"name": "y", "parameters": {"classification": 3}}]},
            "requested output 'y' asks for parameters.classification, which this server does not "
            "support",
        ),
        (
            {"inputs": [], "outputs": [{"name": "y", "parameters": {"shared_memory_region": "r"}}]},
            "requested output 'y' asks for parameters.shared_memory_region, which this server does "
            "not support",
        ),
        (
            {"inputs": [], "outputs": [{"name": "y", "parameters": {"binary_data": 1}}]},
            "requested output 'y' parameters.binary_data must be true or false; got 1",
        ),
    ],
)
def test_refuses_bad_request_objects(doc: Any, message: str) -> None:
    assert refused(orjson.dumps(doc)) == message


def test_refuses_invalid_json() -> None:
    assert refused(b'{"inputs": [') == (
        "the inference request is not valid JSON: "
        "unexpected end of data: line 1 column 13 (char 12)"
    )


# --- refusals: JSON tensor data --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"data": list(range(7))},
            "input 'x' has datatype 'FP32' but its data holds 7 values; shape [2, 4] needs 8",
        ),
        (
            {"data": [[0, 1], [2, 3], [4, 5], [6, 7]]},
            "input 'x' has data nested as [4, 2]; shape [2, 4] takes it flat or nested as [2, 4]",
        ),
        (
            {"data": [[0, 1, 2, 3], [4, 5, 6]]},
            "input 'x' data is not a rectangular nested list: its rows differ in length or depth",
        ),
        (
            {"data": ["a"] * 8},
            "input 'x' has datatype 'FP32' but its data holds strings; FP32 data are JSON numbers",
        ),
        (
            {"data": [True] * 8},
            "input 'x' has datatype 'FP32' but its data holds booleans; FP32 data are JSON numbers",
        ),
        (
            {"data": [None] * 8},
            "input 'x' has datatype 'FP32' but its data holds nulls, objects or integers beyond "
            "64 bits; FP32 data are JSON numbers",
        ),
        (
            {"datatype": "FP16", "data": [1e5] * 8},
            "input 'x' has datatype 'FP16' but its data holds numbers beyond ±65504, "
            "the FP16 range",
        ),
        (
            {"datatype": "FP32", "data": [1e39] * 8},
            "input 'x' has datatype 'FP32' but its data holds numbers beyond ±3.40282e+38, the "
            "FP32 range",
        ),
        (
            {"datatype": "INT64", "data": [1.5] * 8},
            "input 'x' has datatype 'INT64' but its data holds numbers that are not integers; "
            "INT64 data are JSON integers within [-9223372036854775808, 9223372036854775807]",
        ),
        (
            {"datatype": "UINT64", "data": [2**64] * 8},
            "input 'x' has datatype 'UINT64' but its data holds numbers that are not integers; "
            "UINT64 data are JSON integers within [0, 18446744073709551615]",
        ),
        (
            {"datatype": "INT8", "data": [1, 2, 3, 4, 5, 6, 7, 128]},
            "input 'x' has datatype 'INT8' but its data holds integers outside [-128, 127]",
        ),
        (
            {"datatype": "UINT8", "data": [-1, 2, 3, 4, 5, 6, 7, 8]},
            "input 'x' has datatype 'UINT8' but its data holds integers outside [0, 255]",
        ),
        (
            {"datatype": "INT32", "data": ["1"] * 8},
            "input 'x' has datatype 'INT32' but its data holds strings; INT32 data are JSON "
            "integers within [-2147483648, 2147483647]",
        ),
        (
            {"datatype": "BOOL", "data": [1, 0] * 4},
            "input 'x' has datatype 'BOOL' but its data holds integers; "
            "BOOL data are true or false",
        ),
        (
            {"datatype": "BYTES", "data": [1] * 8},
            "input 'x' has datatype 'BYTES' but its data holds numbers; "
            "BYTES data are JSON strings",
        ),
        (
            {"datatype": "BYTES", "data": ["a", None] * 4},
            "input 'x' has datatype 'BYTES' but its data holds nulls; BYTES data are JSON strings",
        ),
        (
            {"datatype": "BYTES", "data": [["a", "b", "c", "d"], ["e", "f", "g"]]},
            "input 'x' data is not a rectangular nested list: its rows differ",
        ),
        ({"data": 3}, "input 'x' data must be an array; got a number"),
        ({"data": None}, "input 'x' data must be an array; got null"),
    ],
)
def test_refuses_bad_json_data(fields: dict[str, Any], message: str) -> None:
    assert refused(one_input(**fields)) == message


def test_refuses_input_without_data() -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}
    assert refused(doc) == "input 'x' has no data; send 'data' or parameters.binary_data_size"


def test_refuses_shape_numpy_cannot_hold() -> None:
    doc = one_input(shape=[0, 2**62, 2**62], data=[])
    assert (
        refused(doc) == "input 'x' has shape [0, 4611686018427387904, 4611686018427387904], "
        "which is too large to hold"
    )


# --- refusals: binary framing ---------------------------------------------------------------


def framed(tensors: list[dict[str, Any]], tail: bytes) -> tuple[bytes, int]:
    header = orjson.dumps({"inputs": tensors})
    return header + tail, len(header)


def binary_input(
    size: Any, datatype: str = "FP32", shape: list[int] | None = None
) -> dict[str, Any]:
    return {
        "name": "x",
        "datatype": datatype,
        "shape": [2] if shape is None else shape,
        "parameters": {"binary_data_size": size},
    }


def test_refuses_header_length_outside_body() -> None:
    body, _ = framed([binary_input(8)], bytes(8))
    assert refused(body, len(body) + 1) == (
        f"Inference-Header-Content-Length is {len(body) + 1} but the body is {len(body)} bytes; "
        f"it must be between 0 and {len(body)}"
    )
    assert refused(body, -1) == (
        f"Inference-Header-Content-Length is -1 but the body is {len(body)} bytes; "
        f"it must be between 0 and {len(body)}"
    )


def test_refuses_header_length_cutting_the_json() -> None:
    body, length = framed([binary_input(8)], bytes(8))
    assert refused(body, length - 1).startswith("the inference request is not valid JSON: ")


@pytest.mark.parametrize(
    ("size", "got"), [(-1, "-1"), (1.0, "1.0"), (True, "true"), ("8", '"8"'), (None, "null")]
)
def test_refuses_bad_binary_data_size(size: Any, got: str) -> None:
    body, length = framed([binary_input(size)], bytes(8))
    assert refused(body, length) == (
        f"input 'x' parameters.binary_data_size must be a non-negative integer; got {got}"
    )


def test_refuses_binary_size_without_header() -> None:
    body, _ = framed([binary_input(8)], b"")
    assert refused(body, None) == (
        "input 'x' has parameters.binary_data_size but the request has no "
        "Inference-Header-Content-Length header"
    )


def test_refuses_both_data_and_binary() -> None:
    tensor = {**binary_input(8), "data": [1, 2]}
    body, length = framed([tensor], bytes(8))
    assert refused(body, length) == (
        "input 'x' has both 'data' and parameters.binary_data_size; send one"
    )


def test_refuses_binary_data_too_short() -> None:
    body, length = framed([binary_input(8)], bytes(6))
    assert refused(body, length) == (
        "input 'x' has binary_data_size 8 but only 6 bytes of binary data remain after the "
        "inference header and the inputs before it"
    )


def test_refuses_leftover_binary_data() -> None:
    body, length = framed([binary_input(8)], bytes(10))
    assert refused(body, length) == (
        "the body has 10 bytes of binary data after the inference header but the inputs' "
        "binary_data_size add up to 8"
    )


def test_refuses_binary_without_binary_inputs() -> None:
    header = orjson.dumps(one_input())
    assert refused(header + b"xx", len(header)) == (
        "the body has 2 bytes of binary data after the inference header but the inputs' "
        "binary_data_size add up to 0"
    )


def test_refuses_binary_size_not_matching_shape() -> None:
    body, length = framed([binary_input(7, shape=[2, 1])], bytes(7))
    assert refused(body, length) == (
        "input 'x' has datatype 'FP32' and shape [2, 1], which take 8 bytes, "
        "but its binary_data_size is 7"
    )


def test_refuses_bool_bytes_other_than_0_or_1() -> None:
    body, length = framed([binary_input(3, "BOOL", [3])], bytes([1, 0, 2]))
    assert refused(body, length) == (
        "input 'x' has datatype 'BOOL' but byte 2 of its binary data is 2; BOOL elements are 0 or 1"
    )


@pytest.mark.parametrize(
    ("tail", "shape", "message"),
    [
        (
            b"\x01\x00\x00\x00a",
            [2],
            "input 'x' has datatype 'BYTES' and 2 elements, which take at least 8 bytes, but its "
            "binary_data_size is 5",
        ),
        (
            b"\x01\x00\x00\x00a\x00\x00\x00",
            [2],
            "input 'x': BYTES element 1 starts at byte 5 but only 3 bytes remain; an element "
            "starts with a 4-byte length",
        ),
        (
            b"\x01\x00\x00\x00a\x09\x00\x00\x00bc",
            [2],
            "input 'x': BYTES element 1 is 9 bytes long but only 2 bytes remain",
        ),
        (
            b"\x01\x00\x00\x00a\x01\x00\x00\x00bc",
            [2],
            "input 'x' has 2 BYTES elements, which end at byte 10, but its binary_data_size is 11",
        ),
        (
            b"\xff\xff\xff\xff",
            [1],
            "input 'x': BYTES element 0 is 4294967295 bytes long but only 0 bytes remain",
        ),
    ],
)
def test_refuses_bad_bytes_framing(tail: bytes, shape: list[int], message: str) -> None:
    body, length = framed([binary_input(len(tail), "BYTES", shape)], tail)
    assert refused(body, length) == message


def test_binary_inputs_take_their_slices_in_order() -> None:
    a = np.array([1.5, -2.0], dtype=np.float32)
    s = np.array([b"hi", b""], dtype=object)
    b = np.array([7, 8, 9], dtype=np.int16)
    s_raw = b"\x02\x00\x00\x00hi\x00\x00\x00\x00"
    tensors: list[dict[str, Any]] = [
        {"name": "a", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}},
        {"name": "j", "datatype": "INT8", "shape": [1], "data": [3]},
        {"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 10}},
        {"name": "b", "datatype": "INT16", "shape": [3], "parameters": {"binary_data_size": 6}},
    ]
    body, length = framed(tensors, a.tobytes() + s_raw + b.astype("<i2").tobytes())
    inputs = decode_infer_request(body, header_length=length).inputs
    assert list(inputs) == ["a", "j", "s", "b"]
    assert_same(inputs["a"], a)
    assert_same(inputs["j"], np.array([3], dtype=np.int8))
    assert_same(inputs["s"], s)
    assert_same(inputs["b"], b)


# --- responses ------------------------------------------------------------------------------


def test_response_json_layout() -> None:
    body, headers = encode_infer_response(
        model_name="m",
        model_version=None,
        request_id=None,
        outputs={
            "y": np.array([[1.5, np.nan]], dtype=np.float32),
            "label": np.array(["a", "é"], dtype=object),
            "flag": np.array([True]),
            "u": np.array(["x"]),  # numpy '<U' strings are BYTES too
        },
    )
    assert headers == {"Content-Type": "application/json"}
    assert orjson.loads(body) == {
        "model_name": "m",
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, None]},
            {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["a", "é"]},
            {"name": "flag", "datatype": "BOOL", "shape": [1], "data": [True]},
            {"name": "u", "datatype": "BYTES", "shape": [1], "data": ["x"]},
        ],
    }


def test_response_binary_layout() -> None:
    y = np.array([1.0, 2.0], dtype=np.float64)
    body, headers = encode_infer_response(
        model_name="m",
        model_version="2",
        request_id="r",
        outputs={"y": y, "s": np.array(["ab"], dtype=object)},
        binary_default=True,
    )
    length = int(headers[HEADER_LENGTH])
    assert headers["Content-Type"] == "application/octet-stream"
    assert orjson.loads(body[:length]) == {
        "model_name": "m",
        "model_version": "2",
        "id": "r",
        "outputs": [
            {"name": "y", "datatype": "FP64", "shape": [2], "parameters": {"binary_data_size": 16}},
            {"name": "s", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}},
        ],
    }
    assert body[length:] == y.astype("<f8").tobytes() + b"\x02\x00\x00\x00ab"


def test_response_sends_only_requested_outputs() -> None:
    body, _ = encode_infer_response(
        model_name="m",
        model_version="1",
        request_id=None,
        outputs={"a": np.zeros(1), "b": np.ones(1)},
        requested=[RequestedOutput("b")],
    )
    assert [o["name"] for o in orjson.loads(body)["outputs"]] == ["b"]


def test_response_refuses_unknown_requested_output() -> None:
    with pytest.raises(InputError) as err:
        encode_infer_response(
            model_name="m",
            model_version="1",
            request_id=None,
            outputs={"a": np.zeros(1), "b": np.ones(1)},
            requested=[RequestedOutput("c")],
        )
    assert str(err.value) == "output 'c' is not an output of model m:1; its outputs are a, b"
    assert err.value.input_name == "c"


def test_check_requested_outputs_against_a_package() -> None:
    spec = package()
    check_requested_outputs(
        [RequestedOutput("probabilities")], [t.name for t in spec.outputs], model="fraud:1"
    )
    with pytest.raises(InputError) as err:
        check_requested_outputs(
            [RequestedOutput("p")], [t.name for t in spec.outputs], model="fraud:1"
        )
    assert str(err.value) == (
        "output 'p' is not an output of model fraud:1; its outputs are label, probabilities, risk"
    )


def test_response_refuses_non_utf8_bytes_as_json() -> None:
    with pytest.raises(DecodeError) as err:
        encode_infer_response(
            model_name="m",
            model_version="1",
            request_id=None,
            outputs={"s": np.array([b"\xff"], dtype=object)},
        )
    assert str(err.value) == (
        "output 's' holds bytes that are not valid UTF-8, which JSON cannot carry; ask for it "
        "as binary data (parameters.binary_data: true)"
    )


def test_response_refuses_dtypes_without_a_datatype() -> None:
    with pytest.raises(ExecutionError) as err:
        encode_infer_response(
            model_name="m",
            model_version="1",
            request_id=None,
            outputs={"c": np.zeros(2, dtype=np.complex64)},
        )
    assert str(err.value) == "output 'c' has numpy dtype complex64, which has no protocol datatype"


def test_response_big_endian_and_strided_arrays() -> None:
    arr = np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2]
    for binary in (True, False):
        body, headers = encode_infer_response(
            model_name="m",
            model_version="1",
            request_id=None,
            outputs={"t": arr},
            binary_default=binary,
        )
        np.testing.assert_array_equal(parse(body, headers).as_numpy("t"), arr)


# --- metadata ---------------------------------------------------------------------------------


def package(platform: str = "onnx") -> PackageSpec:
    return PackageSpec.model_validate(
        {
            "name": "fraud",
            "version": "1",
            "platform": platform,
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [-1, 2], "columns": ["amount", "hour"]}
            ],
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
                {"name": "risk", "datatype": "BYTES", "shape": [-1]},
            ],
            "steps": [{"onnx": "model.onnx"}],
        }
    )


def test_model_metadata() -> None:
    assert model_metadata(package()) == {
        "name": "fraud",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "risk", "datatype": "BYTES", "shape": [-1]},
        ],
    }
    ensemble = model_metadata(package("ensemble"), versions=["1", "2"])
    assert ensemble["platform"] == "ensemble"
    assert ensemble["versions"] == ["1", "2"]


def test_server_metadata() -> None:
    assert server_metadata(version="0.1.0") == {
        "name": "scorefn",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
    }


# --- fuzzing: nothing but RequestError escapes ------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
nested_data = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=16)
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["x", "y", ""]) | json_values,
        "datatype": st.sampled_from([*DATATYPES, "BF16"]) | json_values,
        "shape": st.lists(st.integers(-1, 4), max_size=3) | json_values,
    },
    optional={
        "data": nested_data,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-2, 40) | json_values}
        )
        | json_values,
    },
)
requests = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=3) | json_values},
    optional={
        "id": st.text(max_size=3) | json_values,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_output": st.booleans() | json_values}
        ),
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["x", "y"]) | json_values},
                optional={
                    "parameters": st.fixed_dictionaries(
                        {}, optional={"binary_data": st.booleans() | json_values}
                    )
                },
            ),
            max_size=2,
        ),
    },
)


# Mostly well-formed requests, so that fuzzing reaches the tensor data and binary framing.
loose_values = (
    st.integers(-300, 70000)
    | st.floats(-1e6, 1e6)
    | st.booleans()
    | st.text(max_size=3)
    | st.none()
)
plausible_tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["x", "y", "z"]),
        "datatype": st.sampled_from(ALL_DATATYPES),
        "shape": st.lists(st.integers(0, 3), max_size=3),
    },
    optional={
        "data": st.recursive(
            loose_values, lambda inner: st.lists(inner, max_size=3), max_leaves=12
        ),
        "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(0, 24)}),
    },
)
plausible_requests = st.fixed_dictionaries(
    {"inputs": st.lists(plausible_tensors, min_size=1, max_size=3)},
    optional={
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["x", "y"])},
                optional={"parameters": st.fixed_dictionaries({"binary_data": st.booleans()})},
            ),
            max_size=2,
        )
    },
)


def only_request_errors(body: bytes, header_length: int | None) -> None:
    with contextlib.suppress(RequestError):
        decode_infer_request(body, header_length=header_length)


@given(value=st.text(max_size=30))
@settings(max_examples=100, deadline=None)
def test_fuzz_header_length(value: str) -> None:
    with contextlib.suppress(RequestError):
        parse_header_length(value)


@given(body=st.binary(max_size=200), header_length=st.none() | st.integers(-5, 210))
@settings(max_examples=200, deadline=None)
def test_fuzz_random_bytes(body: bytes, header_length: int | None) -> None:
    only_request_errors(body, header_length)


@given(doc=json_values)
@settings(max_examples=200, deadline=None)
def test_fuzz_random_json(doc: Any) -> None:
    only_request_errors(json.dumps(doc).encode(), None)


@given(
    doc=requests, tail=st.binary(max_size=64), framing=st.sampled_from(["none", "exact", "random"])
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_request_shaped_json_and_binary(doc: Any, tail: bytes, framing: str) -> None:
    header = json.dumps(doc).encode()
    if framing == "none":
        only_request_errors(header, None)
    elif framing == "exact":
        only_request_errors(header + tail, len(header))
    else:
        only_request_errors(header + tail, len(header) + len(tail) // 2)


@given(doc=plausible_requests, tail=st.binary(max_size=48))
@settings(max_examples=400, deadline=None)
def test_fuzz_plausible_requests(doc: Any, tail: bytes) -> None:
    header = json.dumps(doc).encode()
    only_request_errors(header + tail, len(header))
    only_request_errors(header, None)
