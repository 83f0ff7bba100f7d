"""Local copies of stored packages: ``<root>/<digest>/<name>/<version>/``.

A package is downloaded (and verified, file by file, by ``ModelStoreClient.download``)
into a temporary folder, then renamed into place: a folder under its digest is always
complete, so a restart or a second process reuses it without downloading. The digest
changes whenever any file of the version is pushed again, so an old copy is never mixed
with new files.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from pathlib import Path

from shared.modelstore.blobstore import ModelStoreClient, PackageListing

__all__ = ["PackageCache"]


class PackageCache:
    """Verified local copies of packages under ``root``."""

    def __init__(self, root: Path, client: ModelStoreClient) -> None:
        self.root = root
        self.client = client

    def path(self, listing: PackageListing) -> Path:
        """Where ``listing`` lives once fetched."""
        return self.root / listing.digest / listing.name / listing.version

    def cached(self, listing: PackageListing) -> bool:
        """Whether ``listing`` is already on local disk."""
        return self.path(listing).is_dir()

    def fetch(self, listing: PackageListing) -> Path:
        """The local folder of ``listing``, downloaded and verified first if needed.
        Raises ``PackageError`` (corrupt) or ``NotReadyError`` (store unreachable)."""
        final = self.path(listing)
        if final.is_dir():
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".tmp-{uuid.uuid4().hex}"
        try:
            self.client.download(listing, staging / listing.name / listing.version)
            with contextlib.suppress(OSError):  # another process renamed its copy first
                staging.rename(self.root / listing.digest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    def remove(self, listing: PackageListing) -> None:
        """Drop the local copy of ``listing`` (a copy that failed to load)."""
        shutil.rmtree(self.root / listing.digest, ignore_errors=True)
