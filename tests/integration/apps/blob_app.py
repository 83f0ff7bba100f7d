"""A blob trigger that upper-cases each new blob into another container."""

from __future__ import annotations

import azure.functions as func

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
