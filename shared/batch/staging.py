"""Per-chunk staged results: ``<job>/<chunk>.arrow`` (predictions, Arrow IPC file with
zstd buffers), ``<job>/<chunk>.errors.jsonl`` (only when the chunk has error rows) and
``<job>/<chunk>.json`` (the manifest, written last).

Names depend only on the job and the chunk, so a retried chunk overwrites its own parts
with the same content. Row numbers in parts are chunk-local; commit adds the chunk's
first row.
"""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
from azure.storage.blob import ContainerClient

from shared.batch.naming import chunk_blob
from shared.telemetry.tracing import traced

__all__ = ["ChunkManifest", "write_chunk", "read_manifest", "read_part", "read_errors"]

ChunkManifest = dict[str, Any]
"""``{"chunk", "rows", "predicted", "errors", "seconds"}`` of one scored chunk."""


_IPC = pa.ipc.IpcWriteOptions(compression="zstd")
"""zstd-compressed buffers: staged parts are about a third of their raw size (row
numbers, labels and repeated strings compress well), for a few ms per chunk; less to
write now and to read back at commit."""


def _arrow_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=_IPC) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


@traced("scorefn.blob.write")
def write_chunk(
    staging: ContainerClient,
    job: str,
    chunk: int,
    table: pa.Table,
    errors: list[tuple[int, str]],
    manifest: ChunkManifest,
) -> None:
    """Upload a chunk's predictions, errors and (last) manifest, overwriting."""
    staging.upload_blob(chunk_blob(job, chunk, "arrow"), _arrow_bytes(table), overwrite=True)
    if errors:  # commit reads a chunk's errors only when its manifest counts some
        lines = b"".join(orjson.dumps({"row": r, "reason": why}) + b"\n" for r, why in errors)
        staging.upload_blob(chunk_blob(job, chunk, "errors.jsonl"), lines, overwrite=True)
    staging.upload_blob(chunk_blob(job, chunk, "json"), orjson.dumps(manifest), overwrite=True)


def read_manifest(staging: ContainerClient, job: str, chunk: int) -> ChunkManifest:
    """The manifest of a scored chunk."""
    data = staging.download_blob(chunk_blob(job, chunk, "json")).readall()
    manifest: ChunkManifest = orjson.loads(data)
    return manifest


def read_part(staging: ContainerClient, job: str, chunk: int) -> pa.Table:
    """The staged predictions of a chunk."""
    data = staging.download_blob(chunk_blob(job, chunk, "arrow")).readall()
    with pa.ipc.open_file(pa.py_buffer(data)) as reader:
        return reader.read_all()


def read_errors(staging: ContainerClient, job: str, chunk: int) -> list[tuple[int, str]]:
    """The staged error rows of a chunk (chunk-local row numbers)."""
    data = staging.download_blob(chunk_blob(job, chunk, "errors.jsonl")).readall()
    out: list[tuple[int, str]] = []
    for line in data.splitlines():
        if line:
            item = orjson.loads(line)
            out.append((int(item["row"]), str(item["reason"])))
    return out
