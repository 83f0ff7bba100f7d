"""Model packages in a blob container: ``<name>/<version>/<files>`` (the layout of
``models/`` on disk). Listing, verified download and push.

Azure SDK exceptions are translated here, once: an unreachable or failing store becomes
``NotReadyError`` (503 + ``Retry-After``; the caller retries), a blob whose bytes do not
match its size or Content-MD5 becomes ``PackageError``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import ContainerClient, ContentSettings, LinearRetry

from shared.errors import NotReadyError, PackageError
from shared.storage_clients import StorageClients

__all__ = ["BlobFile", "ModelStoreClient", "PackageListing", "PUSH_MARKER", "STORE_RETRY_AFTER_S"]

log = logging.getLogger(__name__)

#: ``Retry-After`` of a request that needs the store while it cannot be reached.
STORE_RETRY_AFTER_S: Final = 5.0
_MANIFEST: Final = "model.yaml"
_SKIP_PARTS: Final = frozenset({"__pycache__", ".ipynb_checkpoints"})
PUSH_MARKER: Final = ".pushed-"
"""Name prefix of the empty blob a push writes last into ``<name>/<version>/``, named by
the digest of what it pushed: pushing other content under the same version changes the
container's blob names, which the index's cheap names-only probe notices."""


@dataclass(frozen=True)
class BlobFile:
    """One file of a stored package: its path inside the package, size, MD5, ETag."""

    path: str
    size: int
    md5: bytes | None
    etag: str


@dataclass(frozen=True)
class PackageListing:
    """One stored package version as listed: its files (a package exists once its
    ``model.yaml`` does; push uploads it last)."""

    name: str
    version: str
    files: tuple[BlobFile, ...]

    @property
    def key(self) -> str:
        """``name:version``."""
        return f"{self.name}:{self.version}"

    @functools.cached_property
    def digest(self) -> str:
        """Short hash of every file's path, ETag and MD5: changes when any file does, so a
        re-pushed version is a new cache entry and never mixes with the old one."""
        h = hashlib.sha256()
        for f in sorted(self.files, key=lambda f: f.path):
            h.update(f"{f.path}\0{f.etag}\0{(f.md5 or b'').hex()}\n".encode())
        return h.hexdigest()[:16]

    @property
    def size(self) -> int:
        """Bytes of all files."""
        return sum(f.size for f in self.files)

    @property
    def onnx_size(self) -> int:
        """Bytes of the ONNX files."""
        return sum(f.size for f in self.files if f.path.endswith(".onnx"))


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


class ModelStoreClient:
    """The ``models`` container. Build once per process (``from_setting``)."""

    def __init__(self, container: ContainerClient) -> None:
        self.container = container
        self.where = f"{container.url}"

    @classmethod
    def from_setting(
        cls,
        value: str,
        container: str = "models",
        *,
        timeout_s: float = 5.0,
        client_id: str | None = None,
    ) -> ModelStoreClient:
        """A client from ``SCOREFN_MODEL_STORE``: an https blob service URL (reached with
        the managed identity ``client_id``, else ``DefaultAzureCredential``) or a
        connection string (``shared.storage_clients``). Few retries and short connect
        timeouts: a dead store must turn into a quick 503, not a request held for minutes."""
        options: dict[str, Any] = {
            # The storage SDK's default retry waits 15 s, then 18 s, ... before failing.
            "retry_policy": LinearRetry(backoff=1, random_jitter_range=0, retry_total=2),
            "connection_timeout": timeout_s,
            "read_timeout": 30,
        }
        clients = StorageClients.for_blobs(
            value, client_id=client_id, options=options, setting="SCOREFN_MODEL_STORE"
        )
        return cls(clients.container(container))

    def _unreachable(self, what: str, exc: Exception) -> NotReadyError:
        log.warning("model store %s: %s failed: %s", self.where, what, exc)
        if isinstance(exc, HttpResponseError) and exc.status_code is not None:
            # It answered, and refused: say what it said (a 403 is a missing role).
            error_code = getattr(exc, "error_code", None)
            code = f" {error_code}" if error_code else ""
            return NotReadyError(
                f"model store {self.where} refused {what}: {exc.status_code}{code}",
                retry_after=STORE_RETRY_AFTER_S,
            )
        return NotReadyError(
            f"model store {self.where} cannot be reached ({what}: {type(exc).__name__}); "
            "retry later",
            retry_after=STORE_RETRY_AFTER_S,
        )

    # ------------------------------------------------------------------ listing
    def list_names(self) -> frozenset[str]:
        """Every blob name in the container (an absent container has none): a probe about
        a tenth of the CPU of ``list_packages`` (no properties are parsed)."""
        try:
            return frozenset(self.container.list_blob_names())
        except ResourceNotFoundError:
            return frozenset()
        except AzureError as exc:
            raise self._unreachable("listing packages", exc) from exc

    def list_packages(self) -> dict[tuple[str, str], PackageListing]:
        """Every package version in the container (an absent container is empty)."""
        files: dict[tuple[str, str], list[BlobFile]] = {}
        try:
            for blob in self.container.list_blobs():
                parts = PurePosixPath(blob.name).parts
                if len(parts) < 3 or parts[-1].startswith(PUSH_MARKER):
                    continue
                settings = blob.content_settings
                md5 = bytes(settings.content_md5) if settings and settings.content_md5 else None
                files.setdefault((parts[0], parts[1]), []).append(
                    BlobFile("/".join(parts[2:]), int(blob.size), md5, str(blob.etag))
                )
        except ResourceNotFoundError:
            return {}
        except AzureError as exc:
            raise self._unreachable("listing packages", exc) from exc
        return {
            key: PackageListing(key[0], key[1], tuple(found))
            for key, found in files.items()
            if any(f.path == _MANIFEST for f in found)
        }

    # ------------------------------------------------------------------ download
    def download(self, listing: PackageListing, dest: Path) -> None:
        """Write every file of ``listing`` under ``dest``, each checked against its listed
        size and Content-MD5 (and ETag: a file replaced since listing is refused)."""
        for f in listing.files:
            blob = f"{listing.name}/{listing.version}/{f.path}"
            try:
                data = self.container.download_blob(
                    blob, etag=f.etag, match_condition=MatchConditions.IfNotModified
                ).readall()
            except (ResourceModifiedError, ResourceNotFoundError) as exc:
                raise NotReadyError(
                    f"model '{listing.name}' version '{listing.version}': {f.path} changed "
                    "in the model store while it was being downloaded; retry",
                    retry_after=1,
                ) from exc
            except AzureError as exc:
                raise self._unreachable(f"downloading {blob}", exc) from exc
            if len(data) != f.size:
                raise PackageError(
                    f"{self.where}/{blob}", "", f"downloaded {len(data)} bytes, listed {f.size}"
                )
            if f.md5 is not None and _md5(data) != f.md5:
                raise PackageError(
                    f"{self.where}/{blob}",
                    "Content-MD5",
                    f"the downloaded bytes hash to {base64.b64encode(_md5(data)).decode()} but "
                    f"the blob's Content-MD5 is {base64.b64encode(f.md5).decode()}: the package "
                    "is corrupt; push it again",
                )
            target = dest / f.path
            if not target.resolve().is_relative_to(dest.resolve()):
                raise PackageError(f"{self.where}/{blob}", "", "path leaves the package folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    # ------------------------------------------------------------------ push
    def push(self, folder: Path, name: str, version: str, *, overwrite: bool = False) -> int:
        """Upload ``folder`` as ``<name>/<version>/``, each blob with its Content-MD5;
        ``model.yaml`` last, so readers never list a half-pushed package. Returns the
        number of files. ``PackageError`` if the version exists and not ``overwrite``."""
        prefix = f"{name}/{version}/"
        try:
            with contextlib.suppress(ResourceExistsError):
                self.container.create_container()
            existing = [b.name for b in self.container.list_blobs(name_starts_with=prefix)]
            stored = [n for n in existing if not _is_marker(n)]
            if stored and not overwrite:
                raise PackageError(
                    f"{self.where}/{prefix}",
                    "",
                    f"version {version!r} of model {name!r} is already in the store "
                    f"({len(stored)} files); push another version or pass --overwrite",
                )
            files = sorted(_package_files(folder), key=lambda p: (p.name == _MANIFEST, str(p)))
            pushed = hashlib.sha256()
            for path in files:
                data = path.read_bytes()
                rel = path.relative_to(folder).as_posix()
                md5 = _md5(data)
                pushed.update(f"{rel}\0{md5.hex()}\n".encode())
                self.container.upload_blob(
                    prefix + rel,
                    data,
                    overwrite=True,
                    content_settings=ContentSettings(content_md5=bytearray(md5)),
                )
            # last, after model.yaml: a probe that sees this name sees the whole package
            marker = prefix + PUSH_MARKER + pushed.hexdigest()[:16]
            self.container.upload_blob(marker, b"", overwrite=True)
            uploaded = {prefix + p.relative_to(folder).as_posix() for p in files} | {marker}
            for stale in set(existing) - uploaded:
                self.container.delete_blob(stale)
        except AzureError as exc:
            raise self._unreachable(f"pushing {prefix}", exc) from exc
        return len(files)


def _is_marker(blob_name: str) -> bool:
    return PurePosixPath(blob_name).name.startswith(PUSH_MARKER)


def _package_files(folder: Path) -> Iterator[Path]:
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if (
            path.is_file()
            and not (set(rel.parts) & _SKIP_PARTS)
            and path.suffix != ".pyc"
            and not path.name.startswith(PUSH_MARKER)  # a downloaded package's marker
        ):
            yield path
