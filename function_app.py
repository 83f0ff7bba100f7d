"""The one Azure Functions app. ``APP_ROLE`` (router | scoring | all) picks the blueprints.

Blueprints are imported only for the role that needs them, so a router app never
imports onnxruntime or numpy.
"""

from __future__ import annotations

import azure.functions as func

from shared.settings import AppSettings

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

_role = AppSettings().app_role
if _role in ("scoring", "all"):
    from functions.score_online import bp as score_online_bp

    app.register_functions(score_online_bp)
