"""One error hierarchy for scorefn.

Every error a user can cause or see is one of these; foreign exceptions are
translated exactly once, at the boundary where they occur, with ``raise X(...) from exc``.
Transport layers map classes to statuses in one table (``shared.protocol.status``),
walking the class MRO, so domain code never knows about HTTP.

    ScorefnError
    ├── PackageError                 a model package on disk is wrong (load time)
    ├── RequestError                 the caller sent something we refuse (4xx)
    │   ├── DecodeError              body is not valid JSON / binary framing / payload shape
    │   ├── InputError               tensors do not match the model signature
    │   │   ├── MissingInputError
    │   │   ├── UnexpectedInputError
    │   │   ├── DtypeError
    │   │   ├── ShapeError
    │   │   ├── NonFiniteError
    │   │   └── EmptyBatchError
    │   ├── PayloadTooLargeError     body over the configured limit
    │   ├── NotFoundError            unknown model / version / route
    │   ├── AuthenticationError      no credentials, or a token / key that is refused (401)
    │   └── PermissionDeniedError    authenticated, but without the role needed (403)
    ├── OverloadedError              queue full; carries retry_after (s)
    ├── NotReadyError                model still loading; carries retry_after (s)
    ├── DeadlineExceededError        request took longer than its timeout
    ├── UpstreamError                a service behind the router (a deployment, the
    │                                endpoint config store) could not be reached (502)
    └── ExecutionError               the runtime failed on valid input (server fault)
"""

from __future__ import annotations

__all__ = [
    "ScorefnError",
    "PackageError",
    "RequestError",
    "DecodeError",
    "InputError",
    "MissingInputError",
    "UnexpectedInputError",
    "DtypeError",
    "ShapeError",
    "NonFiniteError",
    "EmptyBatchError",
    "PayloadTooLargeError",
    "NotFoundError",
    "AuthenticationError",
    "PermissionDeniedError",
    "BatchInputError",
    "OverloadedError",
    "NotReadyError",
    "DeadlineExceededError",
    "UpstreamError",
    "ExecutionError",
]


class ScorefnError(Exception):
    """Base of every scorefn error. ``str(err)`` is the user-facing message."""


class PackageError(ScorefnError):
    """A model package is wrong: names the file, the field and what was expected."""

    def __init__(self, file: str, field: str, problem: str) -> None:
        self.file = file
        self.field = field
        self.problem = problem
        where = f"{file}: {field}" if field else file
        super().__init__(f"{where}: {problem}")


class RequestError(ScorefnError):
    """The caller sent something that is refused; retrying it unchanged will fail again."""


class DecodeError(RequestError):
    """The request body cannot be decoded (bad JSON, bad binary framing, bad payload layout)."""


class InputError(RequestError):
    """Decoded tensors do not fit the model's signature."""

    def __init__(self, input_name: str, message: str) -> None:
        self.input_name = input_name
        super().__init__(message)


class MissingInputError(InputError):
    """A required input is absent."""


class UnexpectedInputError(InputError):
    """An input that the model does not declare was sent."""


class DtypeError(InputError):
    """An input has a dtype that cannot be cast safely to the declared one."""


class ShapeError(InputError):
    """An input has the wrong rank or a wrong fixed dimension, or inputs disagree on rows."""


class NonFiniteError(InputError):
    """An input holds NaN or infinity and the package's policy rejects them."""


class EmptyBatchError(InputError):
    """An input has zero rows."""


class PayloadTooLargeError(RequestError):
    """The request body is larger than the configured limit."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"request body is {size} bytes; the limit is {limit} bytes")


class NotFoundError(RequestError):
    """An unknown model, version or resource was named."""


class AuthenticationError(RequestError):
    """The caller sent no credentials, or a token or key that is refused.

    ``error_description`` says why (``str(err)`` is the same text). ``error`` is the
    OAuth 2.0 bearer error code (RFC 6750): ``"invalid_token"`` for a refused token, or
    ``None`` when the request carried no credentials at all, in which case RFC 6750 says
    the challenge carries no error code.
    """

    def __init__(self, error_description: str, *, error: str | None = "invalid_token") -> None:
        self.error_description = error_description
        self.error = error
        super().__init__(error_description)


class PermissionDeniedError(RequestError):
    """The caller is authenticated but lacks the role the operation needs; the message
    names the role required and what the caller has."""


class BatchInputError(RequestError):
    """A batch input file, or one chunk of it, cannot be scored as a whole (unknown
    extension, empty file, header only, corrupt Parquet, columns that do not match the
    model's inputs, a blob changed during its job). Bad *rows* are not errors: they go to
    the job's ``errors.jsonl``. The message names the file, what came and what is allowed."""


class OverloadedError(ScorefnError):
    """The server is at capacity; the caller should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class NotReadyError(ScorefnError):
    """The model is not loaded yet; the caller should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class DeadlineExceededError(ScorefnError):
    """The request did not finish within its timeout."""


class UpstreamError(ScorefnError):
    """A service the router depends on (a deployment, the endpoint config store) could
    not be reached or failed; the message names it and what went wrong."""


class ExecutionError(ScorefnError):
    """The inference runtime failed on input that passed validation."""
