"""A loaded model package: its steps, signature checks, warm-up, and ``run``.

``Model.load`` does all the expensive work once (sessions, hook ``init``, signature
checks against the graphs, one warm-up run so the first request is not slow).
``Model.run`` takes *validated* inputs and returns the declared outputs; it is what the
dynamic batcher calls. ``Model.predict`` validates first, for callers without a batcher.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.errors import ExecutionError, PackageError, ScorefnError
from shared.pipeline.batcher import Batcher
from shared.pipeline.dtypes import from_numpy, to_numpy
from shared.pipeline.spec import BatchingSpec, PackageSpec
from shared.pipeline.steps import HookStep, OnnxStep, TensorInfo, build_step
from shared.pipeline.validate import Validator, shape_text
from shared.telemetry.state import TELEMETRY
from shared.telemetry.tracing import in_span, span

__all__ = ["Model", "LoadStats", "example_inputs"]

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class LoadStats:
    """How long loading took, for telemetry and the health endpoint."""

    load_seconds: float
    warmup_seconds: float
    providers: tuple[str, ...] = field(default_factory=tuple)


def example_inputs(spec: PackageSpec, rows: int = 1) -> Tensors:
    """Zero-valued inputs of the declared signature (dynamic dims = 1), for warm-up."""
    out: Tensors = {}
    for t in spec.inputs:
        shape = [
            rows if i == 0 and d == -1 else (1 if d == -1 else d) for i, d in enumerate(t.shape)
        ]
        if t.datatype == "BYTES":
            out[t.name] = np.full(shape, "", dtype=object)
        else:
            out[t.name] = np.zeros(shape, dtype=to_numpy(t.datatype))
    return out


def _check_inputs_read(
    spec: PackageSpec, steps: list[OnnxStep | HookStep], where: str
) -> None:
    """Refuse declared inputs that no graph reads and no output passes through (only for
    packages without hook steps: a hook may read any tensor)."""
    read = sorted({src for s in steps if isinstance(s, OnnxStep) for src in s.reads})
    outputs = {t.name for t in spec.outputs}
    unread = [t.name for t in spec.inputs if t.name not in read and t.name not in outputs]
    if unread:
        many = len(unread) > 1
        raise PackageError(
            where,
            "inputs",
            f"declared input{'s' if many else ''} {', '.join(repr(n) for n in unread)} "
            f"{'are' if many else 'is'} read by no step; the steps read: {', '.join(read)}",
        )


class Model:
    """A runnable package. Create with ``Model.load(spec)``."""

    def __init__(self, spec: PackageSpec, steps: list[OnnxStep | HookStep]) -> None:
        self.spec = spec
        self.steps = steps
        self.key = f"{spec.name}:{spec.version}"
        self._output_names = [t.name for t in spec.outputs]
        only = steps[0] if len(steps) == 1 and isinstance(steps[0], OnnxStep) else None
        # Fast path: one graph whose inputs/outputs are the package's own names.
        self._single = (
            only is not None
            and [g for g, _ in only._inputs] == [s for _, s in only._inputs]
            and set(self._output_names) <= set(only._graph_outputs)
            and only._graph_outputs == only._outputs
        )
        self._single_run = only.session.run if only is not None else None
        self._validator = Validator(spec)
        self._validate = self._validator.validate
        self.stats = LoadStats(0.0, 0.0)

    @classmethod
    def load(cls, spec: PackageSpec, *, warmup: bool = True) -> Model:
        """Create sessions and hooks, check the signature, warm up. Raises ``PackageError``."""
        t0 = time.perf_counter()
        where = str(
            Path(spec.root) / ("config.pbtxt" if spec.platform == "ensemble" else "model.yaml")
        )
        steps = [build_step(s, spec) for s in spec.steps]
        known: TensorInfo = {t.name: (t.datatype, len(t.shape)) for t in spec.inputs}
        after_hook = False
        for step in steps:
            step.check(known, where, after_hook=after_hook)
            after_hook = after_hook or isinstance(step, HookStep)
        static = not after_hook
        if static:
            _check_inputs_read(spec, steps, where)
        for t in spec.outputs:
            if t.name not in known:
                if static:
                    have = ", ".join(sorted(known))
                    raise PackageError(
                        where,
                        "outputs",
                        f"output '{t.name}' is produced by no step; tensors: {have}",
                    )
                continue
            dtype, rank = known[t.name]
            if dtype is not None and dtype != t.datatype:
                raise PackageError(
                    where,
                    "outputs",
                    f"output '{t.name}' is declared {t.datatype} but the graph produces {dtype}",
                )
            if rank is not None and rank != len(t.shape):
                raise PackageError(
                    where,
                    "outputs",
                    f"output '{t.name}' is declared with rank {len(t.shape)} "
                    f"{shape_text(t.shape)} but the graph produces rank {rank}",
                )
        model = cls(spec, steps)
        t1 = time.perf_counter()
        if warmup:
            model._warm_up(where)
        t2 = time.perf_counter()
        model.stats = LoadStats(t1 - t0, t2 - t1, tuple(model.providers))
        log.info(
            "loaded %s in %.0f ms (warm-up %.0f ms) on %s",
            model.key,
            (t1 - t0) * 1e3,
            (t2 - t1) * 1e3,
            ",".join(model.providers),
        )
        return model

    @property
    def providers(self) -> list[str]:
        """Execution providers in use, from the first ONNX step (the model)."""
        for s in self.steps:
            if isinstance(s, OnnxStep):
                return s.providers
        return []

    def _warm_up(self, where: str) -> None:
        """Run every step once on zero-valued example inputs; any failure (a hook may
        refuse them with an ``InputError`` too) is a ``PackageError`` naming the step."""
        tensors: Tensors = example_inputs(self.spec)
        for step in self.steps:
            try:
                step.run(tensors)
            except (ScorefnError, KeyError) as exc:
                # A step's ExecutionError names the step; other errors come from hook code.
                what = (
                    str(exc)
                    if isinstance(exc, ExecutionError)
                    else f"step {step.label} raised {type(exc).__name__}: {exc}"
                )
                raise PackageError(
                    where, "steps", f"warm-up run failed on zero-valued example inputs: {what}"
                ) from exc
        for t in self.spec.outputs:
            if t.name not in tensors:
                have = ", ".join(sorted(tensors))
                raise PackageError(
                    where,
                    "outputs",
                    f"output '{t.name}' is produced by no step in the warm-up run; "
                    f"tensors: {have}",
                )
            arr = tensors[t.name]
            got = from_numpy(arr.dtype)
            if got != t.datatype:
                raise PackageError(
                    where,
                    "outputs",
                    f"output '{t.name}' is declared {t.datatype} but warm-up produced "
                    f"{got or arr.dtype}",
                )
            if arr.ndim != len(t.shape):
                raise PackageError(
                    where,
                    "outputs",
                    f"output '{t.name}' is declared {shape_text(t.shape)} but warm-up produced "
                    f"shape {shape_text(arr.shape)}",
                )

    def run(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        """Run every step on validated inputs; return the declared outputs."""
        if TELEMETRY.tracing and in_span():  # a batch chunk's run: one span per step
            return self._run_traced(inputs)
        if self._single_run is not None and self._single:
            # One graph with the package's own names: session.run on the caller's dict.
            names = self._output_names
            try:
                feed = inputs if isinstance(inputs, dict) else dict(inputs)
                values = self._single_run(names, feed)
            except Exception as exc:
                raise ExecutionError(f"model {self.key} failed: {exc}") from exc
            if len(names) == 1:
                return {names[0]: values[0]}
            return dict(zip(names, values, strict=True))
        tensors: Tensors = dict(inputs)
        for step in self.steps:
            step.run(tensors)
        try:
            return {name: tensors[name] for name in self._output_names}
        except KeyError as exc:
            raise ExecutionError(f"model {self.key} produced no output {exc}") from exc

    def _run_traced(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        """``run`` with a span per step: ``scorefn.preprocess``, ``scorefn.infer`` (the
        package's predict steps) or ``scorefn.postprocess``."""
        tensors: Tensors = dict(inputs)
        rows = next(iter(tensors.values())).shape[0] if tensors else 0
        for step, step_spec in zip(self.steps, self.spec.steps, strict=True):
            stage = "infer" if step_spec.stage == "predict" else step_spec.stage
            attributes = {
                "model": self.spec.name,
                "version": self.spec.version,
                "scorefn.step": step.label,
                "rows": rows,
            }
            with span(f"scorefn.{stage}", attributes):
                step.run(tensors)
        try:
            return {name: tensors[name] for name in self._output_names}
        except KeyError as exc:
            raise ExecutionError(f"model {self.key} produced no output {exc}") from exc

    def validate(self, inputs: Mapping[str, np.ndarray], *, defer_finite: bool = False) -> Tensors:
        """Validate (and safely cast) inputs against the signature.

        ``defer_finite`` leaves out the NaN/inf check, for inputs queued into a batcher made
        by ``batcher()``, which checks each whole batch on its worker instead.
        """
        return self._validate(inputs, defer_finite)

    def check_finite(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Raise ``NonFiniteError`` if validated ``inputs`` (one request's or a batch's)
        hold NaN/inf where the package refuses them."""
        self._validator.check_finite(inputs)

    def batcher(
        self,
        batching: BatchingSpec | None = None,
        *,
        executor: concurrent.futures.Executor | None = None,
    ) -> Batcher:
        """A dynamic batcher running this model; queue inputs validated with
        ``validate(inputs, defer_finite=True)``: it checks NaN/inf once per batch on its
        worker (and request by request only to single out a bad one)."""
        return Batcher(
            self.run,
            self.spec.batching if batching is None else batching,
            name=self.key,
            executor=executor,
            screen=self.check_finite if self._validator.checks_finite else None,
        )

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        """Validate then run: one call for callers without a batcher."""
        return self.run(self._validate(inputs))
