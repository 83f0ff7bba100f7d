"""HTTP route templates as Azure Functions reads them (ASP.NET Core syntax), compiled once.

Supported template syntax, segment by segment (segments split on ``/``):

- literals, matched case-insensitively; ``{{`` and ``}}`` are literal braces;
- ``{name}``, one non-empty segment; ``{name?}`` optional; ``{name=default}`` optional
  with a default value;
- ``{name:int}``, ``{name:int?}``, ``{name:alpha:minlength(2)}``: inline constraints
  ``int long float double decimal bool guid datetime alpha required min(n) max(n)
  range(a,b) minlength(n) maxlength(n) length(n) length(a,b) regex(expr)``;
- ``{*rest}`` / ``{**rest}``: catch-all, the rest of the path (may be empty), last segment;
- complex segments such as ``{name}.{ext}``.

A trailing ``/`` on the request path is ignored. Routes are tried in ASP.NET precedence
order (literal segments before constrained parameters before parameters before catch-alls);
fully literal routes are looked up in a dict. All regexes are compiled when the table is
built, none per request.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

__all__ = ["Route", "RouteTable", "RouteTemplate"]

T = TypeVar("T")

Check = Callable[[str], bool]

_RECENT_PATHS = 1024
"""Parameterised paths whose match ``RouteTable`` remembers."""

_LITERAL, _COMPLEX, _CONSTRAINED, _PARAMETER, _CATCH_ALL_CONSTRAINED, _CATCH_ALL = range(1, 7)


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    group: str
    optional: bool
    default: str | None
    catch_all: bool
    checks: tuple[Check, ...]


def _integer_in(low: int, high: int) -> Check:
    def check(value: str) -> bool:
        try:
            number = int(value)
        except ValueError:
            return False
        return low <= number <= high

    return check


def _is_float(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _ints(name: str, args: str, count: int) -> list[int]:
    parts = [part.strip() for part in args.split(",")] if args else []
    if len(parts) != count:
        raise ValueError(f"constraint {name}({args}) takes {count} integer argument(s)")
    try:
        return [int(part) for part in parts]
    except ValueError as exc:
        raise ValueError(f"constraint {name}({args}) takes integer arguments") from exc


def _length_check(args: str) -> Check:
    if "," in args:
        low, high = _ints("length", args, 2)
        return lambda value: low <= len(value) <= high
    (exact,) = _ints("length", args, 1)
    return lambda value: len(value) == exact


_SIMPLE_CONSTRAINTS: dict[str, Check] = {
    "int": _integer_in(-(2**31), 2**31 - 1),
    "long": _integer_in(-(2**63), 2**63 - 1),
    "float": _is_float,
    "double": _is_float,
    "decimal": _is_float,
    "bool": lambda value: value.lower() in ("true", "false"),
    "guid": _is_guid,
    "datetime": _is_datetime,
    "alpha": lambda value: value.isascii() and value.isalpha(),
    "required": lambda value: value != "",
}

_CONSTRAINT_NAMES = (
    "int long float double decimal bool guid datetime alpha required min(n) max(n) "
    "range(a,b) minlength(n) maxlength(n) length(n) length(a,b) regex(expr)"
)


def _constraint(name: str, args: str | None) -> Check:
    key = name.lower()
    if args is None and key in _SIMPLE_CONSTRAINTS:
        return _SIMPLE_CONSTRAINTS[key]
    if args is not None:
        if key == "min":
            (low,) = _ints(key, args, 1)
            return _integer_in(low, 2**63)
        if key == "max":
            (high,) = _ints(key, args, 1)
            return _integer_in(-(2**63), high)
        if key == "range":
            low, high = _ints(key, args, 2)
            return _integer_in(low, high)
        if key == "minlength":
            (shortest,) = _ints(key, args, 1)
            return lambda value: len(value) >= shortest
        if key == "maxlength":
            (longest,) = _ints(key, args, 1)
            return lambda value: len(value) <= longest
        if key == "length":
            return _length_check(args)
        if key == "regex":
            pattern = re.compile(args, re.IGNORECASE)
            return lambda value: pattern.search(value) is not None
    shown = name if args is None else f"{name}({args})"
    raise ValueError(f"unknown route constraint {shown!r}; supported: {_CONSTRAINT_NAMES}")


def _parse_param(text: str, group: str) -> _Param:
    stars = len(text) - len(text.lstrip("*"))
    body = text[stars:]
    index = 0
    while index < len(body) and body[index] not in ":=?":
        index += 1
    name = body[:index]
    if not name:
        raise ValueError("a route parameter has no name")
    checks: list[Check] = []
    while index < len(body) and body[index] == ":":
        start = index + 1
        index = start
        while index < len(body) and body[index] not in "(:=?":
            index += 1
        constraint = body[start:index]
        args: str | None = None
        if index < len(body) and body[index] == "(":
            close = _closing_paren(body, index)
            args = body[index + 1 : close]
            index = close + 1
        checks.append(_constraint(constraint, args))
    default: str | None = None
    optional = False
    rest = body[index:]
    if rest.startswith("="):
        default = rest[1:]
        optional = True
    elif rest == "?":
        optional = True
    elif rest:
        raise ValueError(f"cannot read route parameter {{{text}}} near {rest!r}")
    return _Param(name, group, optional or stars > 0, default, stars > 0, tuple(checks))


def _closing_paren(body: str, opening: int) -> int:
    # A regex argument may hold ')' itself: the argument ends at the ')' followed by the end
    # of the parameter or by the next ':', '=' or '?'.
    for index in range(opening + 1, len(body)):
        if body[index] == ")" and (index + 1 == len(body) or body[index + 1] in ":=?"):
            return index
    raise ValueError(f"unclosed '(' in route parameter {{{body}}}")


Part = str | _Param


def _split_segments(template: str) -> list[list[Part]]:
    segments: list[list[Part]] = [[]]
    literal: list[str] = []
    index = 0
    count = 0

    def flush() -> None:
        if literal:
            segments[-1].append("".join(literal))
            literal.clear()

    while index < len(template):
        char = template[index]
        if char == "{" and template.startswith("{{", index):
            literal.append("{")
            index += 2
        elif char == "}" and template.startswith("}}", index):
            literal.append("}")
            index += 2
        elif char == "{":
            text: list[str] = []
            index += 1
            while True:
                if index >= len(template):
                    raise ValueError(f"route template {template!r} has an unclosed '{{'")
                if template.startswith("}}", index):
                    text.append("}")
                    index += 2
                elif template[index] == "}":
                    index += 1
                    break
                else:
                    text.append(template[index])
                    index += 1
            flush()
            segments[-1].append(_parse_param("".join(text), f"p{count}"))
            count += 1
        elif char == "}":
            raise ValueError(f"route template {template!r} has an unmatched '}}'")
        elif char == "/":
            flush()
            segments.append([])
            index += 1
        else:
            literal.append(char)
            index += 1
    flush()
    return [segment for segment in segments if segment]


class RouteTemplate:
    """One compiled route template (route prefix included)."""

    __slots__ = ("_params", "literal_key", "precedence", "regex", "template")

    def __init__(self, template: str, prefix: str = "") -> None:
        """Compile ``prefix/template``; ``ValueError`` names what is wrong with it."""
        full = "/".join(part.strip("/") for part in (prefix, template) if part.strip("/"))
        self.template = "/" + full
        segments = _split_segments(full.removeprefix("~/"))
        pattern: list[str] = []
        params: list[_Param] = []
        precedence: list[int] = []
        for position, segment in enumerate(segments):
            last = position == len(segments) - 1
            pattern.append(self._segment_pattern(segment, last, full))
            precedence.append(self._segment_rank(segment))
            params.extend(part for part in segment if isinstance(part, _Param))
        self._params = tuple(params)
        self.precedence = tuple(precedence)
        self.literal_key: str | None = None
        self.regex: re.Pattern[str] | None = None
        if params:
            self.regex = re.compile("".join(pattern), re.IGNORECASE | re.DOTALL)
        else:
            self.literal_key = self.template.lower().rstrip("/")

    @staticmethod
    def _segment_pattern(segment: Sequence[Part], last: bool, template: str) -> str:
        if len(segment) == 1 and isinstance(segment[0], _Param):
            param = segment[0]
            if param.catch_all:
                if not last:
                    raise ValueError(
                        f"route template {template!r}: catch-all {{*{param.name}}} "
                        "must be the last segment"
                    )
                return f"(?:/(?P<{param.group}>.*))?"
            if param.optional:
                return f"(?:/(?P<{param.group}>[^/]+))?"
            return f"/(?P<{param.group}>[^/]+)"
        pieces: list[str] = []
        tail = segment[-1]
        optional_tail = isinstance(tail, _Param) and tail.optional and len(segment) > 1
        for index, part in enumerate(segment):
            if isinstance(part, str):
                pieces.append(re.escape(part))
                continue
            if part.catch_all:
                raise ValueError(
                    f"route template {template!r}: catch-all {{*{part.name}}} "
                    "must be a whole segment"
                )
            if index < len(segment) - 1:
                # Greedy, as ASP.NET matches complex segments from the right: with
                # '{name}.{ext}', 'a.b.txt' gives name 'a.b' and ext 'txt'.
                pieces.append(f"(?P<{part.group}>[^/]+{'?' if optional_tail else ''})")
            elif optional_tail and isinstance(segment[-2], str):
                # '{name}.{ext?}': the separator goes away with the optional value, and
                # the value does not contain the separator.
                separator = pieces.pop()
                value = f"(?:(?!{separator})[^/])+"
                pieces.append(f"(?:{separator}(?P<{part.group}>{value}))?")
            else:
                pieces.append(f"(?P<{part.group}>[^/]+)")
        return "/" + "".join(pieces)

    @staticmethod
    def _segment_rank(segment: Sequence[Part]) -> int:
        if len(segment) > 1:
            return _COMPLEX
        part = segment[0]
        if isinstance(part, str):
            return _LITERAL
        if part.catch_all:
            return _CATCH_ALL_CONSTRAINED if part.checks else _CATCH_ALL
        return _CONSTRAINED if part.checks else _PARAMETER

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of the template's parameters, in order."""
        return tuple(param.name for param in self._params)

    def match(self, path: str) -> dict[str, str] | None:
        """Route values when ``path`` (no trailing ``/``) matches, else ``None``.

        Absent optional parameters are left out unless they have a default.
        """
        if self.regex is None:
            return {} if path.lower() == self.literal_key else None
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        values: dict[str, str] = {}
        for param in self._params:
            value = found.group(param.group)
            if value is None or (param.catch_all and value == ""):
                if param.default is not None:
                    values[param.name] = param.default
                continue
            for check in param.checks:
                if not check(value):
                    return None
            values[param.name] = value
        return values

    def __repr__(self) -> str:
        return f"RouteTemplate({self.template!r})"


@dataclass(frozen=True, slots=True)
class Route(Generic[T]):
    """A template, the methods it answers (``None``: all) and what it leads to."""

    template: RouteTemplate
    methods: frozenset[str] | None
    target: T

    def allows(self, method: str) -> bool:
        """Whether ``method`` (upper case) is served by this route."""
        return self.methods is None or method in self.methods


class RouteTable(Generic[T]):
    """Routes in match order; ``match`` finds the first route for a method and path."""

    def __init__(self, routes: Iterable[Route[T]]) -> None:
        """Order the routes by precedence; ``ValueError`` when two would serve the same
        template and method."""
        ordered = sorted(routes, key=lambda route: route.template.precedence)
        seen: dict[str, list[Route[T]]] = {}
        for route in ordered:
            key = route.template.template.lower()
            for other in seen.get(key, []):
                if (
                    route.methods is None
                    or other.methods is None
                    or (route.methods & other.methods)
                ):
                    raise ValueError(
                        f"two functions serve route {route.template.template} for the same "
                        f"method(s): {other.target} and {route.target}"
                    )
            seen.setdefault(key, []).append(route)
        self._routes = tuple(ordered)
        self._literal: dict[str, tuple[Route[T], ...]] = {}
        for route in ordered:
            literal_key = route.template.literal_key
            if literal_key is not None:
                self._literal[literal_key] = (*self._literal.get(literal_key, ()), route)
        self._dynamic = tuple(route for route in ordered if route.template.regex is not None)
        # Recent answers for parameterised paths: a service sees the same few paths (one
        # endpoint, one model) over and over, and trying each route's regex costs more
        # than the rest of the match. Bounded: cleared when full.
        self._recent: dict[tuple[str, str], tuple[Route[T], dict[str, str]] | None] = {}

    def __iter__(self) -> Iterator[Route[T]]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def match(self, method: str, path: str) -> tuple[Route[T], dict[str, str]] | None:
        """The route serving ``method path`` and its route values, or ``None``.

        A path whose template matches only for other methods gives ``None`` too: Azure
        Functions answers 404 there, not 405.
        """
        if path.endswith("/"):
            path = path.rstrip("/")
        literal = self._literal.get(path.lower())
        if literal is not None:
            for route in literal:
                if route.allows(method):
                    return route, {}
        key = (method, path)
        if key in self._recent:
            found = self._recent[key]
            return None if found is None else (found[0], dict(found[1]))
        found = None
        for route in self._dynamic:
            if route.allows(method):
                values = route.template.match(path)
                if values is not None:
                    found = (route, values)
                    break
        if len(self._recent) >= _RECENT_PATHS:
            self._recent.clear()
        self._recent[key] = found
        return None if found is None else (found[0], dict(found[1]))
