"""Bad inputs are refused with a typed error naming the input, what came and what is allowed."""

from __future__ import annotations

from types import MappingProxyType

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
from shared.pipeline.validate import Validator, validate_inputs

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


def test_ragged_nested_list() -> None:
    err = _refused({**_ok(), "x": [[1.0, 2.0, 3.0], [1.0]]})  # type: ignore[dict-item]
    assert isinstance(err, ShapeError) and err.input_name == "x"
    assert str(err) == (
        "input 'x' is not a rectangular array (nested lists of different lengths); "
        "model m:1 expects shape [-1, 3] (-1 = any size)"
    )
    with pytest.raises(ShapeError) as again:
        Validator(SPEC)({**_ok(), "x": [[1.0, 2.0, 3.0], [1.0]]})  # type: ignore[dict-item]
    assert str(again.value) == str(err)


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


# -- Validator: the per-request path (fast accept, else validate_inputs) -------------------

_BAD: list[tuple[str, dict[str, object]]] = [
    ("missing", {"x": np.zeros((2, 3), np.float32)}),
    ("unexpected", {**_ok(), "extra": np.zeros(2)}),
    ("dtype", {**_ok(), "x": np.zeros((2, 3), np.int64)}),
    ("strings", {**_ok(), "ids": np.array(["a", "b"])}),
    ("rank", {**_ok(), "x": np.zeros((2, 3, 1), np.float32)}),
    ("fixed dim", {**_ok(), "x": np.zeros((2, 4), np.float32)}),
    ("rows", {**_ok(), "ids": np.arange(3, dtype=np.int64)}),
    ("empty", {"x": np.zeros((0, 3), np.float32), "ids": np.zeros(0, np.int64)}),
    ("scalar", {"x": np.float32(1.0), "ids": np.arange(2, dtype=np.int64)}),
    ("byte-swapped", {**_ok(), "x": np.zeros((2, 3), ">f4")}),
    ("nan", {**_ok(), "x": np.array([[0, 0, 0], [0, np.nan, 0]], np.float32)}),
    ("inf fp64", {**_ok(), "x": np.array([[0, 0, 0], [np.inf, 0, 0]], np.float64)}),
]


@pytest.mark.parametrize(("case", "inputs"), _BAD, ids=[c for c, _ in _BAD])
def test_validator_refuses_exactly_as_validate_inputs(case: str, inputs: dict[str, object]) -> None:
    expected = _refused(inputs)  # type: ignore[arg-type]
    with pytest.raises(InputError) as err:
        Validator(SPEC)(inputs)  # type: ignore[arg-type]
    assert type(err.value) is type(expected), case
    assert str(err.value) == str(expected)
    assert err.value.input_name == expected.input_name


def test_validator_passes_fitting_inputs_unchanged_and_casts_others() -> None:
    inputs = _ok()
    out = Validator(SPEC)(inputs)
    assert out == inputs and out is not inputs
    assert out["x"] is inputs["x"] and out["ids"] is inputs["ids"]
    cast = Validator(SPEC)({"x": np.zeros((2, 3), np.float64), "ids": [0, 1]})  # type: ignore[dict-item]
    assert cast["x"].dtype == np.float32 and cast["ids"].dtype == np.int64
    assert list(cast) == ["x", "ids"]


def test_validator_handles_dynamic_trailing_dims_and_mappings() -> None:
    spec = SPEC.model_copy(
        update={
            "inputs": (
                SPEC.inputs[0].model_copy(update={"shape": (-1, -1)}),
                SPEC.inputs[1],
            )
        }
    )
    wide: dict[str, np.ndarray] = {"x": np.zeros((2, 7), np.float32), "ids": np.arange(2, dtype=np.int64)}
    assert Validator(spec)(wide)["x"] is wide["x"]
    assert Validator(SPEC)(MappingProxyType(_ok()))["x"].shape == (2, 3)


def test_defer_finite_leaves_nan_to_check_finite() -> None:
    v = Validator(SPEC)
    x = np.zeros((4, 3), np.float32)
    x[3, 2] = np.nan
    inputs: dict[str, np.ndarray] = {"x": x, "ids": np.arange(4, dtype=np.int64)}
    assert v(inputs, defer_finite=True)["x"] is x
    with pytest.raises(NonFiniteError) as err:
        v.check_finite(inputs)
    assert str(err.value) == (
        "input 'x' holds NaN or infinity (first at row 3); model m:1 accepts finite values only"
    )
    # The general path defers too (a cast input), and the check then finds it.
    cast = v({"x": x.astype(np.float64), "ids": inputs["ids"]}, defer_finite=True)
    with pytest.raises(NonFiniteError):
        v.check_finite(cast)
    # Other errors are never deferred.
    with pytest.raises(ShapeError):
        v({"x": x[:, :2], "ids": inputs["ids"]}, defer_finite=True)


def test_check_finite_is_a_no_op_when_the_policy_allows_non_finite() -> None:
    lax = SPEC.model_copy(
        update={"input_policy": SPEC.input_policy.model_copy(update={"allow_non_finite": True})}
    )
    v = Validator(lax)
    assert not v.checks_finite and Validator(SPEC).checks_finite
    inputs: dict[str, np.ndarray] = {
        "x": np.full((2, 3), np.inf, np.float32),
        "ids": np.arange(2, dtype=np.int64),
    }
    v.check_finite(inputs)
    assert v(inputs)["x"] is inputs["x"]
