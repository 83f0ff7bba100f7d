"""The router's OpenAPI document lists every HTTP route the router blueprint serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shared.routing.openapi import router_openapi_document

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json
import function_app
routes = []
for f in function_app.app.get_functions():
    trigger = f.get_trigger()
    if trigger.get_binding_name() == "httpTrigger":
        routes.append({"route": trigger.route, "methods": sorted(str(m).split(".")[-1].lower() for m in trigger.methods)})
print(json.dumps(routes))
"""


def _served_routes() -> list[dict[str, object]]:
    env = {**os.environ, "APP_ROLE": "router"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    routes: list[dict[str, object]] = json.loads(out.stdout)
    return routes


def test_every_router_route_and_method_is_documented() -> None:
    paths = router_openapi_document(version="test")["paths"]
    missing: list[str] = []
    for served in _served_routes():
        route = str(served["route"])
        if route.endswith("openapi.json"):  # the document itself
            continue
        if route.endswith("{*path}"):  # the v2 catch-all is documented by its concrete paths
            prefix = "/api/" + route.removesuffix("{*path}")
            if not any(path.startswith(prefix) for path in paths):
                missing.append(route)
            continue
        path = "/api/" + route
        methods = served["methods"]
        assert isinstance(methods, list)
        for method in methods:
            if method not in paths.get(path, {}):
                missing.append(f"{method.upper()} {path}")
    assert missing == []
