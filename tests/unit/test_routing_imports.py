"""The router app stays light: importing it never pulls in onnxruntime or numpy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import function_app
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("onnxruntime", "numpy", "onnx", "pyarrow"))
names = [f.get_function_name() for f in function_app.app.get_functions()]
print(json.dumps({"heavy": heavy, "functions": names}))
"""


def test_router_role_imports_no_onnxruntime_or_numpy() -> None:
    env = {**os.environ, "APP_ROLE": "router"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout)
    assert result == {
        "heavy": [],
        "functions": [
            "endpoint_score",
            "endpoint_v2",
            "endpoint_describe",
            "endpoint_traffic",
            "endpoint_feedback",
            "rollout_gates",
            "endpoint_jobs",
            "endpoint_job",
            "endpoint_job_resume",
            "router_openapi",
            "router_openapi_root",
        ],
    }
