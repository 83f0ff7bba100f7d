"""Pipeline steps: an ONNX graph run by onnxruntime, or a Python hook module.

Both read and write one dictionary of named tensors. A hook module follows the classic
generic-inference lifecycle (SageMaker, KServe, Azure ML scoring scripts):

    def init(params: dict) -> None              # optional, once at load
    def preprocess(tensors: dict) -> dict       # for stage: preprocess
    def postprocess(tensors: dict) -> dict      # for stage: postprocess

A hook returns the tensors it adds or replaces. A hook may raise ``shared.errors.InputError``
to refuse a request; any other exception is a server-side ``ExecutionError``. What a hook
returns is only known by running it, so after a hook step the load-time checks let a
graph input name a tensor no earlier step is known to provide (a pre-process hook turning
request inputs into graph inputs), and the warm-up run checks it is really there.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from shared.errors import ExecutionError, PackageError, ScorefnError
from shared.pipeline.dtypes import from_ort_type
from shared.pipeline.session import create_session
from shared.pipeline.spec import PackageSpec, StepSpec

__all__ = ["OnnxStep", "HookStep", "build_step", "TensorInfo"]

Tensors = dict[str, np.ndarray]

#: (datatype or None if unknown, rank or None if unknown), keyed by tensor name
TensorInfo = dict[str, tuple[str | None, int | None]]


class OnnxStep:
    """An ONNX graph; graph tensor names are mapped to pipeline names by input/output maps."""

    def __init__(self, spec: StepSpec, package: PackageSpec) -> None:
        assert spec.onnx is not None
        self.label = spec.label
        self.path = Path(package.root) / spec.onnx
        self.session = create_session(
            self.path, providers=package.providers, options=package.session
        )
        imap = spec.input_map or {}
        omap = spec.output_map or {}
        self._inputs = [(i.name, imap.get(i.name, i.name)) for i in self.session.get_inputs()]
        self._graph_outputs = [o.name for o in self.session.get_outputs()]
        self._outputs = [omap.get(n, n) for n in self._graph_outputs]
        self._run = self.session.run
        for g in imap:
            if g not in dict(self._inputs):
                raise PackageError(
                    str(self.path),
                    "input_map",
                    f"maps graph input '{g}', which the graph does not have; its inputs are "
                    + ", ".join(n for n, _ in self._inputs),
                )

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    @property
    def reads(self) -> list[str]:
        """The pipeline tensors this graph reads (its inputs, through the input map)."""
        return [src for _, src in self._inputs]

    def run(self, tensors: Tensors) -> None:
        try:
            feed = {g: tensors[src] for g, src in self._inputs}
        except KeyError:
            graph_name, src = next((g, s) for g, s in self._inputs if s not in tensors)
            have = ", ".join(sorted(tensors)) or "none"
            raise ExecutionError(
                f"step {self.label} failed: graph input '{graph_name}' needs tensor '{src}', "
                f"which no input or earlier step provided; tensors: {have}"
            ) from None
        try:
            results = self._run(self._graph_outputs, feed)
        except Exception as exc:  # onnxruntime's own exception types
            raise ExecutionError(f"step {self.label} failed: {exc}") from exc
        for name, value in zip(self._outputs, results, strict=True):
            tensors[name] = value

    def check(self, known: TensorInfo, where: str, *, after_hook: bool = False) -> None:
        """At load: check its inputs are available and compatible; add its outputs.

        ``after_hook``: a hook step runs earlier, so a tensor missing from ``known`` may
        be one it returns; it is left to the warm-up run.
        """
        for node, (graph_name, src) in zip(self.session.get_inputs(), self._inputs, strict=True):
            if src not in known:
                if after_hook:
                    continue
                have = ", ".join(sorted(known)) or "none"
                raise PackageError(
                    where,
                    self.label,
                    f"graph input '{graph_name}' needs tensor '{src}', which no input or "
                    f"earlier step provides; available: {have}",
                )
            dtype, rank = known[src]
            gtype = from_ort_type(node.type)
            if dtype is not None and gtype is not None and dtype != gtype:
                raise PackageError(
                    where,
                    self.label,
                    f"tensor '{src}' is {dtype} but graph input '{graph_name}' of "
                    f"{self.path.name} takes {gtype}",
                )
            grank = len(node.shape) if isinstance(node.shape, list) else None
            if rank is not None and grank is not None and rank != grank:
                raise PackageError(
                    where,
                    self.label,
                    f"tensor '{src}' has rank {rank} but graph input '{graph_name}' of "
                    f"{self.path.name} has rank {grank}",
                )
        for node, name in zip(self.session.get_outputs(), self._outputs, strict=True):
            shape = node.shape if isinstance(node.shape, list) else None
            known[name] = (from_ort_type(node.type), len(shape) if shape is not None else None)


def _load_module(path: Path, package: PackageSpec) -> ModuleType:
    if not path.is_file():
        raise PackageError(str(path), "", "hook module not found")
    mod_name = f"scorefn_hooks.{package.name}.{package.version}.{path.stem}".replace("-", "_")
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise PackageError(str(path), "", "cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PackageError(str(path), "", f"importing it failed: {exc!r}") from exc
    return module


class HookStep:
    """A Python hook module's ``preprocess`` or ``postprocess`` function."""

    def __init__(self, spec: StepSpec, package: PackageSpec) -> None:
        assert spec.python is not None
        self.label = spec.label
        self.path = Path(package.root) / spec.python
        module = _load_module(self.path, package)
        fn_name = spec.stage  # 'preprocess' | 'postprocess'
        fn = getattr(module, fn_name, None)
        if not callable(fn):
            raise PackageError(
                str(self.path), fn_name, f"a {fn_name} step's module must define {fn_name}(tensors)"
            )
        self._fn: Callable[[Tensors], Any] = fn
        init = getattr(module, "init", None)
        if callable(init):
            try:
                init(dict(spec.params))
            except Exception as exc:
                raise PackageError(str(self.path), "init", f"init(params) failed: {exc!r}") from exc

    def run(self, tensors: Tensors) -> None:
        try:
            produced = self._fn(tensors)
        except ScorefnError:
            raise
        except Exception as exc:
            raise ExecutionError(f"step {self.label} failed: {exc!r}") from exc
        if not isinstance(produced, dict):
            raise ExecutionError(
                f"step {self.label} returned {type(produced).__name__}; expected a dict of arrays"
            )
        tensors.update(produced)

    def check(self, known: TensorInfo, where: str, *, after_hook: bool = False) -> None:
        """What a hook returns (new tensors, or known ones replaced with any datatype and
        shape) is only known by running it: every known tensor's type becomes unknown,
        and the warm-up run checks the rest."""
        for name in known:
            known[name] = (None, None)


def build_step(spec: StepSpec, package: PackageSpec) -> OnnxStep | HookStep:
    """Create the step; sessions and hook ``init`` run here, once."""
    return OnnxStep(spec, package) if spec.onnx is not None else HookStep(spec, package)
