"""A blob trigger that upper-cases each new blob into another container, and one whose
parameter is an SDK-type ``BlobClient`` (a reference to the blob, no content)."""

from __future__ import annotations

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_sdk
from azure.storage.blob import BlobClient

app = func.FunctionApp()

SEEN: list[tuple[str | None, int | None, bytes]] = []
"""(name, length, content) per invocation."""


@app.blob_trigger(
    arg_name="blob",
    path="batch-input/{name}",
    connection="AzureWebJobsStorage",
    source=func.BlobSource.EVENT_GRID,
)
@app.blob_output(arg_name="out", path="batch-output/{name}", connection="AzureWebJobsStorage")
def on_blob(blob: func.InputStream, out: func.Out[bytes]) -> None:
    content = blob.read()
    SEEN.append((blob.name, blob.length, content))
    if content.startswith(b"fail"):
        raise ValueError(f"refusing {blob.name}")
    out.set(content.upper())


CLIENTS: list[BlobClient] = []
"""The client each invocation of ``on_blob_client`` got."""


@app.blob_trigger(
    arg_name="client", path="sdk-input/{name}", connection="AzureWebJobsStorage"
)
def on_blob_client(client: blob_sdk.BlobClient) -> None:
    CLIENTS.append(client)
