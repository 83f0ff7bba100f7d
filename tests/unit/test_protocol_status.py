"""The error -> HTTP status table and the error responses built from it."""

from __future__ import annotations

import math

import orjson
import pytest

from shared import errors
from shared.errors import (
    AuthenticationError,
    DeadlineExceededError,
    DecodeError,
    DtypeError,
    EmptyBatchError,
    ExecutionError,
    InputError,
    MissingInputError,
    NonFiniteError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    PackageError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RequestError,
    ScorefnError,
    ShapeError,
    UnexpectedInputError,
)
from shared.protocol.status import (
    STATUS,
    error_body,
    error_response,
    retry_after,
    status_for,
)

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (DecodeError("bad json"), 400),
        (InputError("x", "bad input"), 400),
        (MissingInputError("x", "missing"), 400),
        (UnexpectedInputError("x", "unexpected"), 400),
        (DtypeError("x", "dtype"), 400),
        (ShapeError("x", "shape"), 400),
        (NonFiniteError("x", "nan"), 400),
        (EmptyBatchError("x", "empty"), 400),
        (RequestError("refused"), 400),
        (PayloadTooLargeError(10, 5), 413),
        (NotFoundError("no model 'q'"), 404),
        (DeadlineExceededError("took 31 s; the timeout is 30 s"), 504),
        (ExecutionError("runtime failed"), 500),
        (PackageError("model.yaml", "inputs", "is empty"), 500),
        (ScorefnError("something"), 500),
    ],
)
def test_status_and_body(exc: ScorefnError, status: int) -> None:
    assert status_for(exc) == status
    assert error_response(exc) == (status, JSON, orjson.dumps({"error": str(exc)}))


def test_every_error_class_has_a_status() -> None:
    classes = [getattr(errors, n) for n in errors.__all__]
    for cls in classes:
        assert any(c in STATUS for c in cls.__mro__), cls


def test_most_specific_class_wins() -> None:
    class MissingModelVersion(NotFoundError):
        pass

    class Throttled(OverloadedError):
        pass

    assert status_for(MissingModelVersion("no version 9")) == 404
    status, headers, body = error_response(Throttled("busy", retry_after=0.2))
    assert (status, headers, body) == (
        429,
        {"Content-Type": "application/json", "Retry-After": "1"},
        b'{"error":"busy"}',
    )


@pytest.mark.parametrize(
    ("seconds", "header"),
    [
        (0.2, "1"),
        (1.0, "1"),
        (2.01, "3"),
        (0.0, "1"),
        (-4.0, "1"),
        (math.inf, "1"),
        (math.nan, "1"),
    ],
)
def test_overloaded_has_retry_after_in_whole_seconds(seconds: float, header: str) -> None:
    exc = OverloadedError("queue full: 4096 rows waiting", retry_after=seconds)
    assert error_response(exc) == (
        429,
        {"Content-Type": "application/json", "Retry-After": header},
        b'{"error":"queue full: 4096 rows waiting"}',
    )


def test_not_ready_has_retry_after() -> None:
    exc = NotReadyError("model fraud:2 is loading", retry_after=4.5)
    assert retry_after(exc) == 5
    assert error_response(exc) == (
        503,
        {"Content-Type": "application/json", "Retry-After": "5"},
        b'{"error":"model fraud:2 is loading"}',
    )


def test_no_retry_after_for_other_errors() -> None:
    assert retry_after(DecodeError("x")) is None
    assert retry_after(ValueError("x")) is None


@pytest.mark.parametrize(
    "exc", [ValueError("secret path /etc/x"), KeyError("k"), RuntimeError(), KeyboardInterrupt()]
)
def test_foreign_exceptions_are_500_without_details(exc: BaseException) -> None:
    assert status_for(exc) == 500
    assert error_response(exc) == (500, JSON, b'{"error":"internal error"}')


def test_empty_message_falls_back_to_the_class_name() -> None:
    assert error_response(DeadlineExceededError()) == (
        504,
        JSON,
        b'{"error":"DeadlineExceededError"}',
    )


def test_error_body_escapes() -> None:
    assert orjson.loads(error_body('input "x"\n')) == {"error": 'input "x"\n'}


def test_authentication_error_carries_a_bearer_challenge() -> None:
    exc = AuthenticationError("token expired at 2024-01-01T00:00:00Z")
    assert error_response(exc) == (
        401,
        {
            "Content-Type": "application/json",
            "WWW-Authenticate": (
                'Bearer error="invalid_token", '
                'error_description="token expired at 2024-01-01T00:00:00Z"'
            ),
        },
        b'{"error":"token expired at 2024-01-01T00:00:00Z"}',
    )


def test_permission_denied_carries_insufficient_scope() -> None:
    exc = PermissionDeniedError("role 'Endpoint.Admin' is required; the token has roles: (none)")
    status, headers, _ = error_response(exc)
    assert (status, headers["WWW-Authenticate"]) == (
        403,
        'Bearer error="insufficient_scope", '
        "error_description=\"role 'Endpoint.Admin' is required; the token has roles: (none)\"",
    )


def test_bearer_challenge_without_credentials_has_no_error_code() -> None:
    exc = AuthenticationError("no Authorization header", error=None)
    status, headers, _ = error_response(exc)
    assert (status, headers["WWW-Authenticate"]) == (401, "Bearer")


def test_bearer_challenge_keeps_the_header_value_safe() -> None:
    exc = AuthenticationError('audience "a\\b"\r\nX-Evil: 1 é is not accepted')
    assert error_response(exc)[1]["WWW-Authenticate"] == (
        'Bearer error="invalid_token", '
        'error_description="audience ?a?b???X-Evil: 1 ? is not accepted"'
    )
