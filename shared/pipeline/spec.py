"""The model package format: one pydantic model for ``models/<name>/<version>/model.yaml``.

A package is a chain of steps: pre-process steps, the model, post-process steps. Each
step is an ONNX graph or a Python hook module, and reads and writes named tensors in one
shared dictionary. A Triton ``ensemble`` is the same thing with explicit input/output maps
(see ``shared.pipeline.triton``), so both kinds of package load into one ``PackageSpec``.

Example::

    name: fraud
    version: "1"
    inputs:
      - {name: x, datatype: FP32, shape: [-1, 8], columns: [amount, hour, ...]}
    outputs:
      - {name: probabilities, datatype: FP32, shape: [-1, 2]}
      - {name: risk, datatype: BYTES, shape: [-1]}
    steps:
      - {onnx: model.onnx}
      - {python: hooks.py, stage: postprocess, params: {thresholds: [0.5, 0.8]}}
    batching: {max_batch_size: 64, max_delay_ms: 2, max_queue_rows: 4096}
    providers: [CUDAExecutionProvider, CPUExecutionProvider]
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.pipeline.dtypes import DATATYPES

__all__ = [
    "TensorSpec",
    "StepSpec",
    "BatchingSpec",
    "SessionSpec",
    "InputPolicy",
    "PackageSpec",
    "KNOWN_PROVIDERS",
]

KNOWN_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One named tensor of the signature. ``-1`` marks a dynamic dimension; the first
    dimension is the batch (rows) dimension: an input has at least one, and it must be -1
    for the inputs of batched models. (An output may be a scalar, ``shape: []``: every
    request of a batch gets it whole.)"""

    name: str = Field(min_length=1)
    datatype: str = Field(description="Open Inference Protocol datatype, e.g. FP32, INT64, BYTES")
    shape: tuple[int, ...] = Field(description="dimensions; -1 for dynamic")
    columns: tuple[str, ...] | None = Field(
        default=None,
        description="names of the last dimension's features, for column-oriented payloads",
    )

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, v: str) -> str:
        if v not in DATATYPES:
            allowed = ", ".join(DATATYPES)
            raise ValueError(f"unknown datatype {v!r}; expected one of {allowed}")
        return v

    @field_validator("shape")
    @classmethod
    def _valid_dims(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        for d in v:
            if d < -1 or d == 0:
                raise ValueError(f"dimension {d} is not allowed; use a positive size or -1")
        return v

    @model_validator(mode="after")
    def _columns_match(self) -> TensorSpec:
        cols = self.columns
        if cols is not None and (len(self.shape) != 2 or self.shape[1] != len(cols)):
            raise ValueError(
                f"columns lists {len(cols)} names but shape is "
                f"{list(self.shape)}; expected shape [-1, {len(cols)}]"
            )
        return self


class StepSpec(_Strict):
    """One step: an ONNX graph file or a Python hook module, relative to the package."""

    onnx: str | None = Field(default=None, description="ONNX file of this step")
    python: str | None = Field(default=None, description="Python hook module file")
    stage: Literal["preprocess", "predict", "postprocess"] = "predict"
    name: str | None = Field(default=None, description="step name (defaults to the file)")
    params: dict[str, Any] = Field(default_factory=dict, description="passed to hook init()")
    input_map: dict[str, str] | None = Field(
        default=None, description="graph input name -> pipeline tensor name (ensembles)"
    )
    output_map: dict[str, str] | None = Field(
        default=None, description="graph output name -> pipeline tensor name (ensembles)"
    )
    model: str | None = Field(
        default=None, description="for Triton ensembles: the composing model's name"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> StepSpec:
        if (self.onnx is None) == (self.python is None):
            raise ValueError("a step names exactly one of 'onnx' or 'python'")
        if self.python is not None and self.stage == "predict":
            raise ValueError("a python step's stage must be 'preprocess' or 'postprocess'")
        return self

    @property
    def label(self) -> str:
        return self.name or self.onnx or self.python or "step"


class BatchingSpec(_Strict):
    """Dynamic batching: gather concurrent requests up to ``max_batch_size`` rows or
    ``max_delay_ms``, whichever comes first; refuse new work past ``max_queue_rows``."""

    enabled: bool = True
    max_batch_size: int = Field(default=64, ge=1, description="rows per session.run")
    max_delay_ms: float = Field(default=2.0, ge=0, description="longest wait to fill a batch")
    max_queue_rows: int = Field(default=4096, ge=1, description="rows queued before 429")
    run_on_loop: bool = Field(
        default=False,
        description=(
            "run batches on the event loop instead of a worker thread: for models whose "
            "run takes tens of microseconds the thread hand-off costs more than the run"
        ),
    )


class SessionSpec(_Strict):
    """onnxruntime session options."""

    intra_op_threads: int = Field(default=0, ge=0, description="0 = onnxruntime default")
    inter_op_threads: int = Field(default=0, ge=0)
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    optimized_model_cache: bool = Field(
        default=False,
        description="write the optimised graph next to the model and reuse it while it is "
        "not older than the model",
    )


class InputPolicy(_Strict):
    """What the validator lets through."""

    casts: tuple[tuple[str, str], ...] = Field(
        default=(("INT32", "INT64"), ("FP64", "FP32")),
        description="(from, to) datatype casts applied silently; everything else is refused",
    )
    allow_non_finite: bool = Field(default=False, description="accept NaN / inf in floats")


class PackageSpec(_Strict):
    """A validated model package. ``root`` is the package folder (set by the loader)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    platform: Literal["onnx", "ensemble"] = "onnx"
    inputs: tuple[TensorSpec, ...] = Field(min_length=1)
    outputs: tuple[TensorSpec, ...] = Field(min_length=1)
    steps: tuple[StepSpec, ...] = Field(min_length=1)
    batching: BatchingSpec = BatchingSpec()
    session: SessionSpec = SessionSpec()
    input_policy: InputPolicy = InputPolicy()
    providers: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    labels: dict[str, Any] = Field(default_factory=dict, description="free-form metadata")
    root: str = Field(default="", description="package folder; filled in by the loader")

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            if p not in KNOWN_PROVIDERS:
                known = ", ".join(KNOWN_PROVIDERS)
                raise ValueError(f"unknown execution provider {p!r}; expected one of {known}")
        if not v:
            raise ValueError("at least one execution provider is required")
        return v

    @field_validator("inputs")
    @classmethod
    def _inputs_have_rows(cls, v: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
        for t in v:
            if not t.shape:
                raise ValueError(
                    f"input '{t.name}' has shape []; an input needs at least one dimension, "
                    "the rows: use [-1] for one value per row"
                )
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> PackageSpec:
        for kind, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            seen: set[str] = set()
            for t in specs:
                if t.name in seen:
                    raise ValueError(f"{kind} names {t.name!r} twice")
                seen.add(t.name)
        return self

    @model_validator(mode="after")
    def _batched_inputs_have_rows(self) -> PackageSpec:
        if self.batching.enabled:
            for t in self.inputs:
                if t.shape[0] != -1:
                    rows = [-1, *t.shape[1:]]
                    raise ValueError(
                        f"input '{t.name}' has shape {list(t.shape)}; with batching on (the "
                        "default) its first dimension is the rows and must be -1, as requests "
                        f"are concatenated along it: use {rows}, or batching: {{enabled: false}}"
                    )
        return self

    def input(self, name: str) -> TensorSpec | None:
        """The input spec called ``name``, or None."""
        for t in self.inputs:
            if t.name == name:
                return t
        return None
