"""A scoring deployment for router strategy tests: ``/api/score`` answers
``{"predictions": [<deployment>]}``; every ``STUB_FAIL_EVERY``-th request (0 = never)
gets a 500, so a candidate fails on exactly 1/N of its requests."""

from __future__ import annotations

import itertools
import json
import os

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

_NAME = os.environ.get("STUB_DEPLOYMENT", "stub")
_FAIL_EVERY = int(os.environ.get("STUB_FAIL_EVERY", "0"))
_COUNTER = itertools.count(1)


@app.route(route="score", methods=["POST"])
def score(req: func.HttpRequest) -> func.HttpResponse:
    n = next(_COUNTER)
    if _FAIL_EVERY and n % _FAIL_EVERY == 0:
        return func.HttpResponse(json.dumps({"error": "internal error"}), status_code=500,
                                 mimetype="application/json")  # fmt: skip
    return func.HttpResponse(json.dumps({"predictions": [_NAME]}), mimetype="application/json")


@app.route(route="v2/health/ready", methods=["GET"])
def ready(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"ready": True}), mimetype="application/json")
