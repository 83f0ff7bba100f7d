"""The ``context`` argument a function receives: a concrete ``azure.functions.Context``.

As in the Python worker, a handler gets one when it declares a parameter named ``context``.
"""

from __future__ import annotations

import threading

import azure.functions as func
from azure.functions._abc import RetryContext, RpcException, TraceContext

__all__ = ["InvocationContext", "InvocationRetry", "InvocationTrace"]

_THREAD_LOCAL = threading.local()


class InvocationTrace(TraceContext):
    """W3C trace context of the invocation (from the ``traceparent`` header for HTTP)."""

    def __init__(self, trace_parent: str = "", trace_state: str = "") -> None:
        self._trace_parent = trace_parent
        self._trace_state = trace_state

    @property
    def trace_parent(self) -> str:
        """The ``traceparent`` value, or ''."""
        return self._trace_parent

    @property
    def trace_state(self) -> str:
        """The ``tracestate`` value, or ''."""
        return self._trace_state

    @property
    def attributes(self) -> dict[str, str]:
        """No extra attributes locally."""
        return {}


class _NoException(RpcException):
    """The exception of a previous attempt, which is not carried locally."""

    @property
    def source(self) -> str:
        return ""

    @property
    def stack_trace(self) -> str:
        return ""

    @property
    def message(self) -> str:
        return ""


class InvocationRetry(RetryContext):
    """Retry state: which attempt this is (0 for the first) and how many are allowed."""

    def __init__(self, retry_count: int = 0, max_retry_count: int = 0) -> None:
        self._retry_count = retry_count
        self._max_retry_count = max_retry_count

    @property
    def retry_count(self) -> int:
        """Attempts before this one."""
        return self._retry_count

    @property
    def max_retry_count(self) -> int:
        """Attempts allowed after the first."""
        return self._max_retry_count

    @property
    def exception(self) -> RpcException:
        """No previous exception is carried locally."""
        return _NoException()


class InvocationContext(func.Context):
    """Context of one invocation."""

    def __init__(
        self,
        invocation_id: str,
        function_name: str,
        function_directory: str,
        *,
        trace: InvocationTrace | None = None,
        retry: InvocationRetry | None = None,
    ) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._trace = trace or InvocationTrace()
        self._retry = retry or InvocationRetry()

    @property
    def invocation_id(self) -> str:
        """Id of this invocation (also in the host's log lines)."""
        return self._invocation_id

    @property
    def thread_local_storage(self) -> threading.local:  # type: ignore[override]
        """Thread-local storage, as the Python worker offers it."""
        return _THREAD_LOCAL

    @property
    def function_name(self) -> str:
        """Name of the function."""
        return self._function_name

    @property
    def function_directory(self) -> str:
        """Directory of the module defining the function."""
        return self._function_directory

    @property
    def trace_context(self) -> InvocationTrace:
        """Distributed tracing context."""
        return self._trace

    @property
    def retry_context(self) -> InvocationRetry:
        """Retry context."""
        return self._retry
