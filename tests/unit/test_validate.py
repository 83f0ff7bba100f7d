"""Bad inputs are refused with a typed error naming the input, what came and what is allowed."""

from __future__ import annotations

import numpy as np
import pytest

from shared.errors import (
    DtypeError,
    EmptyBatchError,
    InputError,
    MissingInputError,
    NonFiniteError,
    ShapeError,
    UnexpectedInputError,
)
from shared.pipeline.spec import PackageSpec
from shared.pipeline.validate import validate_inputs

SPEC = PackageSpec.model_validate(
    {
        "name": "m",
        "version": "1",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "ids", "datatype": "INT64", "shape": [-1]},
        ],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
        "steps": [{"onnx": "model.onnx"}],
    }
)


def _ok() -> dict[str, np.ndarray]:
    return {"x": np.zeros((2, 3), np.float32), "ids": np.arange(2, dtype=np.int64)}


def _refused(inputs: dict[str, np.ndarray], spec: PackageSpec = SPEC) -> InputError:
    with pytest.raises(InputError) as err:
        validate_inputs(inputs, spec)
    return err.value


def test_valid_inputs_pass_unchanged() -> None:
    inputs = _ok()
    out = validate_inputs(inputs, SPEC)
    assert out["x"] is inputs["x"] and out["ids"] is inputs["ids"]


def test_missing_input() -> None:
    err = _refused({"x": np.zeros((2, 3), np.float32)})
    assert isinstance(err, MissingInputError)
    assert str(err) == "input 'ids' is missing; model m:1 needs x, ids"
    assert err.input_name == "ids"


def test_unexpected_input() -> None:
    err = _refused({**_ok(), "extra": np.zeros(2)})
    assert isinstance(err, UnexpectedInputError)
    assert str(err) == "input 'extra' is not an input of model m:1; its inputs are x, ids"


def test_wrong_dtype_names_allowed_casts() -> None:
    err = _refused({**_ok(), "x": np.zeros((2, 3), np.int64)})
    assert isinstance(err, DtypeError)
    assert str(err) == "input 'x' has datatype INT64; model m:1 expects FP32 (or FP64, cast safely)"


def test_string_for_number() -> None:
    err = _refused({**_ok(), "ids": np.array(["a", "b"])})
    assert isinstance(err, DtypeError)
    assert (
        str(err)
        == "input 'ids' has datatype BYTES; model m:1 expects INT64 (or INT32, cast safely)"
    )


def test_safe_casts_applied() -> None:
    out = validate_inputs(
        {"x": np.zeros((2, 3), np.float64), "ids": np.arange(2, dtype=np.int32)}, SPEC
    )
    assert out["x"].dtype == np.float32 and out["ids"].dtype == np.int64


def test_casts_follow_package_policy() -> None:
    strict = SPEC.model_copy(
        update={"input_policy": SPEC.input_policy.model_copy(update={"casts": ()})}
    )
    err = _refused({**_ok(), "ids": np.arange(2, dtype=np.int32)}, strict)
    assert str(err) == "input 'ids' has datatype INT32; model m:1 expects INT64"


def test_wrong_rank() -> None:
    err = _refused({**_ok(), "x": np.zeros((2, 3, 1), np.float32)})
    assert isinstance(err, ShapeError)
    assert str(err) == "input 'x' has shape [2, 3, 1]; model m:1 expects [-1, 3] (-1 = any size)"


def test_wrong_fixed_dim() -> None:
    err = _refused({**_ok(), "x": np.zeros((2, 4), np.float32)})
    assert str(err) == "input 'x' has shape [2, 4]; model m:1 expects [-1, 3] (-1 = any size)"


def test_rows_disagree() -> None:
    err = _refused({**_ok(), "ids": np.arange(3, dtype=np.int64)})
    assert isinstance(err, ShapeError)
    assert str(err) == "inputs disagree on rows: 'x' has 2, 'ids' has 3"


def test_empty_batch() -> None:
    err = _refused({"x": np.zeros((0, 3), np.float32), "ids": np.zeros(0, np.int64)})
    assert isinstance(err, EmptyBatchError)
    assert str(err) == "input 'x' has 0 rows; model m:1 needs at least 1"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_refused(bad: float) -> None:
    x = np.zeros((3, 3), np.float32)
    x[2, 1] = bad
    err = _refused({**_ok(), "x": x, "ids": np.arange(3, dtype=np.int64)})
    assert isinstance(err, NonFiniteError)
    assert str(err) == (
        "input 'x' holds NaN or infinity (first at row 2); model m:1 accepts finite values only"
    )


def test_non_finite_allowed_by_policy() -> None:
    lax = SPEC.model_copy(
        update={"input_policy": SPEC.input_policy.model_copy(update={"allow_non_finite": True})}
    )
    x = np.full((2, 3), np.nan, np.float32)
    assert np.isnan(validate_inputs({**_ok(), "x": x}, lax)["x"]).all()


def test_huge_finite_values_are_not_mistaken_for_infinity() -> None:
    x = np.full((2, 3), 3e38, np.float32)  # the float32 sum overflows; the values are finite
    assert validate_inputs({**_ok(), "x": x}, SPEC)["x"] is x


def test_non_finite_fp64_found_after_cast() -> None:
    x = np.zeros((2, 3), np.float64)
    x[1, 0] = np.inf  # cast to FP32 stays inf
    err = _refused({**_ok(), "x": x})
    assert str(err) == (
        "input 'x' holds NaN or infinity (first at row 1); model m:1 accepts finite values only"
    )
