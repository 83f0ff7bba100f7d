"""Load a model package folder into a validated ``PackageSpec``.

Two layouts are accepted:
- ``models/<name>/<version>/model.yaml`` (+ ONNX files and hook modules), and
- a Triton model repository entry ``models/<name>/config.pbtxt`` + ``<version>/model.onnx``
  (ensembles too), handled by ``shared.pipeline.triton``.

A wrong package fails here with a ``PackageError`` naming the file, the field and what
was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from shared.errors import PackageError
from shared.pipeline.spec import PackageSpec

__all__ = ["load_package", "load_model_yaml", "discover_packages", "sort_versions"]


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_model_yaml(folder: Path) -> PackageSpec:
    """Parse and validate ``folder/model.yaml``; check the files it names exist."""
    file = folder / "model.yaml"
    if not file.is_file():
        raise PackageError(
            str(file), "", "file not found; a package folder needs model.yaml or a config.pbtxt"
        )
    try:
        raw: Any = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PackageError(str(file), "", f"invalid YAML{where}: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise PackageError(str(file), "", f"invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise PackageError(
            str(file), "", f"expected a mapping at the top level, got {type(raw).__name__}"
        )
    raw = {**raw, "root": str(folder)}
    try:
        spec = PackageSpec.model_validate(raw)
    except ValidationError as exc:
        err, *rest = exc.errors()
        first = tuple(err["loc"])
        # pydantic also reports a parent container as failing when a child fails: not news.
        others = [e for e in rest if tuple(e["loc"]) != first[: len(e["loc"])]]
        field = _loc(first)
        more = f" (and {len(others)} more problems)" if others else ""
        # A whole-package check (empty location) would repeat the entire file as its input.
        got = f"; got {err.get('input')!r}" if first else ""
        raise PackageError(str(file), field, f"{err['msg']}{got}{more}") from exc
    if spec.name != folder.parent.name:
        raise PackageError(
            str(file),
            "name",
            f"is {spec.name!r} but the package lives in {folder.parent.name}/; "
            f"expected {folder.parent.name!r}",
        )
    if spec.version != folder.name:
        raise PackageError(
            str(file),
            "version",
            f"is {spec.version!r} but the version folder is {folder.name}/; "
            f"expected {folder.name!r}",
        )
    for i, step in enumerate(spec.steps):
        for kind, rel in (("onnx", step.onnx), ("python", step.python)):
            if rel is not None and not (folder / rel).is_file():
                raise PackageError(
                    str(file), f"steps[{i}].{kind}", f"file {rel!r} not found in {folder}"
                )
    return spec


def load_package(folder: Path, version: str | None = None) -> PackageSpec:
    """Load one package: a ``<name>/<version>`` folder with model.yaml, or a Triton model
    folder with config.pbtxt (``version`` picks its version; None = latest)."""
    from shared.pipeline import triton

    if triton.is_triton_model(folder):
        return triton.load_triton_package(folder, version)
    return load_model_yaml(folder)


def sort_versions(versions: list[str]) -> list[str]:
    """Ascending; numeric versions numerically, then the others by name."""
    return sorted(versions, key=lambda v: (0, int(v), "") if v.isdigit() else (1, 0, v))


def discover_packages(models_dir: Path) -> list[PackageSpec]:
    """Every package under ``models_dir``: all versions of model.yaml packages and of
    Triton models. Folders that are neither are skipped."""
    from shared.pipeline import triton

    specs: list[PackageSpec] = []
    if not models_dir.is_dir():
        raise PackageError(str(models_dir), "", "models folder not found")
    for entry in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        if triton.is_triton_model(entry):
            for v in triton.triton_versions(entry):
                specs.append(triton.load_triton_package(entry, v))
            continue
        versions = [p.name for p in entry.iterdir() if (p / "model.yaml").is_file()]
        for v in sort_versions(versions):
            specs.append(load_model_yaml(entry / v))
    return specs
