"""A queue trigger for a host whose host.json says messageEncoding: none."""

from __future__ import annotations

import azure.functions as func

app = func.FunctionApp()

BODIES: list[bytes] = []


@app.queue_trigger(arg_name="msg", queue_name="plain-jobs", connection="AzureWebJobsStorage")
def plain(msg: func.QueueMessage) -> None:
    BODIES.append(msg.get_body())
