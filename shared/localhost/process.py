"""Child processes this program starts and must stop: the same stop everywhere
(SIGTERM, wait, then SIGKILL) and the same ``with`` / pid / liveness surface."""

from __future__ import annotations

import abc
import signal
import subprocess
from types import TracebackType
from typing import Self

__all__ = ["ChildProcess", "StartStop", "stop_process"]


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


class StartStop(abc.ABC):
    """Something started and stopped: ``with`` starts it and stops it again."""

    @abc.abstractmethod
    def start(self, timeout: float = 30.0) -> Self:
        """Launch it and wait until it is usable."""

    @abc.abstractmethod
    def stop(self, timeout: float = 15.0) -> object:
        """Stop it, waiting up to ``timeout`` seconds."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ChildProcess(StartStop):
    """Base of the wrappers around one child process (``_process`` once started)."""

    _process: subprocess.Popen[bytes] | None = None

    @abc.abstractmethod
    def start(self, timeout: float = 30.0) -> Self:
        """Launch the child and wait until it is usable."""

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Returns the exit status."""
        process = self._process
        return None if process is None else stop_process(process, timeout)

    @property
    def pid(self) -> int | None:
        """The child's process id once started."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """Whether the child is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status once the child has exited."""
        return None if self._process is None else self._process.poll()
