"""`scorefn up` (what `make up` runs): the printed curls score (through the router with a
fresh token, and on a deployment directly), Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import random
import shlex
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from shared.localhost.ports import port_open

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BASE_PORTS = (7070, 7071, 7072, 7073, 10000, 10001, 10002)


def _free_shift() -> int:
    for _ in range(50):
        # Stay below the ephemeral range (32768+), where client sockets and free_ports()
        # draw from, so a port found free is not taken before the stack binds it.
        shift = random.randrange(11_000, 22_000)
        if not any(port_open("127.0.0.1", p + shift, timeout=0.1) for p in BASE_PORTS):
            return shift
    raise RuntimeError("no free port shift found")


def _session_pids(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,sid="], capture_output=True, text=True).stdout
    return [int(p) for p, s in (line.split() for line in out.splitlines()) if int(s) == sid]


def test_up_serves_printed_curl_and_ctrl_c_cleans_up(tmp_path: Path) -> None:
    if not (ROOT / "models" / "fraud" / "1" / "model.onnx").is_file():
        pytest.skip("example models not built (make models)")
    shift = _free_shift()
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "scorefn"), "up", "--port-shift", str(shift),
         "--run-dir", str(tmp_path / "run")],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        text = ""
        deadline = time.monotonic() + 90
        while "Ctrl-C stops everything" not in text:
            assert proc.poll() is None, text
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
            text = (tmp_path / "up.log").read_text()
        curls = [line.strip() for line in text.splitlines() if line.strip().startswith("curl ")]
        router_curl, direct_curl = curls
        assert f"127.0.0.1:{7071 + shift}/api/endpoints/fraud/score" in router_curl
        assert "-H 'Authorization: Bearer ey" in router_curl
        assert f"127.0.0.1:{7072 + shift}/api/score" in direct_curl
        for curl in curls:
            scored = subprocess.run(
                [*shlex.split(curl), "-D", "-"], capture_output=True, timeout=30, check=True
            )
            head, _, body = scored.stdout.partition(b"\r\n\r\n")
            assert orjson.loads(body)["predictions"] == ["highly_suspicious"], scored.stdout
            assert b"x-deployment: " in head.lower()
        # scorefn, Azurite, dev issuer, two deployments, router
        assert len(_session_pids(proc.pid)) >= 6
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        code = proc.wait(timeout=60)
        log.close()
    assert code == 0
    deadline = time.monotonic() + 10
    while _session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _session_pids(proc.pid) == []
    assert not any(port_open("127.0.0.1", p + shift, timeout=0.2) for p in BASE_PORTS)
