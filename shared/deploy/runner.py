"""Running a deploy plan: placeholders, ``az`` subprocesses, and the two in-process steps.

Thin on purpose: every decision is in :mod:`shared.deploy.plan`. Captured values come from
a step's stdout (JSON outputs of a Bicep deployment are flattened: ``routerName``,
``tablesUrl``, ``scoringApps.<deployment>.url`` ...). A ``secret`` capture is never printed;
commands are printed before their placeholders are filled.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
import shlex
import subprocess
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from shared.deploy.plan import Step
from shared.routing.endpoint import EndpointSpec, load_endpoint

__all__ = [
    "ROUTER_EXCLUDED_REQUIREMENTS",
    "apply_endpoint",
    "flatten_outputs",
    "format_plan",
    "package_router",
    "resolve",
    "run_plan",
    "with_deployment_urls",
]

ROUTER_EXCLUDED_REQUIREMENTS = frozenset(
    {
        # the router never imports onnxruntime, numpy or batch formats (ARCHITECTURE.md)
        "onnxruntime-gpu", "numpy", "pyarrow", "tritonclient", "protobuf",
        # model building and tests
        "scikit-learn", "skl2onnx", "onnx", "pytest", "pytest-asyncio", "hypothesis",
        "ruff", "mypy", "types-pyyaml",
    }
)  # fmt: skip
"""Distributions of requirements.txt left out of the router package."""

_PLACEHOLDER = re.compile(r"\{([A-Za-z][A-Za-z0-9_.\-]*)\}")

Runner = Callable[[Sequence[str]], str]


def format_plan(steps: Sequence[Step]) -> str:
    """The plan as ``--dry-run`` prints it: numbered titles and shell-quoted commands."""
    lines: list[str] = []
    for i, step in enumerate(steps, 1):
        note = "" if step.action == "command" else "  (in-process)"
        lines.append(f"# {i}. {step.title}{note}")
        lines.append(shlex.join(step.argv))
    return "\n".join(lines)


def flatten_outputs(outputs: Mapping[str, Any]) -> dict[str, str]:
    """``properties.outputs`` of a deployment -> placeholder values.

    ``{"routerName": {"value": "x"}}`` -> ``{"routerName": "x"}``; a list of objects with a
    ``deployment`` key (``scoringApps``) -> ``scoringApps.<deployment>.<field>``.
    """
    flat: dict[str, str] = {}
    for key, wrapped in outputs.items():
        value = wrapped.get("value") if isinstance(wrapped, Mapping) else wrapped
        if isinstance(value, list):
            for item in value:
                if isinstance(item, Mapping) and "deployment" in item:
                    for field, v in item.items():
                        flat[f"{key}.{item['deployment']}.{field}"] = str(v)
        elif value is not None:
            flat[key] = str(value)
    return flat


def resolve(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """``argv`` with every ``{name}`` replaced; ``KeyError`` names a missing placeholder."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"placeholder {{{name}}} has no value; known: {', '.join(values)}")
        return values[name]

    return [_PLACEHOLDER.sub(one, arg) for arg in argv]


def _subprocess(argv: Sequence[str], *, cwd: Path) -> str:
    # stdout is captured (outputs, ids, keys); stderr (az progress, errors) passes through.
    done = subprocess.run(list(argv), check=True, cwd=cwd, stdout=subprocess.PIPE, text=True)
    return done.stdout


def with_deployment_urls(spec: EndpointSpec, urls: Mapping[str, str]) -> EndpointSpec:
    """``spec`` with each deployment's ``url`` set from ``urls`` (deployment -> base URL).

    ``KeyError`` when a deployment has no URL.
    """
    missing = [d.name for d in spec.deployments if d.name not in urls]
    if missing:
        raise KeyError(f"no Azure URL for deployment(s) {', '.join(missing)}")
    deployments = tuple(d.model_copy(update={"url": urls[d.name]}) for d in spec.deployments)
    return EndpointSpec.model_validate(
        {**spec.model_dump(), "deployments": [d.model_dump() for d in deployments]}
    )


def apply_endpoint(spec_path: Path, tables_url: str, values: Mapping[str, str]) -> None:
    """Store the spec with the deployed URLs, authenticating as the deployer (Entra)."""
    from azure.identity import DefaultAzureCredential

    from shared.routing.store import EndpointStore

    spec = load_endpoint(spec_path)
    urls = {d.name: values[f"scoringApps.{d.name}.url"] for d in spec.deployments}
    store = EndpointStore.from_url(tables_url, DefaultAzureCredential())
    try:
        stored, issued = store.apply(with_deployment_urls(spec, urls))
    finally:
        store.close()
    print(f"endpoint {spec.name!r} stored (etag {stored.etag})")
    if issued is not None:
        print("endpoint keys (shown once; only their hashes are stored):")
        print(f"  primary:   {issued.primary}")
        print(f"  secondary: {issued.secondary}")


def _ignored(rel: str, patterns: Sequence[str]) -> bool:
    parts = rel.split("/")
    for pattern in patterns:
        p = pattern.rstrip("/")
        if fnmatch.fnmatch(rel, p) or any(fnmatch.fnmatch(part, p) for part in parts):
            return True
        if any(fnmatch.fnmatch("/".join(parts[: i + 1]), p) for i in range(len(parts))):
            return True
    return False


def package_router(root: Path, out: Path) -> list[str]:
    """Zip the router app from ``root`` into ``out``, honouring ``.funcignore``.

    ``requirements.txt`` in the zip is the project's minus
    :data:`ROUTER_EXCLUDED_REQUIREMENTS`, so the remote build installs no onnxruntime.
    Returns the archive's file names.
    """
    patterns = [
        line.strip()
        for line in (root / ".funcignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    requirements = []
    for line in (root / "requirements.txt").read_text(encoding="utf-8").splitlines():
        name = re.split(r"[\[=<>~ ;]", line.strip(), maxsplit=1)[0].lower()
        if name and not line.startswith("#") and name in ROUTER_EXCLUDED_REQUIREMENTS:
            continue
        requirements.append(line)
    out.parent.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if not path.is_file() or rel == "requirements.txt" or _ignored(rel, patterns):
                continue
            archive.write(path, rel)
            names.append(rel)
        archive.writestr("requirements.txt", "\n".join(requirements) + "\n")
        names.append("requirements.txt")
    return names


def run_plan(
    steps: Sequence[Step],
    *,
    root: Path,
    run: Runner | None = None,
    out: TextIO = sys.stdout,
) -> dict[str, str]:
    """Execute ``steps`` in order, commands in ``root``; returns the captured values.

    ``run`` executes one command and returns its stdout (default: a subprocess in ``root``).
    A failing command raises ``subprocess.CalledProcessError`` and stops the rollout
    (every step is safe to re-run: Bicep deployments are idempotent).
    """
    execute = run or functools.partial(_subprocess, cwd=root)
    values: dict[str, str] = {}
    for i, step in enumerate(steps, 1):
        print(f"# {i}. {step.title}", file=out)
        print(shlex.join(step.argv), file=out, flush=True)
        argv = resolve(step.argv, values)
        if step.action == "package-router":
            package_router(root, root / argv[-1])
            continue
        if step.action == "apply-endpoint":
            apply_endpoint(Path(argv[3]), argv[-1], values)
            continue
        stdout = execute(argv)
        if step.capture == "outputs":
            values.update(flatten_outputs(json.loads(stdout)))
        elif step.capture:
            values[step.capture] = stdout.strip()
    return values
