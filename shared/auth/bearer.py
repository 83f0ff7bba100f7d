"""The bearer scheme (RFC 6750): the token out of ``Authorization``, and the challenge back.

Transport-free: the router passes the header value in and writes the returned
``WWW-Authenticate`` value out. Endpoint keys travel the same way as tokens
(``Authorization: Bearer <key>``, as in Azure ML online endpoints).
"""

from __future__ import annotations

import re
from typing import Final

from shared.auth.quoting import quoted
from shared.errors import AuthenticationError, PermissionDeniedError

__all__ = ["EXPECTED_HEADER", "bearer_token", "www_authenticate"]

EXPECTED_HEADER: Final = "expected 'Authorization: Bearer <token>'"
"""The tail of every message about a missing or garbled ``Authorization`` header."""

# RFC 6750 restricts error_description to printable ASCII; anything else becomes '?'.
_NOT_PRINTABLE_ASCII: Final = re.compile(r"[^\x20-\x7e]")


def bearer_token(authorization: str | None) -> str:
    """The credential in an ``Authorization: Bearer <credential>`` header value.

    ``None`` or a blank value means no credentials (``AuthenticationError`` with no
    error code, per RFC 6750 §3.1); any other shape is refused as ``invalid_token``.
    The scheme name is case-insensitive (RFC 9110 §11.1).
    """
    if authorization is None or not authorization.strip():
        raise AuthenticationError(f"no credentials; {EXPECTED_HEADER}", error=None)
    parts = authorization.split()
    if parts[0].lower() != "bearer":
        raise AuthenticationError(
            f"authorization scheme {quoted(parts[0])} is not accepted; {EXPECTED_HEADER}"
        )
    if len(parts) == 1:
        raise AuthenticationError(f"no token after 'Bearer'; {EXPECTED_HEADER}")
    if len(parts) > 2:
        raise AuthenticationError(f"the token contains spaces; {EXPECTED_HEADER}")
    return parts[1]


def www_authenticate(exc: AuthenticationError | PermissionDeniedError) -> str:
    """The ``WWW-Authenticate`` value answering ``exc`` (the 401 or 403 it maps to).

    ``Bearer error="invalid_token", error_description="..."`` for a refused credential,
    plain ``Bearer`` when none was sent, and ``Bearer error="insufficient_scope", ...``
    for a missing role. The description is the error's message restricted to the
    characters RFC 6750 allows in ``error_description`` (printable ASCII except ``"``
    and ``\\``): every other character becomes ``?``.
    """
    if isinstance(exc, PermissionDeniedError):
        error: str | None = "insufficient_scope"
        description = str(exc)
    else:
        error = exc.error
        description = exc.error_description
    if error is None:
        return "Bearer"
    return f'Bearer error="{error}", error_description="{_quoted_string(description)}"'


def _quoted_string(text: str) -> str:
    return _NOT_PRINTABLE_ASCII.sub("?", text).replace("\\", "?").replace('"', "?")
