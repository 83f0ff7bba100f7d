"""The one Azure Functions app. ``APP_ROLE`` (router | scoring | all) picks the blueprints.

Blueprints are imported only for the role that needs them, so a router app never
imports onnxruntime or numpy.
"""

from __future__ import annotations

import azure.functions as func

from shared.settings import AppSettings, TelemetrySettings
from shared.telemetry.setup import setup_telemetry

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

_role = AppSettings().app_role
# Before the blueprints: their import starts model loading, which records metrics.
telemetry = setup_telemetry(TelemetrySettings(), role=_role)
if _role in ("scoring", "all"):
    from functions.score_batch import bp as score_batch_bp
    from functions.score_online import bp as score_online_bp

    app.register_functions(score_online_bp)
    app.register_functions(score_batch_bp)
if _role in ("router", "all"):
    from functions.router import bp as router_bp
    from functions.router import openapi_bp as router_openapi_bp

    app.register_functions(router_bp)
    if _role == "router":  # with "all", /api/openapi.json is the scoring app's
        app.register_functions(router_openapi_bp)
