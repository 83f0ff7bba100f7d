"""Fixtures of the IaC tests: the Bicep files parsed by pycep-parser in the IaC venv.

pycep-parser and checkov live in ``.venv-iac`` (their pins clash with the app's, see
../shared/ENV.md; ``make test`` creates it). Without it these tests skip with that reason.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BICEP = ROOT / "infra" / "bicep"
IAC_PYTHON = ROOT / ".venv-iac" / "bin" / "python"

# pycep-parser 0.5.1 predates the `extension` statement (Microsoft Graph extension); the
# parse drops exactly those lines and parses the rest of the file.
_PARSE = """
import json, re, sys
from pathlib import Path
from pycep import BicepParser
parser = BicepParser()
out = {}
for name in sys.argv[1:]:
    text = Path(name).read_text()
    text = re.sub(r"(?m)^extension '[^']+'\\s*$", "// extension (not parsed by pycep 0.5.1)", text)
    try:
        out[name] = {"ok": parser.parse(text=text)}
    except Exception as exc:
        out[name] = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(out, default=str))
"""


def bicep_files() -> list[Path]:
    """Every .bicep file under infra/bicep."""
    return sorted(BICEP.rglob("*.bicep"))


def require_iac_venv() -> None:
    """Skip unless the IaC venv (pycep-parser, checkov) exists."""
    if not IAC_PYTHON.exists():
        pytest.skip(".venv-iac is absent (`make test` creates it: checkov==3.3.30 with pycep-parser)")


@pytest.fixture(scope="session")
def parsed() -> dict[str, dict[str, Any]]:
    """relative path -> {"ok": pycep JSON} or {"error": message}."""
    require_iac_venv()
    files = [str(p) for p in bicep_files()]
    done = subprocess.run(
        [str(IAC_PYTHON), "-c", _PARSE, *files],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    raw: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return {str(Path(k).relative_to(BICEP)): v for k, v in raw.items()}


@pytest.fixture(scope="session")
def templates(parsed: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """relative path -> pycep JSON (only files that parsed)."""
    return {k: v["ok"] for k, v in parsed.items() if "ok" in v}
