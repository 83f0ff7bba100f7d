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
    │   └── NotFoundError            unknown model / version / route
    ├── OverloadedError              queue full; carries retry_after (s)
    ├── NotReadyError                model still loading; carries retry_after (s)
    ├── DeadlineExceededError        request took longer than its timeout
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
    "OverloadedError",
    "NotReadyError",
    "DeadlineExceededError",
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


class ExecutionError(ScorefnError):
    """The inference runtime failed on input that passed validation."""
