"""Open Inference Protocol v2 REST inference: request decoding and response encoding.

Transport-free: the HTTP layer hands over the body and the ``Inference-Header-Content-Length``
header, and sends back the body and headers returned here.

Two framings, as in Triton and KServe:

* pure JSON: the body is the inference request object; tensor ``data`` is a flat or
  nested (row-major) JSON array;
* the binary tensor data extension: the body is the JSON object (its length in the
  ``Inference-Header-Content-Length`` header) followed by the raw data of every input
  that has ``parameters.binary_data_size``, in the order of ``inputs``. Outputs come
  back binary when asked for with the output's ``parameters.binary_data`` or the
  request's ``parameters.binary_data_output``.

Every refusal is a ``DecodeError`` that names the field, what came and what is allowed.
Checking tensors against a model's signature is ``shared.pipeline.validate``'s job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from shared.errors import DecodeError, ExecutionError, InputError
from shared.pipeline.dtypes import DATATYPES, from_numpy
from shared.pipeline.validate import shape_text
from shared.protocol.json_body import (
    check_fields,
    dump_json,
    expect_object,
    json_type,
    load_json,
    show,
)
from shared.protocol.tensor_binary import array_from_bytes, array_to_bytes, reshape_tensor
from shared.protocol.tensor_json import array_from_json, array_to_json

__all__ = [
    "HEADER_LENGTH",
    "JSON_CONTENT_TYPE",
    "BINARY_CONTENT_TYPE",
    "RequestedOutput",
    "InferRequest",
    "parse_header_length",
    "decode_infer_request",
    "check_requested_outputs",
    "encode_infer_response",
]

#: The header giving the length of the JSON part of a body with binary tensor data.
HEADER_LENGTH: Final = "Inference-Header-Content-Length"
#: Content-Type of a pure-JSON response.
JSON_CONTENT_TYPE: Final = "application/json"
#: Content-Type of a response with binary tensor data after its JSON header.
BINARY_CONTENT_TYPE: Final = "application/octet-stream"

# Dimensions are unsigned 64-bit in the protocol; numpy holds at most 2**63 - 1.
_MAX_DIM: Final = 2**63 - 1
_REQUEST_FIELDS: Final = ("id", "parameters", "inputs", "outputs")
_INPUT_FIELDS: Final = ("name", "shape", "datatype", "parameters", "data")
_OUTPUT_FIELDS: Final = ("name", "parameters")
_SHARED_MEMORY: Final = "shared_memory_region"


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """One entry of the request's ``outputs``."""

    name: str
    #: The output's ``parameters.binary_data``; None when not given, so that the
    #: request's ``binary_data_output`` decides.
    binary_data: bool | None = None


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A decoded inference request.

    ``inputs`` are shaped arrays of the numpy dtype of each input's datatype (BYTES:
    object arrays of ``bytes``); those read from binary data are read-only views over the
    body. ``outputs`` is empty when the request named none (then every output is sent).
    """

    id: str | None
    inputs: dict[str, np.ndarray]
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[RequestedOutput, ...] = ()
    #: The request's ``parameters.binary_data_output``: the default for every output.
    binary_data_output: bool = False


def parse_header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header value as an int (None if absent)."""
    if value is None:
        return None
    text = value.strip()
    # 20 digits hold any 64-bit length; more would also trip int()'s digit limit.
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise DecodeError(f"{HEADER_LENGTH} must be a non-negative integer; got {show(value)}")
    return int(text)


def decode_infer_request(body: bytes, *, header_length: int | None) -> InferRequest:
    """Decode an inference request body.

    ``header_length`` is the ``Inference-Header-Content-Length`` value: None means the
    whole body is JSON; otherwise the JSON is the first ``header_length`` bytes and the
    rest is binary tensor data, which the inputs' ``binary_data_size`` must add up to.
    Raises ``DecodeError``.
    """
    if header_length is None:
        header: bytes | memoryview = body
        binary = memoryview(b"")
    else:
        if not 0 <= header_length <= len(body):
            raise DecodeError(
                f"{HEADER_LENGTH} is {header_length} but the body is {len(body)} bytes; "
                f"it must be between 0 and {len(body)}"
            )
        view = memoryview(body)
        header, binary = view[:header_length], view[header_length:]
    doc = expect_object(
        load_json(header, what="the inference request"), where="the inference request"
    )
    check_fields(doc, _REQUEST_FIELDS, where="the inference request")

    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise DecodeError(f"the inference request id must be a string; got {show(request_id)}")
    parameters = expect_object(doc.get("parameters", {}), where="the request's parameters")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise DecodeError(
            f"parameters.binary_data_output must be true or false; got {show(binary_output)}"
        )

    if "inputs" not in doc:
        raise DecodeError("the inference request has no 'inputs'; it needs an array of tensors")
    raw_inputs = doc["inputs"]
    if not isinstance(raw_inputs, list):
        raise DecodeError(f"'inputs' must be an array; got {json_type(raw_inputs)}")

    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, raw in enumerate(raw_inputs):
        name, arr, size = _decode_input(i, raw, binary[offset:], header_length is not None)
        if name in inputs:
            raise DecodeError(f"input '{name}' appears twice in 'inputs'")
        inputs[name] = arr
        offset += size
    if offset != len(binary):
        raise DecodeError(
            f"the body has {len(binary)} bytes of binary data after the inference header "
            f"but the inputs' binary_data_size add up to {offset}"
        )
    return InferRequest(
        id=request_id,
        inputs=inputs,
        parameters=parameters,
        outputs=_decode_outputs(doc.get("outputs", [])),
        binary_data_output=binary_output,
    )


def _decode_input(
    index: int, raw: Any, binary: memoryview, framed: bool
) -> tuple[str, np.ndarray, int]:
    """One input: its name, array, and how many bytes of ``binary`` it used."""
    where = f"inputs[{index}]"
    obj = expect_object(raw, where=where)
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise DecodeError(f"{where} needs a 'name' that is a non-empty string")
    tensor = f"input '{name}'"
    check_fields(obj, _INPUT_FIELDS, where=tensor)

    datatype = obj.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        got = f"'{datatype}'" if isinstance(datatype, str) else show(datatype)
        raise DecodeError(
            f"{tensor} has datatype {got}; allowed datatypes are {', '.join(DATATYPES)}"
        )
    shape = obj.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d <= _MAX_DIM for d in shape):
        raise DecodeError(
            f"{tensor} has shape {show(shape)}; a shape is an array of non-negative integers"
        )
    params = expect_object(obj.get("parameters", {}), where=f"{tensor} parameters")
    if _SHARED_MEMORY in params:
        raise DecodeError(
            f"{tensor} uses parameters.{_SHARED_MEMORY}, which this server does not "
            "support; send 'data' or binary data"
        )

    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if type(size) is not int or size < 0:
            raise DecodeError(
                f"{tensor} parameters.binary_data_size must be a non-negative integer; "
                f"got {show(size)}"
            )
        if "data" in obj:
            raise DecodeError(f"{tensor} has both 'data' and parameters.binary_data_size; send one")
        if not framed:
            raise DecodeError(
                f"{tensor} has parameters.binary_data_size but the request has no "
                f"{HEADER_LENGTH} header"
            )
        if size > len(binary):
            raise DecodeError(
                f"{tensor} has binary_data_size {size} but only {len(binary)} bytes of "
                "binary data remain after the inference header and the inputs before it"
            )
        return name, array_from_bytes(binary[:size], datatype, shape, tensor=tensor), size

    if "data" not in obj:
        raise DecodeError(f"{tensor} has no data; send 'data' or parameters.binary_data_size")
    data = obj["data"]
    if not isinstance(data, list):
        raise DecodeError(f"{tensor} data must be an array; got {json_type(data)}")
    arr = array_from_json(data, datatype, tensor=tensor)
    count = math.prod(shape)
    if arr.size != count:
        raise DecodeError(
            f"{tensor} has datatype '{datatype}' but its data holds {arr.size} values; "
            f"shape {shape_text(shape)} needs {count}"
        )
    if arr.ndim != 1 and list(arr.shape) != shape:
        raise DecodeError(
            f"{tensor} has data nested as {shape_text(arr.shape)}; shape "
            f"{shape_text(shape)} takes it flat or nested as {shape_text(shape)}"
        )
    return name, reshape_tensor(arr, shape, tensor=tensor), 0


def _decode_outputs(raw: Any) -> tuple[RequestedOutput, ...]:
    if not isinstance(raw, list):
        raise DecodeError(f"'outputs' must be an array; got {json_type(raw)}")
    out: list[RequestedOutput] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        obj = expect_object(item, where=f"outputs[{i}]")
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise DecodeError(f"outputs[{i}] needs a 'name' that is a non-empty string")
        check_fields(obj, _OUTPUT_FIELDS, where=f"requested output '{name}'")
        if name in seen:
            raise DecodeError(f"output '{name}' is requested twice in 'outputs'")
        seen.add(name)
        params = expect_object(
            obj.get("parameters", {}), where=f"requested output '{name}' parameters"
        )
        for unsupported in ("classification", _SHARED_MEMORY):
            if unsupported in params:
                raise DecodeError(
                    f"requested output '{name}' asks for parameters.{unsupported}, "
                    "which this server does not support"
                )
        binary = params.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise DecodeError(
                f"requested output '{name}' parameters.binary_data must be true or false; "
                f"got {show(binary)}"
            )
        out.append(RequestedOutput(name=name, binary_data=binary))
    return tuple(out)


def check_requested_outputs(
    requested: Sequence[RequestedOutput], available: Iterable[str], *, model: str
) -> None:
    """``InputError`` if the request names an output that ``model`` (e.g. "fraud:1")
    does not produce; call before running the model."""
    names = list(available)
    for ro in requested:
        if ro.name not in names:
            raise InputError(
                ro.name,
                f"output '{ro.name}' is not an output of model {model}; "
                f"its outputs are {', '.join(names)}",
            )


def encode_infer_response(
    *,
    model_name: str,
    model_version: str | None,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    requested: Sequence[RequestedOutput] = (),
    binary_default: bool = False,
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (``Content-Type``, and
    ``Inference-Header-Content-Length`` when any output is binary).

    Sends the ``requested`` outputs in that order, or every one of ``outputs`` when none
    was requested. An output is binary when its ``binary_data`` says so, else when
    ``binary_default`` (the request's ``binary_data_output``) does. JSON data is flat
    (row-major). Raises ``InputError`` for a requested output that is not in ``outputs``,
    ``DecodeError`` for a JSON BYTES output that is not UTF-8, and ``ExecutionError`` for
    an array whose dtype has no protocol datatype.
    """
    model = f"{model_name}:{model_version}" if model_version else model_name
    check_requested_outputs(requested, outputs, model=model)
    chosen = requested or [RequestedOutput(name) for name in outputs]

    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for ro in chosen:
        arr = np.asarray(outputs[ro.name])
        tensor = f"output '{ro.name}'"
        datatype = from_numpy(arr.dtype if arr.dtype.isnative else arr.dtype.newbyteorder("="))
        if datatype is None:
            raise ExecutionError(
                f"{tensor} has numpy dtype {arr.dtype}, which has no protocol datatype"
            )
        entry: dict[str, Any] = {
            "name": ro.name,
            "datatype": datatype,
            "shape": list(arr.shape),
        }
        binary = ro.binary_data if ro.binary_data is not None else binary_default
        if binary:
            blob = array_to_bytes(arr, datatype, tensor=tensor)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array_to_json(arr, tensor=tensor, flat=True)
        entries.append(entry)

    doc: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = entries
    header = dump_json(doc)
    if not blobs:
        return header, {"Content-Type": JSON_CONTENT_TYPE}
    return b"".join([header, *blobs]), {
        "Content-Type": BINARY_CONTENT_TYPE,
        HEADER_LENGTH: str(len(header)),
    }
