"""Stopping child processes the same way everywhere: SIGTERM, wait, then SIGKILL."""

from __future__ import annotations

import signal
import subprocess

__all__ = ["stop_process"]


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """Ask ``process`` to stop (SIGTERM), wait up to ``timeout`` seconds, then kill it.

    Returns its exit status. A process that already exited is left as it is.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
