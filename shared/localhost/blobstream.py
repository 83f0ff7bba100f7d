"""A blob trigger's ``InputStream`` that reads the blob lazily, with ranged reads.

The Functions host hands a Python blob trigger an ``azure.functions.blob.InputStream``:
``name``, ``uri``, ``length``, ``blob_properties``, ``metadata`` and ``read()``. In Azure
the host downloads the whole blob before the call (and refuses blobs over 2 GB); locally
``BlobStream`` keeps the same contract but downloads nothing until ``read()`` is called,
and then only the bytes asked for, so a function that needs only the blob's name, URL and
size (the batch planner) starts at once whatever the blob's size, with bounded memory.

Reads are pinned to the version that fired the trigger (its ETag): a blob overwritten or
deleted since raises ``OSError`` naming it, instead of returning a mix of two versions.
"""

from __future__ import annotations

import io
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.functions.blob import InputStream
from azure.storage.blob import BlobClient

__all__ = ["BlobStream"]


class BlobStream(InputStream):
    """An ``InputStream`` over one blob version; each ``read`` is one ranged download."""

    def __init__(
        self,
        blob: BlobClient,
        *,
        etag: str,
        name: str,
        uri: str,
        length: int,
        blob_properties: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            data=b"",
            name=name,
            uri=uri,
            length=length,
            blob_properties=blob_properties,
            metadata=metadata,
        )
        self._blob = blob
        self._etag = etag
        self._pos = 0

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        size = self.length or 0
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes from the current position (all that is left for -1)."""
        total = self.length or 0
        end = total if size is None or size < 0 else min(total, self._pos + size)
        if end <= self._pos:
            return b""
        try:
            data: bytes = self._blob.download_blob(
                offset=self._pos,
                length=end - self._pos,
                etag=self._etag,
                match_condition=MatchConditions.IfNotModified,
            ).readall()
        except ResourceModifiedError as exc:
            raise OSError(
                f"blob {self.name} changed after it fired the trigger (ETag {self._etag})"
            ) from exc
        except ResourceNotFoundError as exc:
            raise OSError(f"blob {self.name} was deleted after it fired the trigger") from exc
        self._pos += len(data)
        return data

    read1 = read

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)
