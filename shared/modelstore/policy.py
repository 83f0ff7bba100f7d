"""Which models and versions a deployment serves from the model store (Triton's
``version_policy`` per model, plus a name pattern).

``SCOREFN_MODEL_STORE_MODELS`` is a comma-separated list of rules ``pattern[:policy]``:

* ``pattern``: a model name or an ``fnmatch`` pattern (``sales-*``, ``*``);
* ``policy``: ``latest`` (the default: the highest version), ``all``, or specific
  versions joined by ``|`` (``1|3``).

The first rule whose pattern matches a model's name decides its versions; a model no
rule matches is not served. Empty = ``*:latest``. Pure functions: the index applies them
to each blob listing.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.pipeline.package import sort_versions

__all__ = ["ModelRule", "parse_model_rules", "servable_versions"]

_POLICIES = ("latest", "all")


@dataclass(frozen=True)
class ModelRule:
    """One rule: a name pattern and its version policy (``latest``, ``all`` or versions)."""

    pattern: str
    policy: str = "latest"
    versions: tuple[str, ...] = ()

    def matches(self, name: str) -> bool:
        """Whether the rule applies to the model ``name``."""
        return fnmatch.fnmatchcase(name, self.pattern)

    def choose(self, versions: Sequence[str]) -> list[str]:
        """The versions of ``versions`` this rule serves, ascending."""
        ordered = sort_versions(list(versions))
        if self.policy == "all":
            return ordered
        if self.policy == "latest":
            return ordered[-1:]
        return [v for v in ordered if v in self.versions]


def parse_model_rules(text: str) -> list[ModelRule]:
    """``'fraud:1|2, sales-*:all, *'`` -> rules; ``ValueError`` naming a bad rule."""
    rules: list[ModelRule] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        pattern, _, policy = item.partition(":")
        pattern, policy = pattern.strip(), policy.strip() or "latest"
        if not pattern:
            raise ValueError(f"model rule {item!r} has no name pattern; expected pattern[:policy]")
        if policy in _POLICIES:
            rules.append(ModelRule(pattern, policy))
            continue
        versions = tuple(v.strip() for v in policy.split("|"))
        if not all(versions) or any("/" in v for v in versions):
            raise ValueError(
                f"model rule {item!r}: policy {policy!r} is not 'latest', 'all' or versions "
                "joined by '|' (e.g. 1|3)"
            )
        rules.append(ModelRule(pattern, "versions", versions))
    return rules or [ModelRule("*")]


def servable_versions(
    rules: Sequence[ModelRule], available: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """``{name: [versions...]}`` of ``available`` that ``rules`` serve (models whose rule
    leaves no version out entirely are dropped)."""
    out: dict[str, list[str]] = {}
    for name in sorted(available):
        rule = next((r for r in rules if r.matches(name)), None)
        if rule is None:
            continue
        chosen = rule.choose(available[name])
        if chosen:
            out[name] = chosen
    return out
