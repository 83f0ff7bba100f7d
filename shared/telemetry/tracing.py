"""Spans and W3C trace context, free when tracing is off.

Every helper first checks ``TELEMETRY.tracing``; when it is false they return a shared
no-op context manager or ``None`` at once. Context crosses process hops as the W3C
``traceparent`` / ``tracestate`` headers (router -> scoring) or as a ``traceparent``
field of a queue message (batch plan -> chunk -> commit).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from typing import Final, ParamSpec, TypeVar

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from shared.telemetry.state import TELEMETRY

__all__ = [
    "Attributes",
    "current_trace_id",
    "current_traceparent",
    "detached",
    "in_span",
    "inject",
    "mark",
    "message_carrier",
    "set_attributes",
    "span",
    "traced",
]

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger(__name__)

Attributes = Mapping[str, AttributeValue]

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_NOOP: Final = contextlib.nullcontext(None)


@contextlib.contextmanager
def _span(
    name: str,
    kind: SpanKind,
    attributes: Attributes | None,
    carrier: Mapping[str, str] | None,
) -> Iterator[Span]:
    tracer = TELEMETRY.tracer
    assert tracer is not None
    parent = _PROPAGATOR.extract(carrier) if carrier is not None else None
    with tracer.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_attribute("error.type", type(exc).__name__)
            current.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
            raise


def span(
    name: str,
    attributes: Attributes | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    carrier: Mapping[str, str] | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A span named ``name`` around a block (the current span's child, or the child of
    the ``traceparent`` in ``carrier`` when one is given); a no-op when tracing is off.
    An exception leaving the block sets ``error.type`` and an error status."""
    if not TELEMETRY.tracing:
        return _NOOP
    return _span(name, kind, attributes, carrier)


def mark(name: str, attributes: Attributes) -> None:
    """A zero-length span recording a decision (the deployment chosen, ...); a no-op when
    tracing is off."""
    tracer = TELEMETRY.tracer
    if tracer is not None:
        try:
            tracer.start_span(name, attributes=attributes).end()
        except Exception:  # telemetry never fails a request
            log.debug("span %s not recorded", name, exc_info=True)


async def detached(work: Awaitable[R]) -> R:
    """Await ``work`` with no current span (tasks it creates start outside any trace)."""
    token = otel_context.attach(otel_context.Context())
    try:
        return await work
    finally:
        otel_context.detach(token)


def in_span() -> bool:
    """Whether tracing is on and a recording span is current (a request's or a batch
    chunk's): child spans then have a parent to join."""
    return TELEMETRY.tracing and trace.get_current_span().is_recording()


def set_attributes(current: Span | None, attributes: Attributes) -> None:
    """Set attributes on ``current`` (a no-op for ``None``, the span of a no-op block)."""
    if current is not None:
        try:
            current.set_attributes(attributes)
        except Exception:  # telemetry never fails a request
            log.debug("span attributes not set", exc_info=True)


def inject(headers: MutableMapping[str, str]) -> None:
    """Write the current span's ``traceparent`` (and ``tracestate``) into ``headers``;
    nothing when tracing is off or no span is current."""
    if TELEMETRY.tracing:
        _PROPAGATOR.inject(headers)


def current_traceparent() -> str | None:
    """The current span's ``traceparent`` header value, or None."""
    if not TELEMETRY.tracing:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def current_trace_id(headers: Mapping[str, str] | None = None) -> str:
    """The current trace id (32 hex digits); when tracing is off, the one of the
    ``traceparent`` in ``headers``; '' when there is none."""
    if TELEMETRY.tracing:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            return format(ctx.trace_id, "032x")
    if headers is not None:
        value = headers.get("traceparent", "")
        parts = value.split("-")
        if len(parts) >= 4 and len(parts[1]) == 32:
            return parts[1]
    return ""


def traced(
    name: str,
    *,
    carrier: Callable[..., Mapping[str, str] | None] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function to run in a span named ``name`` when tracing is on;
    ``carrier(*args, **kwargs)`` may supply the parent's ``traceparent`` (a queue
    message's). With tracing off the wrapper calls the function at once."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            if not TELEMETRY.tracing:
                return fn(*args, **kwargs)
            parent: Mapping[str, str] | None = None
            if carrier is not None:
                try:
                    parent = carrier(*args, **kwargs)
                except Exception:  # a bad carrier only loses the link, never the call
                    log.debug("no trace context for %s", name, exc_info=True)
            with _span(name, SpanKind.INTERNAL, None, parent):
                return fn(*args, **kwargs)

        return run

    return decorate


def message_carrier(body: bytes | str) -> dict[str, str] | None:
    """The ``traceparent`` field of a JSON queue message, as a propagation carrier."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    value = document.get("traceparent") if isinstance(document, dict) else None
    return {"traceparent": value} if isinstance(value, str) else None
