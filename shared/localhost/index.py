"""Function indexing: turn a Python-v2-model ``FunctionApp`` into plain, typed definitions.

``FunctionApp.get_functions()`` may be called only once per app (a second call raises
"does not have a unique function name"), so ``index_app`` calls it once per app object and
remembers the answer; building several hosts over one app (a restart in a test) is safe.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import sys
import threading
import typing
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func

__all__ = ["BindingDef", "FunctionDef", "index_app", "load_app"]

_DIRECTIONS = {0: "in", 1: "out", 2: "inout"}


@dataclass(frozen=True, slots=True)
class BindingDef:
    """One binding of a function, as function.json would describe it."""

    type: str
    """Binding type, e.g. ``httpTrigger``, ``queue``, ``blob``."""
    name: str
    """Parameter name, or ``$return``."""
    direction: str
    """``in``, ``out`` or ``inout``."""
    settings: Mapping[str, Any]
    """The binding's function.json fields (camelCase keys, enums as plain values)."""

    def setting(self, key: str, default: Any = None) -> Any:
        """One field of the binding, e.g. ``route`` or ``queueName``."""
        return self.settings.get(key, default)


@dataclass(frozen=True, slots=True)
class FunctionDef:
    """A function of the app: its trigger, its other bindings and the Python callable."""

    name: str
    trigger: BindingDef
    bindings: tuple[BindingDef, ...]
    """Every binding except the trigger (outputs, inputs, ``$return``)."""
    handler: Callable[..., Any]
    """The user's function, undecorated."""
    is_async: bool
    parameters: tuple[str, ...]
    """Names of the handler's parameters, in order."""
    annotations: Mapping[str, Any]
    """Resolved type annotations of the handler's parameters."""
    directory: str
    """Directory of the module defining the handler (``context.function_directory``)."""

    def binding(self, name: str) -> BindingDef | None:
        """The non-trigger binding named ``name`` (``$return`` included), if any."""
        for binding in self.bindings:
            if binding.name == name:
                return binding
        return None


def load_app(spec: str, app_dir: Path | None = None) -> func.FunctionApp:
    """Import ``module:attribute`` (``attribute`` defaults to ``app``) and return the app.

    ``app_dir`` goes first on ``sys.path``. Raises ``ValueError`` when the attribute is
    missing or is not a ``FunctionApp``.
    """
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    if app_dir is not None:
        directory = str(app_dir.resolve())
        if directory not in sys.path:
            sys.path.insert(0, directory)
    module = importlib.import_module(module_name)
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ValueError(f"{spec}: module {module_name!r} has no {attribute!r}") from exc
    if not isinstance(target, func.FunctionApp):
        raise ValueError(f"{spec}: expected an azure.functions.FunctionApp, got {type(target)}")
    return target


_INDEX: weakref.WeakKeyDictionary[func.FunctionApp, tuple[FunctionDef, ...]] = (
    weakref.WeakKeyDictionary()
)
_INDEX_LOCK = threading.Lock()


def index_app(app: func.FunctionApp) -> tuple[FunctionDef, ...]:
    """The app's functions, from its single ``get_functions()`` call."""
    with _INDEX_LOCK:
        known = _INDEX.get(app)
        if known is None:
            known = tuple(_define(function) for function in app.get_functions())
            _INDEX[app] = known
        return known


def _define(function: func.Function) -> FunctionDef:
    name = str(function.get_function_name())
    trigger_object = function.get_trigger()
    if trigger_object is None:
        raise ValueError(f"function {name} has no trigger")
    trigger = _binding(trigger_object.get_dict_repr())
    others = tuple(
        _binding(b.get_dict_repr()) for b in function.get_bindings() if b is not trigger_object
    )
    handler = function.get_user_function()
    parameters = tuple(inspect.signature(handler).parameters)
    module = sys.modules.get(getattr(handler, "__module__", "") or "")
    module_file = getattr(module, "__file__", None)
    directory = str(Path(module_file).parent) if module_file else str(Path.cwd())
    return FunctionDef(
        name=name,
        trigger=trigger,
        bindings=others,
        handler=handler,
        is_async=inspect.iscoroutinefunction(handler),
        parameters=parameters,
        annotations=_annotations(handler),
        directory=directory,
    )


def _binding(raw: Mapping[str, Any]) -> BindingDef:
    settings = {str(key): _plain(value) for key, value in raw.items()}
    direction = settings.pop("direction", 0)
    return BindingDef(
        type=str(settings.pop("type")),
        name=str(settings.pop("name")),
        direction=_DIRECTIONS.get(direction, str(direction)),
        settings=settings,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _annotations(handler: Callable[..., Any]) -> dict[str, Any]:
    try:
        return dict(typing.get_type_hints(handler))
    except Exception:
        return {
            name: parameter.annotation
            for name, parameter in inspect.signature(handler).parameters.items()
            if parameter.annotation is not inspect.Parameter.empty
        }
