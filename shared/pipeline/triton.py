"""Triton model repositories as model packages.

A Triton repository holds one folder per model::

    <repository>/
    ├── vision_classifier/
    │   ├── config.pbtxt        ModelConfig in protobuf text format
    │   └── 1/model.onnx        numeric version folders
    └── vision/
        ├── config.pbtxt        platform: "ensemble" + ensemble_scheduling
        └── 1/                  an ensemble's version folder is empty

``load_triton_package`` turns one model folder into a ``PackageSpec``: an
``onnxruntime_onnx`` model becomes a one-step package, an ensemble becomes one step per
composing model (siblings in the same repository), ordered by data dependency, with
Triton's ``input_map``/``output_map`` carried over unchanged (both map the composing
model's tensor name to the ensemble's tensor name).

Translation rules:

* ``max_batch_size > 0``: ``dims`` exclude the batch dimension, so ``-1`` is prepended;
  ``max_batch_size: 0``: ``dims`` are the full shape.
* ``TYPE_FP32`` ... map to the protocol names of ``shared.pipeline.dtypes``
  (``TYPE_STRING`` -> ``BYTES``); ``TYPE_BF16`` has no protocol name and is refused.
* ``dynamic_batching`` -> ``BatchingSpec(max_batch_size=max_batch_size,
  max_delay_ms=max_queue_delay_microseconds / 1000)``; without it batching is disabled.
  An ensemble has no batcher of its own: it batches when any composing model does, up to
  the ensemble's ``max_batch_size``, waiting at most the longest composing delay.
* ``instance_group``: all ``KIND_CPU`` -> CPU only; otherwise (GPU, AUTO, none) CUDA then
  CPU, with TensorRT first when ``optimization`` names the ``tensorrt`` GPU accelerator.
  An ensemble uses CUDA when any composing model does.
* ``version_policy { specific { versions } }`` limits which version folders may be
  loaded; ``latest``/``all`` allow any (one version is loaded per package).

The ModelConfig protobuf class comes from ``tritonclient/grpc/model_config_pb2.py``, loaded
by file path: importing ``tritonclient.grpc`` needs the ``grpc`` extra, which the app does
not install. Every error is a ``PackageError`` naming the file, the field and what was
expected.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal

import onnx
from google.protobuf import message as pb_message
from google.protobuf import text_format
from pydantic import ValidationError

from shared.errors import PackageError
from shared.pipeline.dtypes import from_onnx
from shared.pipeline.spec import BatchingSpec, PackageSpec, StepSpec, TensorSpec

__all__ = [
    "CONFIG_FILE",
    "is_triton_model",
    "triton_versions",
    "load_triton_package",
    "check_signature_against_graph",
]

#: The file that marks a folder as a Triton model.
CONFIG_FILE: Final = "config.pbtxt"

_DEFAULT_MODEL_FILE: Final = "model.onnx"
_ONNX_PLATFORM: Final = "onnxruntime_onnx"
_ONNX_BACKEND: Final = "onnxruntime"
_ENSEMBLE: Final = "ensemble"
_SUPPORTED: Final = f'platform "{_ONNX_PLATFORM}" or "{_ENSEMBLE}", or backend "{_ONNX_BACKEND}"'

#: Triton DataType enum name -> protocol datatype.
_DATATYPES: Final[dict[str, str]] = {
    "TYPE_BOOL": "BOOL",
    "TYPE_UINT8": "UINT8",
    "TYPE_UINT16": "UINT16",
    "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64",
    "TYPE_INT8": "INT8",
    "TYPE_INT16": "INT16",
    "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64",
    "TYPE_FP16": "FP16",
    "TYPE_FP32": "FP32",
    "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES",
}

_GPU_PROVIDERS: Final = ("CUDAExecutionProvider", "CPUExecutionProvider")
_TRT_PROVIDERS: Final = ("TensorrtExecutionProvider", *_GPU_PROVIDERS)
_CPU_PROVIDERS: Final = ("CPUExecutionProvider",)

Kind = Literal["input", "output"]


# --------------------------------------------------------------------------- public API


def is_triton_model(path: Path) -> bool:
    """Whether ``path`` is a Triton model folder (it holds a ``config.pbtxt``)."""
    return (path / CONFIG_FILE).is_file()


def triton_versions(model_dir: Path) -> list[str]:
    """The model's version folder names in ascending numeric order.

    As in Triton, only sub-folders named by a positive integer without leading zeros
    count; they may be empty (an ensemble's are).
    """
    if not model_dir.is_dir():
        return []
    names = [p.name for p in model_dir.iterdir() if p.is_dir() and _is_version(p.name)]
    return sorted(names, key=int)


def load_triton_package(model_dir: Path, version: str | None = None) -> PackageSpec:
    """Load the Triton model in ``model_dir`` as a ``PackageSpec``.

    ``version`` names a version folder; ``None`` picks the latest one allowed by the
    config's ``version_policy``. Composing models of an ensemble are looked up as
    siblings of ``model_dir`` (the repository is ``model_dir.parent``). Raises
    ``PackageError`` for anything Triton would refuse to load and for what scorefn cannot
    serve.
    """
    return _Repository(model_dir.parent).load(model_dir, version).spec


def check_signature_against_graph(
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    graph: onnx.GraphProto,
    *,
    file: str,
) -> None:
    """Check declared tensors against an ONNX graph; raise ``PackageError`` on a mismatch.

    Every declared input and output must exist in the graph with the same datatype and
    rank, and dimensions fixed on both sides must agree; a dimension that the declaration
    leaves open (-1) must be open in the graph too. Every graph input without an
    initializer (a default value) must be declared. Graph outputs may be left undeclared.
    ``file`` is the declaring file named in errors (a ``config.pbtxt`` or ``model.yaml``).
    """
    initialized = {t.name for t in graph.initializer}
    graph_inputs = {v.name: v for v in graph.input}
    graph_outputs = {v.name: v for v in graph.output}
    for spec in inputs:
        _compare_tensor("input", spec, graph_inputs, file)
    for spec in outputs:
        _compare_tensor("output", spec, graph_outputs, file)
    declared = {t.name for t in inputs}
    for name in graph_inputs:
        if name not in declared and name not in initialized:
            raise PackageError(
                file,
                f"input '{name}'",
                "the graph requires this input but it is not declared; declared inputs: "
                + _names(declared),
            )


# --------------------------------------------------------------------------- parsing


@functools.cache
def _model_config_module() -> ModuleType:
    """``tritonclient/grpc/model_config_pb2.py``, loaded by path (see module docstring)."""
    package = importlib.util.find_spec("tritonclient")
    locations = package.submodule_search_locations if package else None
    if not locations:
        raise ModuleNotFoundError(
            "tritonclient is not installed; reading config.pbtxt needs tritonclient[http]"
        )
    path = Path(next(iter(locations))) / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("scorefn_triton_model_config_pb2", path)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"cannot load Triton's ModelConfig protobuf from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parse_config(config_file: Path) -> Any:
    """Parse ``config_file`` into a ``inference.ModelConfig`` message."""
    if not config_file.is_file():
        raise PackageError(
            str(config_file), "", "file not found; a Triton model folder needs a config.pbtxt"
        )
    try:
        text = config_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PackageError(str(config_file), "", f"cannot read the file: {exc}") from exc
    config = _model_config_module().ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise PackageError(
            str(config_file),
            "",
            f"not a valid Triton ModelConfig in protobuf text format: {exc}",
        ) from exc
    return config


def _enum_name(enum: Any, value: int) -> str:
    """The name of an enum value; the number itself for values the enum does not define."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return str(value)
    return name


def _datatype_name(value: int) -> str:
    return _enum_name(_model_config_module().DataType, value)


def _kind_name(value: int) -> str:
    return _enum_name(_model_config_module().ModelInstanceGroup.Kind, value)


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Loaded:
    """A loaded model with what an enclosing ensemble needs beyond its ``PackageSpec``."""

    spec: PackageSpec
    max_batch_size: int
    graph_outputs: tuple[str, ...]


@dataclass(frozen=True)
class _Step:
    """One ``ensemble_scheduling.step`` entry, resolved against its composing model."""

    index: int
    model: _Loaded
    input_map: dict[str, str]
    output_map: dict[str, str]

    @property
    def name(self) -> str:
        return self.model.spec.name

    @property
    def label(self) -> str:
        return f"step[{self.index}] ({self.name})"

    @property
    def field(self) -> str:
        return f"ensemble_scheduling.step[{self.index}]"


class _Repository:
    """Loads models of one repository folder, each (model, version) at most once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[tuple[str, str | None], _Loaded] = {}

    def load(self, model_dir: Path, version: str | None) -> _Loaded:
        key = (model_dir.name, version)
        if key not in self._cache:
            self._cache[key] = self._load(model_dir, version)
        return self._cache[key]

    def _load(self, model_dir: Path, version: str | None) -> _Loaded:
        config_file = model_dir / CONFIG_FILE
        config = _parse_config(config_file)
        cfg = str(config_file)
        name = str(config.name) or model_dir.name
        if name != model_dir.name:
            raise PackageError(
                cfg,
                "name",
                f"is '{name}' but the model folder is '{model_dir.name}'; "
                "Triton requires them to match",
            )
        platform = _platform(cfg, config)
        _refuse_unsupported(cfg, config)
        max_batch_size = int(config.max_batch_size)
        if max_batch_size < 0:
            raise PackageError(cfg, "max_batch_size", f"is {max_batch_size}; expected >= 0")
        chosen = _choose_version(model_dir, cfg, config, version)
        inputs = _tensors(cfg, config, "input", max_batch_size)
        outputs = _tensors(cfg, config, "output", max_batch_size)
        if platform == _ENSEMBLE:
            return self._ensemble(model_dir, config_file, config, chosen, inputs, outputs)
        return _onnx_model(model_dir, config_file, config, chosen, inputs, outputs)

    def _ensemble(
        self,
        model_dir: Path,
        config_file: Path,
        config: Any,
        version: str,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
    ) -> _Loaded:
        cfg = str(config_file)
        if len(config.instance_group):
            raise PackageError(
                cfg,
                "instance_group",
                "an ensemble takes no instance_group; set it on the composing models",
            )
        for kind, specs in (("input", inputs), ("output", outputs)):
            if not specs:
                raise PackageError(
                    cfg, kind, f"an ensemble must declare its {kind}s; none are declared"
                )
        if not len(config.ensemble_scheduling.step):
            raise PackageError(
                cfg, "ensemble_scheduling.step", "an ensemble needs at least one step"
            )
        max_batch_size = int(config.max_batch_size)
        steps = [
            self._step(cfg, i, raw, max_batch_size)
            for i, raw in enumerate(config.ensemble_scheduling.step)
        ]
        ordered = _check_dataflow(cfg, inputs, outputs, steps)
        spec = _build_spec(
            cfg,
            name=model_dir.name,
            version=version,
            description="Triton ensemble: " + " -> ".join(s.name for s in ordered),
            platform="ensemble",
            inputs=inputs,
            outputs=outputs,
            steps=tuple(
                StepSpec(
                    onnx=f"../{s.name}/{s.model.spec.steps[0].onnx}",
                    name=s.name,
                    model=s.name,
                    input_map=s.input_map,
                    output_map=s.output_map,
                )
                for s in ordered
            ),
            batching=_ensemble_batching(max_batch_size, [s.model for s in ordered]),
            providers=_ensemble_providers([s.model for s in ordered]),
            labels={"format": "triton", "triton_platform": _ENSEMBLE},
            root=str(model_dir.resolve()),
        )
        return _Loaded(spec, max_batch_size, ())

    def _step(self, cfg: str, index: int, raw: Any, max_batch_size: int) -> _Step:
        field = f"ensemble_scheduling.step[{index}]"
        model_name = str(raw.model_name)
        if not model_name:
            raise PackageError(cfg, f"{field}.model_name", "missing; name a composing model")
        model_dir = self.root / model_name
        if not is_triton_model(model_dir):
            available = [p.name for p in sorted(self.root.iterdir()) if is_triton_model(p)]
            raise PackageError(
                cfg,
                f"{field}.model_name",
                f"model '{model_name}' is not in the repository {self.root} "
                f"(no {model_name}/{CONFIG_FILE}); models there: {_names(available)}",
            )
        # Checked before loading: an ensemble naming itself would otherwise recurse.
        if str(_parse_config(model_dir / CONFIG_FILE).platform) == _ENSEMBLE:
            raise PackageError(
                cfg,
                f"{field}.model_name",
                f"'{model_name}' is itself an ensemble; nested ensembles are not supported",
            )
        wanted = int(raw.model_version)
        model = self.load(model_dir, None if wanted == -1 else str(wanted))
        if model.max_batch_size and model.max_batch_size < max_batch_size:
            raise PackageError(
                cfg,
                "max_batch_size",
                f"is {max_batch_size} but composing model '{model_name}' allows at most "
                f"{model.max_batch_size}; lower it or raise the model's max_batch_size",
            )
        input_map = _step_map(cfg, f"{field}.input_map", dict(raw.input_map), model, "input")
        output_map = _step_map(cfg, f"{field}.output_map", dict(raw.output_map), model, "output")
        return _Step(index, model, input_map, output_map)


def _onnx_model(
    model_dir: Path,
    config_file: Path,
    config: Any,
    version: str,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
) -> _Loaded:
    cfg = str(config_file)
    if config.HasField("ensemble_scheduling"):
        raise PackageError(
            cfg,
            "ensemble_scheduling",
            f'only allowed with platform "{_ENSEMBLE}"; this model is an ONNX model',
        )
    for kind, specs in (("input", inputs), ("output", outputs)):
        if not specs:
            raise PackageError(cfg, kind, f"no {kind}s declared; declare at least one")
    batching = _batching(cfg, config)
    filename = str(config.default_model_filename) or _DEFAULT_MODEL_FILE
    onnx_file = model_dir / version / filename
    if not onnx_file.is_file():
        raise PackageError(
            str(onnx_file),
            "",
            f"model file not found; an {_ONNX_PLATFORM} model loads "
            f"<version>/{filename} (default_model_filename)",
        )
    try:
        model = onnx.load(str(onnx_file), load_external_data=False)
    except (OSError, pb_message.DecodeError) as exc:
        raise PackageError(str(onnx_file), "", f"not a readable ONNX model: {exc}") from exc
    if not len(model.graph.output):
        raise PackageError(str(onnx_file), "", "not an ONNX model: the graph has no outputs")
    check_signature_against_graph(inputs, outputs, model.graph, file=cfg)
    max_batch_size = int(config.max_batch_size)
    spec = _build_spec(
        cfg,
        name=model_dir.name,
        version=version,
        platform="onnx",
        inputs=inputs,
        outputs=outputs,
        steps=(StepSpec(onnx=f"{version}/{filename}", name=model_dir.name),),
        batching=batching,
        providers=_providers(config),
        labels={"format": "triton", "triton_platform": _ONNX_PLATFORM},
        root=str(model_dir.resolve()),
    )
    graph_outputs = tuple(v.name for v in model.graph.output)
    return _Loaded(spec, max_batch_size, graph_outputs)


def _build_spec(cfg: str, **fields: Any) -> PackageSpec:
    """``PackageSpec(**fields)``, with pydantic's complaint turned into a ``PackageError``."""
    try:
        return PackageSpec(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise PackageError(cfg, where, f"{first['msg']}; got {first.get('input')!r}") from exc


# --------------------------------------------------------------------------- config fields


def _is_version(name: str) -> bool:
    return name.isascii() and name.isdigit() and not name.startswith("0")


def _platform(cfg: str, config: Any) -> Literal["onnx", "ensemble"]:
    platform = str(config.platform)
    backend = str(config.backend)
    if platform == _ENSEMBLE:
        if backend:
            raise PackageError(cfg, "backend", f"an ensemble takes no backend, got '{backend}'")
        if not config.HasField("ensemble_scheduling"):
            raise PackageError(
                cfg, "ensemble_scheduling", "missing; an ensemble lists its steps there"
            )
        return "ensemble"
    if platform not in ("", _ONNX_PLATFORM):
        raise PackageError(cfg, "platform", f"'{platform}' is not supported; use {_SUPPORTED}")
    if backend not in ("", _ONNX_BACKEND):
        raise PackageError(cfg, "backend", f"'{backend}' is not supported; use {_SUPPORTED}")
    if not platform and not backend:
        raise PackageError(cfg, "platform", f"missing; set {_SUPPORTED}")
    return "onnx"


def _refuse_unsupported(cfg: str, config: Any) -> None:
    """Refuse Triton features that change request semantics and that scorefn lacks."""
    if config.HasField("sequence_batching"):
        raise PackageError(cfg, "sequence_batching", "stateful models are not supported")
    if config.model_transaction_policy.decoupled:
        raise PackageError(
            cfg, "model_transaction_policy.decoupled", "decoupled models are not supported"
        )
    for field in ("batch_input", "batch_output"):
        if len(getattr(config, field)):
            raise PackageError(cfg, field, "not supported")
    for kind in ("input", "output"):
        for i, tensor in enumerate(getattr(config, kind)):
            if tensor.HasField("reshape"):
                raise PackageError(
                    cfg,
                    f"{kind}[{i}].reshape",
                    "not supported; make the graph's shape match dims",
                )
            flags = ["is_shape_tensor"]
            if kind == "input":
                flags += ["optional", "allow_ragged_batch"]
            for flag in flags:
                if getattr(tensor, flag):
                    raise PackageError(cfg, f"{kind}[{i}].{flag}", "not supported")


def _choose_version(model_dir: Path, cfg: str, config: Any, version: str | None) -> str:
    available = triton_versions(model_dir)
    policy = config.version_policy
    specific: list[str] | None = None
    if policy.WhichOneof("policy_choice") == "specific":
        specific = [str(v) for v in policy.specific.versions]
    if version is None:
        if specific:
            version = max(specific, key=int)
        elif available:
            version = available[-1]
        else:
            raise PackageError(
                str(model_dir),
                "version",
                "no version folder; a Triton model keeps its files in numeric folders such as 1/",
            )
    elif specific is not None and version not in specific:
        raise PackageError(
            cfg,
            "version_policy.specific.versions",
            f"version {version} is not listed; allowed: {_names(specific)}",
        )
    if version not in available:
        raise PackageError(
            str(model_dir / version),
            "version",
            f"version folder not found; available versions: {_names(available)}",
        )
    return version


def _tensors(cfg: str, config: Any, kind: Kind, max_batch_size: int) -> tuple[TensorSpec, ...]:
    """The config's ``input``/``output`` entries as ``TensorSpec``s with full shapes."""
    specs: list[TensorSpec] = []
    seen: set[str] = set()
    for i, tensor in enumerate(getattr(config, kind)):
        field = f"{kind}[{i}]"
        name = str(tensor.name)
        if not name:
            raise PackageError(cfg, f"{field}.name", "missing")
        if name in seen:
            raise PackageError(cfg, f"{field}.name", f"'{name}' is declared twice")
        seen.add(name)
        type_name = _datatype_name(tensor.data_type)
        datatype = _DATATYPES.get(type_name)
        if datatype is None:
            got = "missing" if type_name == "TYPE_INVALID" else f"{type_name} is not supported"
            raise PackageError(
                cfg,
                f"{field}.data_type",
                f"{got} (tensor '{name}'); supported: {', '.join(_DATATYPES)}",
            )
        dims = [int(d) for d in tensor.dims]
        if not dims:
            raise PackageError(
                cfg,
                f"{field}.dims",
                f"missing (tensor '{name}'); use [ 1 ] for one value per row",
            )
        for d in dims:
            if d < -1 or d == 0:
                raise PackageError(
                    cfg,
                    f"{field}.dims",
                    f"dimension {d} is not allowed (tensor '{name}'); use a positive size or -1",
                )
        shape = (-1, *dims) if max_batch_size > 0 else tuple(dims)
        specs.append(TensorSpec(name=name, datatype=datatype, shape=shape))
    return tuple(specs)


def _batching(cfg: str, config: Any) -> BatchingSpec:
    max_batch_size = int(config.max_batch_size)
    if not config.HasField("dynamic_batching"):
        if max_batch_size > 0:
            return BatchingSpec(enabled=False, max_batch_size=max_batch_size)
        return BatchingSpec(enabled=False)
    if max_batch_size == 0:
        raise PackageError(
            cfg,
            "dynamic_batching",
            "needs max_batch_size > 0 (the model must accept a batch dimension)",
        )
    # preferred_batch_size is a hint for Triton's batcher; BatchingSpec has no such field.
    delay_us = int(config.dynamic_batching.max_queue_delay_microseconds)
    return BatchingSpec(enabled=True, max_batch_size=max_batch_size, max_delay_ms=delay_us / 1000)


def _providers(config: Any) -> tuple[str, ...]:
    kinds = {_kind_name(group.kind) for group in config.instance_group}
    if kinds == {"KIND_CPU"}:
        return _CPU_PROVIDERS
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    if any(str(a.name) == "tensorrt" for a in accelerators):
        return _TRT_PROVIDERS
    return _GPU_PROVIDERS


def _ensemble_batching(max_batch_size: int, models: Sequence[_Loaded]) -> BatchingSpec:
    batched = [m.spec.batching for m in models if m.spec.batching.enabled]
    if max_batch_size == 0:
        return BatchingSpec(enabled=False)
    if not batched:
        return BatchingSpec(enabled=False, max_batch_size=max_batch_size)
    return BatchingSpec(
        enabled=True,
        max_batch_size=max_batch_size,
        max_delay_ms=max(b.max_delay_ms for b in batched),
    )


def _ensemble_providers(models: Sequence[_Loaded]) -> tuple[str, ...]:
    chosen = [m.spec.providers for m in models]
    for candidate in (_TRT_PROVIDERS, _GPU_PROVIDERS):
        if candidate in chosen:
            return candidate
    return _CPU_PROVIDERS


# --------------------------------------------------------------------------- ensembles


def _step_map(
    cfg: str, field: str, raw: Mapping[str, str], model: _Loaded, kind: Kind
) -> dict[str, str]:
    """Check one step's ``input_map``/``output_map`` and return it in declaration order."""
    declared = [t.name for t in (model.spec.inputs if kind == "input" else model.spec.outputs)]
    if not raw:
        raise PackageError(
            cfg, field, f"empty; map the {kind}s of model '{model.spec.name}' to ensemble tensors"
        )
    for key in raw:
        if key not in declared:
            raise PackageError(
                cfg,
                field,
                f"key '{key}' is not an {kind} of model '{model.spec.name}'; "
                f"its {kind}s: {_names(declared)}",
            )
    if kind == "input":
        for name in declared:
            if name not in raw:
                raise PackageError(
                    cfg,
                    field,
                    f"input '{name}' of model '{model.spec.name}' is not mapped; "
                    "map it to an ensemble tensor",
                )
    return {name: raw[name] for name in declared if name in raw}


def _check_dataflow(
    cfg: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    steps: Sequence[_Step],
) -> list[_Step]:
    """Check the ensemble's tensor flow and return the steps in dependency order.

    Mirrors Triton's checks: one writer per tensor, every read tensor is an ensemble input
    or written by a step with the same datatype and a compatible shape, no cycles, every
    ensemble output written, and no ensemble input or written tensor left unused.
    """
    ensemble_inputs = {t.name: t for t in inputs}
    ensemble_outputs = {t.name for t in outputs}
    writers = _writers(cfg, ensemble_inputs, steps)
    read: set[str] = set()
    for step in steps:
        model_inputs = {t.name: t for t in step.model.spec.inputs}
        for model_tensor, tensor in step.input_map.items():
            read.add(tensor)
            wanted = model_inputs[model_tensor]
            expects = f"but input '{model_tensor}' of model '{step.name}' expects"
            field = f"{step.field}.input_map"
            if tensor in ensemble_inputs:
                given = f"tensor '{tensor}' is declared as ensemble input"
                _same_tensor(cfg, field, given, ensemble_inputs[tensor], expects, wanted)
            elif tensor in writers:
                writer, written = writers[tensor]
                given = f"tensor '{tensor}' from {writer.label} is"
                _same_tensor(cfg, field, given, written, expects, wanted)
            else:
                raise PackageError(
                    cfg,
                    field,
                    f"tensor '{tensor}' is not an ensemble input and no step writes it; "
                    f"ensemble inputs: {_names(ensemble_inputs)}; "
                    f"written by steps: {_names(writers)}",
                )
    ordered = _topological(cfg, steps, {t: w for t, (w, _) in writers.items()})

    for i, out in enumerate(outputs):
        if out.name in ensemble_inputs:
            continue
        if out.name not in writers:
            raise PackageError(
                cfg,
                f"output[{i}]",
                f"ensemble output '{out.name}' is not written by any step; "
                f"written by steps: {_names(writers)}",
            )
        writer, written = writers[out.name]
        given = f"ensemble output '{out.name}' is declared"
        _same_tensor(cfg, f"output[{i}]", given, out, f"but {writer.label} writes", written)
    for i, declared in enumerate(inputs):
        if declared.name not in read and declared.name not in ensemble_outputs:
            raise PackageError(
                cfg, f"input[{i}]", f"ensemble input '{declared.name}' is not read by any step"
            )
    for tensor, (writer, _) in writers.items():
        if tensor not in read and tensor not in ensemble_outputs:
            raise PackageError(
                cfg,
                f"{writer.field}.output_map",
                f"tensor '{tensor}' is neither read by a step nor declared as an "
                f"ensemble output; ensemble outputs: {_names(ensemble_outputs)}",
            )
    _refuse_shadowing(cfg, steps, set(ensemble_inputs) | ensemble_outputs | set(writers))
    return ordered


def _writers(
    cfg: str, ensemble_inputs: Mapping[str, TensorSpec], steps: Sequence[_Step]
) -> dict[str, tuple[_Step, TensorSpec]]:
    """Ensemble tensor -> the step writing it and the composing model's output spec."""
    writers: dict[str, tuple[_Step, TensorSpec]] = {}
    for step in steps:
        model_outputs = {t.name: t for t in step.model.spec.outputs}
        for model_tensor, tensor in step.output_map.items():
            if tensor in ensemble_inputs:
                raise PackageError(
                    cfg,
                    f"{step.field}.output_map",
                    f"tensor '{tensor}' is an ensemble input; a step may not write it",
                )
            if tensor in writers:
                raise PackageError(
                    cfg,
                    f"{step.field}.output_map",
                    f"tensor '{tensor}' is already written by {writers[tensor][0].label}; "
                    "each ensemble tensor has one writer",
                )
            writers[tensor] = (step, model_outputs[model_tensor])
    return writers


def _refuse_shadowing(cfg: str, steps: Sequence[_Step], tensors: set[str]) -> None:
    """Refuse unmapped graph outputs named like an ensemble tensor.

    Triton drops outputs a step does not map; a ``PackageSpec`` step stores every graph
    output, unmapped ones under their own name, which would overwrite that tensor.
    """
    for step in steps:
        for name in step.model.graph_outputs:
            if name not in step.output_map and name in tensors:
                raise PackageError(
                    cfg,
                    f"{step.field}.output_map",
                    f"graph output '{name}' of model '{step.name}' is not mapped but has the "
                    f"name of ensemble tensor '{name}', which it would overwrite; map it",
                )


def _topological(cfg: str, steps: Sequence[_Step], writers: dict[str, _Step]) -> list[_Step]:
    """Order steps so that each runs after the steps writing its inputs (stable)."""
    needs: dict[int, dict[int, str]] = {}
    for step in steps:
        needs[step.index] = {writers[t].index: t for t in step.input_map.values() if t in writers}
    by_index = {s.index: s for s in steps}
    done: list[_Step] = []
    pending = [s.index for s in steps]
    while pending:
        ready = [i for i in pending if all(d not in pending for d in needs[i])]
        if not ready:
            raise PackageError(
                cfg, "ensemble_scheduling.step", _describe_cycle(pending, needs, by_index)
            )
        done.append(by_index[ready[0]])
        pending.remove(ready[0])
    return done


def _describe_cycle(
    pending: Sequence[int], needs: dict[int, dict[int, str]], steps: dict[int, _Step]
) -> str:
    # Every pending step waits on another pending step, so walking "waits on" edges from
    # any of them must revisit a step; the walk from the first revisit is the cycle.
    path = [pending[0]]
    while True:
        current = path[-1]
        nxt = min(d for d in needs[current] if d in pending)
        if nxt in path:
            cycle = [*path[path.index(nxt) :], nxt]
            break
        path.append(nxt)
    hops = [f"reads '{needs[r][w]}' from {steps[w].label}" for r, w in itertools.pairwise(cycle)]
    first = steps[cycle[0]].label
    return f"the steps wait on each other in a cycle: {first} " + ", which ".join(hops)


def _same_tensor(
    cfg: str, field: str, left_text: str, left: TensorSpec, right_text: str, right: TensorSpec
) -> None:
    """Raise unless two ends of an ensemble tensor agree on datatype and shape.

    Shapes agree when ranks match and each dimension is equal or -1 on either side
    (Triton's rule; a -1 is checked on each request).
    """
    same_shape = len(left.shape) == len(right.shape) and all(
        a == b or -1 in (a, b) for a, b in zip(left.shape, right.shape, strict=True)
    )
    if left.datatype != right.datatype or not same_shape:
        raise PackageError(
            cfg,
            field,
            f"{left_text} {left.datatype} {_shape(left.shape)} {right_text} "
            f"{right.datatype} {_shape(right.shape)}",
        )


# --------------------------------------------------------------------------- graph checks


def _compare_tensor(kind: Kind, spec: TensorSpec, graph: Mapping[str, Any], file: str) -> None:
    field = f"{kind} '{spec.name}'"
    value = graph.get(spec.name)
    if value is None:
        raise PackageError(
            file,
            field,
            f"the graph has no {kind} of that name; graph {kind}s: {_names(graph)}",
        )
    if value.type.WhichOneof("value") != "tensor_type":
        raise PackageError(file, field, f"the graph's {kind} is not a tensor")
    tensor_type = value.type.tensor_type
    datatype = from_onnx(int(tensor_type.elem_type))
    if datatype != spec.datatype:
        has = datatype or onnx.TensorProto.DataType.Name(tensor_type.elem_type)
        raise PackageError(file, field, f"the config says {spec.datatype} but the graph has {has}")
    if not tensor_type.HasField("shape"):
        return  # rank unknown to the graph: onnxruntime checks at run time
    dims: list[int | str] = [
        int(d.dim_value) if d.HasField("dim_value") else (str(d.dim_param) or "?")
        for d in tensor_type.shape.dim
    ]
    graph_shape = "[" + ", ".join(str(d) for d in dims) + "]"
    if len(dims) != len(spec.shape):
        raise PackageError(
            file,
            field,
            f"the config says shape {_shape(spec.shape)} (rank {len(spec.shape)}) "
            f"but the graph has {graph_shape} (rank {len(dims)})",
        )
    for axis, (declared, actual) in enumerate(zip(spec.shape, dims, strict=True)):
        if isinstance(actual, int) and declared != actual:
            raise PackageError(
                file,
                field,
                f"the config says shape {_shape(spec.shape)} but the graph has {graph_shape}; "
                f"dimension {axis} differs",
            )


def _shape(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _names(names: Iterable[str]) -> str:
    listed = sorted(names)
    return ", ".join(listed) if listed else "(none)"
