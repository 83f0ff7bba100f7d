"""From indexed functions to what the host serves: routes, queue, blob and timer triggers.

Built once at start-up. Supported triggers: ``httpTrigger``, ``queueTrigger``,
``blobTrigger`` and ``timerTrigger``; supported other bindings: ``http`` (the response),
``queue`` out, ``blob`` out and ``blob`` in. A function using anything else, or declaring a
parameter that no binding fills (other than ``context``), is not served and is listed in
``Registry.skipped`` with the reason; the rest of the app is served. Configuration errors
that would break a served function (a bad route template or schedule, a connection setting
that is not set) raise ``ValueError`` naming the function.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.localhost.bindings import (
    BlobInput,
    BlobOutput,
    InputBinding,
    OutputBinding,
    QueueOutput,
)
from shared.localhost.expressions import BlobPathPattern, resolve_setting_references
from shared.localhost.hostjson import HostConfig
from shared.localhost.http import HttpFunction
from shared.localhost.index import BindingDef, FunctionDef
from shared.localhost.invocation import Invoker
from shared.localhost.ncrontab import Schedule, parse_schedule
from shared.localhost.routes import Route, RouteTable, RouteTemplate
from shared.localhost.storage import StorageAccounts

__all__ = [
    "BlobTriggerSpec",
    "QueueTriggerSpec",
    "Registry",
    "SkippedFunction",
    "TimerTriggerSpec",
    "build_registry",
]

_TRIGGERS = ("httpTrigger", "queueTrigger", "blobTrigger", "timerTrigger")


@dataclass(frozen=True, slots=True)
class QueueTriggerSpec:
    """A queue-triggered function and the queue it listens to."""

    invoker: Invoker
    queue_name: str
    connection: str | None


@dataclass(frozen=True, slots=True)
class BlobTriggerSpec:
    """A blob-triggered function and the path pattern it watches."""

    invoker: Invoker
    path: str
    connection: str | None
    source: str
    annotation: Any


@dataclass(frozen=True, slots=True)
class TimerTriggerSpec:
    """A timer-triggered function and its schedule."""

    invoker: Invoker
    schedule: Schedule
    expression: str
    run_on_startup: bool


@dataclass(frozen=True, slots=True)
class SkippedFunction:
    """A function the local host does not serve, and why."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Registry:
    """Everything the host serves, by trigger."""

    routes: RouteTable[HttpFunction]
    queues: tuple[QueueTriggerSpec, ...]
    blobs: tuple[BlobTriggerSpec, ...]
    timers: tuple[TimerTriggerSpec, ...]
    skipped: tuple[SkippedFunction, ...]

    def describe(self, base_url: str) -> list[str]:
        """One line per function, sorted by name, as Core Tools lists them at start-up."""
        lines: list[str] = []
        for route in self.routes:
            methods = ",".join(sorted(route.methods)) if route.methods else "ALL"
            lines.append(
                f"{route.target.name}: [{methods}] {base_url}{route.template.template} "
                f"(authLevel {route.target.auth_level})"
            )
        lines.extend(
            f"{spec.invoker.function.name}: queueTrigger (queue '{spec.queue_name}')"
            for spec in self.queues
        )
        lines.extend(
            f"{spec.invoker.function.name}: blobTrigger (path '{spec.path}', source {spec.source})"
            for spec in self.blobs
        )
        lines.extend(
            f"{spec.invoker.function.name}: timerTrigger (schedule '{spec.expression}'"
            f"{', run on startup' if spec.run_on_startup else ''})"
            for spec in self.timers
        )
        lines.extend(f"{item.name}: not served ({item.reason})" for item in self.skipped)
        return sorted(lines)


class _Unsupported(Exception):
    """The function uses something the local host cannot serve."""


def build_registry(
    functions: Sequence[FunctionDef],
    *,
    config: HostConfig,
    app_settings: Mapping[str, str],
    storage: StorageAccounts,
    on_queue_sent: Callable[[str, str | None], None] | None = None,
) -> Registry:
    """Sort ``functions`` by trigger and build their invokers and bindings."""
    builder = _Builder(config, app_settings, storage, on_queue_sent)
    routes: list[Route[HttpFunction]] = []
    queues: list[QueueTriggerSpec] = []
    blobs: list[BlobTriggerSpec] = []
    timers: list[TimerTriggerSpec] = []
    skipped: list[SkippedFunction] = []
    for function in functions:
        try:
            kind = function.trigger.type
            if kind not in _TRIGGERS:
                raise _Unsupported(
                    f"trigger type {kind!r} is not supported locally; supported: "
                    f"{', '.join(_TRIGGERS)}"
                )
            builder.check_parameters(function)
            if kind == "httpTrigger":
                routes.append(builder.http(function))
            elif kind == "queueTrigger":
                queues.append(builder.queue(function))
            elif kind == "blobTrigger":
                blobs.append(builder.blob(function))
            else:
                timers.append(builder.timer(function))
        except _Unsupported as exc:
            skipped.append(SkippedFunction(function.name, str(exc)))
        except (ValueError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise ValueError(f"function {function.name}: {message}") from exc
    return Registry(RouteTable(routes), tuple(queues), tuple(blobs), tuple(timers), tuple(skipped))


class _Builder:
    def __init__(
        self,
        config: HostConfig,
        app_settings: Mapping[str, str],
        storage: StorageAccounts,
        on_queue_sent: Callable[[str, str | None], None] | None,
    ) -> None:
        self._config = config
        self._settings = app_settings
        self._storage = storage
        self._on_queue_sent = on_queue_sent

    def _text(self, binding: BindingDef, key: str) -> str:
        value = binding.setting(key)
        if not isinstance(value, str) or not value:
            raise ValueError(f"binding {binding.name!r} has no {key!r}")
        return resolve_setting_references(value, self._settings)

    def _connection(self, binding: BindingDef) -> str | None:
        connection = binding.setting("connection")
        name = str(connection) if connection else None
        self._storage.connection_string(name)  # fail at start-up, not at the first message
        return name

    def check_parameters(self, function: FunctionDef) -> None:
        bound = {function.trigger.name, "context"} | {binding.name for binding in function.bindings}
        for parameter in function.parameters:
            if parameter not in bound:
                raise _Unsupported(f"parameter {parameter!r} has no binding")

    def invoker(self, function: FunctionDef, *, log_level: int = logging.INFO) -> Invoker:
        outputs: dict[str, OutputBinding] = {}
        inputs: dict[str, InputBinding] = {}
        for binding in function.bindings:
            if binding.type == "http" and binding.direction == "out":
                if function.trigger.type != "httpTrigger":
                    raise _Unsupported("an http output binding needs an httpTrigger")
                continue
            if binding.type == "queue" and binding.direction == "out":
                outputs[binding.name] = QueueOutput(
                    self._storage,
                    connection=self._connection(binding),
                    queue_name=self._text(binding, "queueName"),
                    encoding=self._config.queues.message_encoding,
                    on_sent=self._on_queue_sent,
                )
            elif binding.type == "blob" and binding.direction == "out":
                outputs[binding.name] = BlobOutput(
                    self._storage,
                    connection=self._connection(binding),
                    path=self._text(binding, "path"),
                )
            elif binding.type == "blob" and binding.direction == "in":
                inputs[binding.name] = BlobInput(
                    self._storage,
                    connection=self._connection(binding),
                    path=self._text(binding, "path"),
                    annotation=function.annotations.get(binding.name),
                )
            else:
                raise _Unsupported(
                    f"binding {binding.name!r} of type {binding.type!r} ({binding.direction}) "
                    "is not supported locally; supported: http out, queue out, blob in/out"
                )
        return Invoker(function, outputs=outputs, inputs=inputs, log_level=log_level)

    def http(self, function: FunctionDef) -> Route[HttpFunction]:
        trigger = function.trigger
        route = trigger.setting("route")
        template = RouteTemplate(
            function.name if route is None else str(route), self._config.http.route_prefix
        )
        methods = trigger.setting("methods")
        allowed = frozenset(str(method).upper() for method in methods) if methods else None
        target = HttpFunction(
            name=function.name,
            invoker=self.invoker(function, log_level=logging.DEBUG),
            auth_level=str(trigger.setting("authLevel") or "function").lower(),
        )
        return Route(template, allowed, target)

    def queue(self, function: FunctionDef) -> QueueTriggerSpec:
        trigger = function.trigger
        return QueueTriggerSpec(
            invoker=self.invoker(function),
            queue_name=self._text(trigger, "queueName").lower(),
            connection=self._connection(trigger),
        )

    def blob(self, function: FunctionDef) -> BlobTriggerSpec:
        trigger = function.trigger
        path = self._text(trigger, "path")
        BlobPathPattern(path)  # a bad pattern fails at start-up
        return BlobTriggerSpec(
            invoker=self.invoker(function),
            path=path,
            connection=self._connection(trigger),
            source=str(trigger.setting("source") or "LogsAndContainerScan"),
            annotation=function.annotations.get(trigger.name),
        )

    def timer(self, function: FunctionDef) -> TimerTriggerSpec:
        trigger = function.trigger
        expression = self._text(trigger, "schedule")
        return TimerTriggerSpec(
            invoker=self.invoker(function),
            schedule=parse_schedule(expression),
            expression=expression,
            run_on_startup=bool(trigger.setting("runOnStartup", False)),
        )
