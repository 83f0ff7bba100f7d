"""onnxruntime sessions: provider choice with CPU fallback, session options, warm-up.

One ``InferenceSession`` per graph per process. Providers are taken from the package's
preference list among those this onnxruntime build offers. ``onnxruntime-gpu`` lists
CUDA as available even on a machine without a GPU and silently falls back to CPU when
the CUDA libraries fail to load, so the provider actually used is read back from the
session after creation and a fallback is logged as a warning.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from pathlib import Path

import onnxruntime as ort

from shared.errors import PackageError
from shared.pipeline.spec import SessionSpec

__all__ = ["IR_VERSION", "available_providers", "create_session", "cuda_usable"]

#: Highest ONNX IR version onnxruntime 1.31 loads; model builders must write this
#: (onnx 1.23's ``helper.make_model`` defaults to 14, which onnxruntime refuses).
IR_VERSION = 10
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_fallback_reported = threading.Event()

log = logging.getLogger(__name__)

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def available_providers() -> list[str]:
    """Providers this onnxruntime build offers (not proof that the device works)."""
    return list(ort.get_available_providers())


def _options(path: Path, options: SessionSpec) -> ort.SessionOptions:
    so = ort.SessionOptions()
    # onnxruntime's default (0) takes one thread per machine core and pins them, ignoring
    # the process's CPU affinity (taskset, container CPU sets); count the allowed cores.
    so.intra_op_num_threads = options.intra_op_threads or len(os.sched_getaffinity(0))
    so.inter_op_num_threads = options.inter_op_threads
    so.graph_optimization_level = _OPT_LEVELS[options.graph_optimization]
    so.log_severity_level = 3  # errors only: ORT's own CUDA-missing noise is reported by us
    if options.optimized_model_cache:
        so.optimized_model_filepath = str(path.with_suffix(".optimized.onnx"))
    return so


def create_session(
    path: Path, *, providers: tuple[str, ...], options: SessionSpec
) -> ort.InferenceSession:
    """Create a session for ``path`` with the first usable providers from ``providers``.

    Raises ``PackageError`` when the file is missing or not a loadable ONNX graph.
    """
    if not path.is_file():
        raise PackageError(str(path), "", "file not found")
    offered = set(available_providers())
    wanted = [p for p in providers if p in offered]
    if any(p in _GPU_PROVIDERS for p in wanted) and not cuda_usable():
        # Once per process at WARNING (every graph of every package would repeat it).
        (log.debug if _fallback_reported.is_set() else log.warning)(
            "%s asks for %s but CUDA is not usable on this machine; using CPU",
            path.name,
            "/".join(p for p in wanted if p in _GPU_PROVIDERS),
        )
        _fallback_reported.set()
        wanted = [p for p in wanted if p not in _GPU_PROVIDERS]
    if "CPUExecutionProvider" not in wanted:
        wanted.append("CPUExecutionProvider")
    cached = path.with_suffix(".optimized.onnx")
    # A cache older than the model is stale (the model was replaced): rebuild it.
    fresh = (
        options.optimized_model_cache
        and cached.is_file()
        and cached.stat().st_mtime_ns >= path.stat().st_mtime_ns
    )
    source = cached if fresh else path
    try:
        session = ort.InferenceSession(
            str(source), sess_options=_options(path, options), providers=wanted
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        if wanted == ["CPUExecutionProvider"]:
            raise PackageError(str(path), "", f"onnxruntime cannot load it: {exc}") from exc
        log.warning("creating %s with %s failed (%s); falling back to CPU", path, wanted, exc)
        try:
            session = ort.InferenceSession(
                str(source),
                sess_options=_options(path, options),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc2:
            raise PackageError(str(path), "", f"onnxruntime cannot load it: {exc2}") from exc2
    used = session.get_providers()
    if wanted[0] != used[0]:
        log.warning(
            "%s: preferred provider %s is not usable here; running on %s",
            path.name,
            wanted[0],
            used[0],
        )
    else:
        log.info("%s: running on %s", path.name, used[0])
    return session


@functools.cache
def cuda_usable() -> bool:
    """True when a CUDA session can really be created on this machine (probed once)."""
    if "CUDAExecutionProvider" not in available_providers():
        return False
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION
    )
    so = ort.SessionOptions()
    so.log_severity_level = 4
    # onnxruntime prints a loud error through its default logger when the CUDA libraries
    # are missing; the probe's answer is reported by our own warning instead.
    ort.set_default_logger_severity(4)
    try:
        s = ort.InferenceSession(
            model.SerializeToString(),
            sess_options=so,
            providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
        )
    except Exception:
        return False
    finally:
        ort.set_default_logger_severity(3)
    return bool(s.get_providers()[0] == "CUDAExecutionProvider")
