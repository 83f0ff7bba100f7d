"""A queue trigger writing a blob per message, and an HTTP function enqueueing messages."""

from __future__ import annotations

import json

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

SEEN: list[dict[str, object]] = []
"""One record per invocation of ``work`` (the test reads it; the host runs in-process)."""


@app.queue_trigger(arg_name="msg", queue_name="jobs", connection="AzureWebJobsStorage")
@app.blob_output(arg_name="result", path="job-results/{id}.json", connection="AzureWebJobsStorage")
def work(msg: func.QueueMessage, result: func.Out[str]) -> None:
    body = msg.get_body().decode()
    SEEN.append({"id": msg.id, "body": body, "dequeue_count": msg.dequeue_count})
    if body.startswith("fail"):
        raise RuntimeError(f"cannot process {body}")
    result.set(json.dumps({"body": body, "dequeue_count": msg.dequeue_count}))


@app.route(route="enqueue", methods=["POST"])
@app.queue_output(arg_name="out", queue_name="jobs", connection="AzureWebJobsStorage")
def enqueue(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    out.set(req.get_body().decode())
    return func.HttpResponse(status_code=202)
