"""Calling one function: bind its arguments, run it, write its outputs, log the outcome.

Sync handlers run in the anyio worker-thread pool, ``async def`` handlers on the event loop,
as in the Python worker. The outcome is returned, never raised: each trigger decides what a
failure means (500, retry, poison) and the invoker logs it exactly once, in the Functions
host's words (``Executing 'Functions.x' ...`` / ``Executed 'Functions.x' (Failed, ...)``).
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from shared.localhost.bindings import InputBinding, OutputBinding, OutValue
from shared.localhost.context import InvocationContext, InvocationRetry, InvocationTrace
from shared.localhost.expressions import BindingData
from shared.localhost.index import FunctionDef

__all__ = ["Invoker", "Outcome"]

logger = logging.getLogger("shared.localhost.invocation")

_RETURN = "$return"


@dataclass(slots=True)  # not frozen: one per invocation, and a frozen __init__ costs 4x
class Outcome:
    """How an invocation ended: the return value, or the exception it raised. Not
    changed once made."""

    value: Any
    error: BaseException | None
    invocation_id: str

    @property
    def ok(self) -> bool:
        """Whether the function (and writing its outputs) succeeded."""
        return self.error is None


class Invoker:
    """Runs one function with its bindings; built once per function at start-up."""

    def __init__(
        self,
        function: FunctionDef,
        *,
        outputs: Mapping[str, OutputBinding] | None = None,
        inputs: Mapping[str, InputBinding] | None = None,
        log_level: int = logging.INFO,
    ) -> None:
        """``outputs`` and ``inputs`` map binding names (``$return`` included) to bindings;
        ``log_level`` is the level of the Executing/Executed lines (DEBUG for HTTP)."""
        self.function = function
        self._outputs = dict(outputs or {})
        self._inputs = dict(inputs or {})
        self._log_level = log_level
        self._name = f"Functions.{function.name}"
        parameters = function.parameters
        self._wants_context = "context" in parameters
        self._out_parameters = tuple(n for n in self._outputs if n != _RETURN and n in parameters)
        self._trigger_name = function.trigger.name
        self._simple = (
            parameters == (self._trigger_name,) and not self._inputs and not self._outputs
        )

    @property
    def uses_binding_data(self) -> bool:
        """Whether any input or output binding reads binding data (else pass ``{}``)."""
        return bool(self._inputs or self._outputs)

    async def invoke(
        self,
        trigger_value: Any,
        data: BindingData,
        *,
        reason: str,
        trace_parent: str = "",
        retry_count: int = 0,
        max_retry_count: int = 0,
    ) -> Outcome:
        """Run the function for one trigger event; ``data`` is the event's binding data."""
        handler = self.function.handler
        logs = logger.isEnabledFor(self._log_level)
        invocation_id = str(uuid.uuid4()) if logs or self._wants_context else ""
        if logs:
            logger.log(
                self._log_level,
                "Executing '%s' (Reason='%s', Id=%s)",
                self._name,
                reason,
                invocation_id,
            )
        started = time.perf_counter()
        try:
            if self._simple:
                if self.function.is_async:
                    value = await handler(trigger_value)
                else:
                    value = await anyio.to_thread.run_sync(handler, trigger_value)
            else:
                value = await self._call(
                    trigger_value,
                    data,
                    invocation_id,
                    InvocationTrace(trace_parent),
                    InvocationRetry(retry_count, max_retry_count),
                )
        except Exception as exc:
            invocation_id = invocation_id or str(uuid.uuid4())
            logger.error(
                "Executed '%s' (Failed, Id=%s, Duration=%dms)",
                self._name,
                invocation_id,
                (time.perf_counter() - started) * 1000,
                exc_info=exc,
            )
            return Outcome(None, exc, invocation_id)
        if logs:
            logger.log(
                self._log_level,
                "Executed '%s' (Succeeded, Id=%s, Duration=%dms)",
                self._name,
                invocation_id,
                (time.perf_counter() - started) * 1000,
            )
        return Outcome(value, None, invocation_id)

    async def _call(
        self,
        trigger_value: Any,
        data: BindingData,
        invocation_id: str,
        trace: InvocationTrace,
        retry: InvocationRetry,
    ) -> Any:
        kwargs: dict[str, Any] = {self._trigger_name: trigger_value}
        if self._wants_context:
            kwargs["context"] = InvocationContext(
                invocation_id,
                self.function.name,
                self.function.directory,
                trace=trace,
                retry=retry,
            )
        for name, binding in self._inputs.items():
            kwargs[name] = await binding.read(data)
        outs: dict[str, OutValue[Any]] = {}
        for name in self._out_parameters:
            outs[name] = kwargs[name] = OutValue()
        handler = self.function.handler
        if self.function.is_async:
            value = await handler(**kwargs)
        else:
            value = await anyio.to_thread.run_sync(functools.partial(handler, **kwargs))
        for name, out in outs.items():
            if out.is_set:
                await self._outputs[name].write(out.get(), data)
        returned = self._outputs.get(_RETURN)
        if returned is not None:
            await returned.write(value, data)
        return value
