"""Command line of the local Functions host: ``python -m shared.localhost``.

::

    python -m shared.localhost --app function_app:app --host 127.0.0.1 --port 7072 \\
        [--storage CONNSTR] [--host-json host.json] [--keys KEY1,KEY2] [--master-key KEY] \\
        [--max-body-bytes N] [--host-id ID] [--app-dir DIR] [--blob-poll-interval S] \\
        [--shutdown-timeout S] [--log-level INFO]

Every flag can also come from a ``SCOREFN_LOCALHOST_<FLAG>`` environment variable (flags
win). ``--storage`` also sets ``AzureWebJobsStorage`` for the app before it is imported.
Logs every function it serves at start-up; SIGINT or SIGTERM shuts it down gracefully
(listeners stopped, running invocations awaited) with exit status 0. Exit status 2 means the
app or its configuration could not be loaded, 1 that the port could not be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from pydantic import ValidationError

from shared.localhost.settings import DEFAULT_CONNECTION, LocalHostSettings

__all__ = ["main", "parser"]

logger = logging.getLogger("shared.localhost")


def parser() -> argparse.ArgumentParser:
    """The argument parser (flags default to ``None``: unset flags leave settings alone)."""
    p = argparse.ArgumentParser(
        prog="python -m shared.localhost",
        description="Serve an Azure Functions Python-v2 FunctionApp locally.",
    )
    p.add_argument("--app", help="FunctionApp as module:attribute (default function_app:app)")
    p.add_argument("--app-dir", help="directory put first on sys.path (default .)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default 7071; 0 picks a free one)")
    p.add_argument("--storage", help="connection string for AzureWebJobsStorage")
    p.add_argument("--host-json", help="host.json path (default ./host.json)")
    p.add_argument("--keys", help="comma-separated function keys; none: auth levels open")
    p.add_argument("--master-key", help="master key (authLevel admin)")
    p.add_argument("--max-body-bytes", type=int, help="largest request body; larger get 413")
    p.add_argument("--host-id", help="host id naming blob receipts (default from --app)")
    p.add_argument("--blob-poll-interval", type=float, help="seconds between container scans")
    p.add_argument("--shutdown-timeout", type=float, help="seconds to wait for invocations")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING... (default INFO)")
    return p


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Client libraries log every HTTP call at INFO: the router's forwarding and the
    # storage pollers would flood the log (and cost CPU per request).
    for noisy in ("azure", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the host until SIGINT/SIGTERM; the process exit status."""
    # Until serve() installs its own handlers, SIGTERM interrupts like Ctrl-C does, so a
    # stop during start-up (the app import can take seconds) still exits cleanly.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(argv)
    except KeyboardInterrupt:
        logger.info("Stopped before serving")
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run(argv: Sequence[str] | None) -> int:
    arguments = vars(parser().parse_args(argv))
    overrides: dict[str, Any] = {
        name: value for name, value in arguments.items() if value is not None
    }
    try:
        settings = LocalHostSettings(**overrides)
    except ValidationError as exc:
        _configure_logging("INFO")
        logger.error("Invalid settings: %s", exc)
        return 2
    _configure_logging(settings.log_level)
    if settings.storage is not None:
        LocalHostSettings.export({DEFAULT_CONNECTION: settings.storage.get_secret_value()})
    # Imported here, not at the top: the SIGTERM handler in main() is then in place before
    # the half second it takes to import uvicorn and the storage SDK.
    from shared.localhost.host import LocalHost

    try:
        host = LocalHost.from_settings(settings)
    except (ImportError, ValueError, OSError) as exc:
        logger.error("Cannot serve %s: %s", settings.app, exc)
        return 2
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            runner.run(host.serve(host=settings.host, port=settings.port, handle_signals=True))
        except OSError as exc:  # typically: the port is taken
            logger.error("Cannot serve on %s:%s: %s", settings.host, settings.port, exc)
            return 1
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (as uvicorn's ``loop="auto"`` would pick), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
