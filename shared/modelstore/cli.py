"""``scorefn models push|list``: packages in the model store.

    scorefn models push models/fraud [--version 2]   the latest version unless --version
    scorefn models push models/fraud/2               one version folder
    scorefn models list

The package is validated (``model.yaml`` parsed and checked) before anything is
uploaded; each blob carries its Content-MD5, which scoring apps verify on download.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.errors import PackageError
from shared.modelstore.blobstore import ModelStoreClient
from shared.pipeline.package import load_model_yaml, sort_versions

__all__ = ["add_models_parser", "package_folder"]


def package_folder(path: Path, version: str | None) -> Path:
    """The ``<name>/<version>`` folder meant by ``path`` (a model folder, or a version
    folder) and ``version`` (None = the latest); ``PackageError`` naming what exists."""
    if (path / "model.yaml").is_file():
        if version is not None and version != path.name:
            raise PackageError(str(path), "", f"is version {path.name!r}, not {version!r}")
        return path
    if not path.is_dir():
        raise PackageError(str(path), "", "folder not found")
    versions = sort_versions([p.name for p in path.iterdir() if (p / "model.yaml").is_file()])
    if not versions:
        raise PackageError(
            str(path), "", "no version folder with a model.yaml (expected <name>/<version>/)"
        )
    chosen = version or versions[-1]
    if chosen not in versions:
        raise PackageError(
            str(path), "", f"has no version {chosen!r}; versions: {', '.join(versions)}"
        )
    return path / chosen


def _client(args: argparse.Namespace) -> ModelStoreClient:
    from shared.settings import RouterSettings, ScoringSettings

    value = args.storage or ScoringSettings().model_store or RouterSettings().storage
    return ModelStoreClient.from_setting(value, args.container)


def _push(args: argparse.Namespace) -> int:
    folder = package_folder(args.path, args.version)
    spec = load_model_yaml(folder)  # a wrong package is refused before any upload
    count = _client(args).push(folder, spec.name, spec.version, overwrite=args.overwrite)
    print(f"pushed {spec.name}:{spec.version} ({count} files) to {args.container}/")
    return 0


def _list(args: argparse.Namespace) -> int:
    packages = _client(args).list_packages()
    for (name, version), listing in sorted(packages.items()):
        print(f"{name}:{version}\t{len(listing.files)} files\t{listing.size} bytes")
    return 0


def add_models_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``scorefn models`` on the CLI's subparsers."""
    models = sub.add_parser("models", help="model packages in the model store (blob)")
    msub = models.add_subparsers(dest="action", required=True)
    for p in (
        push := msub.add_parser("push", help="upload one package version"),
        lst := msub.add_parser("list", help="list stored packages"),
    ):
        p.add_argument(
            "--storage",
            help="connection string or blob service URL (default: SCOREFN_MODEL_STORE, "
            "AzureWebJobsStorage, else Azurite)",
        )
        p.add_argument("--container", default="models", help="container (default: models)")
    push.add_argument("path", type=Path, help="models/<name> or models/<name>/<version>")
    push.add_argument("--version", help="version folder to push (default: the latest)")
    push.add_argument("--overwrite", action="store_true", help="replace a stored version")
    push.set_defaults(func=_push)
    lst.set_defaults(func=_list)
