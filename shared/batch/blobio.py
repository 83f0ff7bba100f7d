"""Blobs as files: ranged reads for pyarrow's Parquet reader, block-staged writes.

``BlobRangeReader`` reads one blob version (ETag-guarded: a blob changed since planning
raises ``BatchInputError``) with a ranged download per ``read``, so opening a Parquet
file reads its footer and one row group reads only that group's bytes.
``BlockBlobWriter`` stages ``block_size`` blocks with ids derived from their index and
commits the list on ``commit()``: a retried writer replaces the blob with the same
content, and a writer closed without ``commit()`` leaves the blob as it was.
"""

from __future__ import annotations

import base64
import io

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobClient

from shared.errors import BatchInputError
from shared.telemetry.tracing import traced

__all__ = ["BlobRangeReader", "BlockBlobWriter", "read_range"]


@traced("scorefn.blob.read")
def read_range(blob: BlobClient, etag: str, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` of the version ``etag`` of ``blob``."""
    if length <= 0:
        return b""
    try:
        return blob.download_blob(
            offset=offset,
            length=length,
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        ).readall()
    except ResourceModifiedError as exc:
        raise BatchInputError(
            f"{blob.container_name}/{blob.blob_name}: the blob changed since its job was "
            f"planned (ETag {etag}); the new upload is scored as a job of its own"
        ) from exc
    except ResourceNotFoundError as exc:
        raise BatchInputError(
            f"{blob.container_name}/{blob.blob_name}: the blob was deleted during its job"
        ) from exc


class BlobRangeReader(io.RawIOBase):
    """A read-only, seekable file over one blob version."""

    def __init__(self, blob: BlobClient, *, etag: str, size: int) -> None:
        super().__init__()
        self._blob = blob
        self._etag = etag
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        data = read_range(self._blob, self._etag, self._pos, end - self._pos)
        self._pos += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class BlockBlobWriter(io.RawIOBase):
    """A write-only file that becomes a block blob on ``commit()``."""

    def __init__(self, blob: BlobClient, *, block_size: int = 8 * 1024 * 1024) -> None:
        super().__init__()
        self._blob = blob
        self._block_size = block_size
        self._buffer = bytearray()
        self._blocks: list[BlobBlock] = []
        self._written = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._buffer += data
        self._written += len(data)
        while len(self._buffer) >= self._block_size:
            self._stage(bytes(self._buffer[: self._block_size]))
            del self._buffer[: self._block_size]
        return len(data)

    def _stage(self, data: bytes) -> None:
        block_id = base64.b64encode(f"block-{len(self._blocks):08d}".encode()).decode()
        self._blob.stage_block(block_id, data)
        self._blocks.append(BlobBlock(block_id=block_id))

    def commit(self) -> None:
        """Stage what is buffered and commit the block list: the blob now holds it all."""
        if self._buffer or not self._blocks:
            self._stage(bytes(self._buffer))
            self._buffer.clear()
        self._blob.commit_block_list(self._blocks)
