"""The one table from scorefn errors to HTTP statuses, and the error response built from it.

``status_for`` walks the exception's MRO, so the most specific class listed wins
(``NotFoundError`` is a ``RequestError`` but answers 404, not 400). Errors the caller
should retry (``OverloadedError``, ``NotReadyError``) also carry ``Retry-After``, and a
401 (``AuthenticationError``) carries the ``WWW-Authenticate`` Bearer challenge that
RFC 6750 asks for.
Exceptions outside ``shared.errors`` are bugs: they answer 500 with a fixed message,
so nothing of their text leaks.
"""

from __future__ import annotations

import math
from typing import Any, Final

from shared.auth.bearer import www_authenticate
from shared.errors import (
    AuthenticationError,
    BatchInputError,
    DeadlineExceededError,
    DecodeError,
    ExecutionError,
    InputError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    PackageError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RequestError,
    ScorefnError,
    UpstreamError,
)
from shared.protocol.json_body import dump_json

__all__ = [
    "ERROR_RESPONSE",
    "STATUS",
    "INTERNAL_ERROR",
    "status_for",
    "retry_after",
    "error_body",
    "error_response",
]

#: scorefn error class -> HTTP status. Looked up along the exception's MRO.
STATUS: Final[dict[type[ScorefnError], int]] = {
    DecodeError: 400,
    InputError: 400,
    PayloadTooLargeError: 413,
    NotFoundError: 404,
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    BatchInputError: 400,
    RequestError: 400,
    OverloadedError: 429,
    NotReadyError: 503,
    DeadlineExceededError: 504,
    UpstreamError: 502,
    ExecutionError: 500,
    PackageError: 500,  # a package on disk is wrong: the server's fault, not the caller's
    ScorefnError: 500,
}

#: The message of a 500 for an exception that is not a ``ScorefnError``.
INTERNAL_ERROR: Final = "internal error"


def status_for(exc: BaseException) -> int:
    """The HTTP status for ``exc``: its most specific class in ``STATUS``, else 500."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500


def retry_after(exc: BaseException) -> int | None:
    """Seconds for ``Retry-After`` (``retry_after`` rounded up, at least 1), or None
    when ``exc`` is not an error the caller should retry."""
    if not isinstance(exc, OverloadedError | NotReadyError):
        return None
    seconds = exc.retry_after
    if not math.isfinite(seconds):
        return 1
    return max(1, math.ceil(seconds))


#: OpenAPI response object for the error body every route answers with.
ERROR_RESPONSE: Final[dict[str, Any]] = {
    "description": 'error: {"error": "..."}',
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    },
}


def error_body(message: str) -> bytes:
    """The protocol's error object, ``{"error": message}``, as JSON."""
    return dump_json({"error": message})


def error_response(exc: BaseException) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and JSON body answering ``exc``.

    A ``ScorefnError`` answers with its own message; anything else with 500 and
    ``{"error": "internal error"}`` (log it where it is caught, not here).
    """
    headers = {"Content-Type": "application/json"}
    if not isinstance(exc, ScorefnError):
        return 500, headers, error_body(INTERNAL_ERROR)
    wait = retry_after(exc)
    if wait is not None:
        headers["Retry-After"] = str(wait)
    if isinstance(exc, AuthenticationError | PermissionDeniedError):
        headers["WWW-Authenticate"] = www_authenticate(exc)
    return status_for(exc), headers, error_body(str(exc) or type(exc).__name__)
