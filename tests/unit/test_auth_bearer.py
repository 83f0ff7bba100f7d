"""The Authorization header in, the WWW-Authenticate challenge out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.auth import bearer_token, www_authenticate
from shared.errors import AuthenticationError, PermissionDeniedError

EXPECTED = "expected 'Authorization: Bearer <token>'"


@pytest.mark.parametrize(
    "value", ["Bearer abc.def.ghi", "bearer abc.def.ghi", "BEARER  abc.def.ghi "]
)
def test_bearer_token_is_taken_from_the_header(value: str) -> None:
    assert bearer_token(value) == "abc.def.ghi"


@pytest.mark.parametrize("value", [None, "", "   "])
def test_no_header_means_no_credentials(value: str | None) -> None:
    with pytest.raises(AuthenticationError) as info:
        bearer_token(value)
    assert info.value.error is None
    assert str(info.value) == f"no credentials; {EXPECTED}"
    assert www_authenticate(info.value) == "Bearer"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Basic dXNlcjpwYXNz", f"authorization scheme 'Basic' is not accepted; {EXPECTED}"),
        ("abc.def.ghi", f"authorization scheme 'abc.def.ghi' is not accepted; {EXPECTED}"),
        ("Bearer", f"no token after 'Bearer'; {EXPECTED}"),
        ("Bearer a b", f"the token contains spaces; {EXPECTED}"),
    ],
)
def test_garbled_header_is_an_invalid_token(value: str, message: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        bearer_token(value)
    assert (info.value.error, str(info.value)) == ("invalid_token", message)
    assert www_authenticate(info.value) == (
        f'Bearer error="invalid_token", error_description="{message}"'
    )


def test_www_authenticate_for_a_refused_token() -> None:
    exc = AuthenticationError("token expired at 2026-11-23T10:00:00Z")
    assert www_authenticate(exc) == (
        'Bearer error="invalid_token", error_description="token expired at 2026-11-23T10:00:00Z"'
    )


def test_www_authenticate_for_a_missing_role() -> None:
    exc = PermissionDeniedError("role 'Endpoint.Invoke' is required; the token has roles: (none)")
    assert www_authenticate(exc) == (
        'Bearer error="insufficient_scope", '
        "error_description=\"role 'Endpoint.Invoke' is required; the token has roles: (none)\""
    )


def test_www_authenticate_replaces_quotes_backslashes_and_non_ascii() -> None:
    exc = AuthenticationError("issuer 'a\"b\\c\r\nX-Evil: 1 é' is not accepted")
    assert www_authenticate(exc) == (
        'Bearer error="invalid_token", '
        'error_description="issuer \'a?b?c??X-Evil: 1 ?\' is not accepted"'
    )


@given(st.text())
def test_www_authenticate_is_always_one_printable_ascii_line(text: str) -> None:
    value = www_authenticate(AuthenticationError(text))
    assert all(" " <= ch <= "~" for ch in value)
    inner = value.removeprefix('Bearer error="invalid_token", error_description="')
    assert inner.endswith('"')
    # Every quote inside is escaped, so the quoted-string ends exactly at the end.
    body = inner[:-1]
    unescaped = body.replace("\\\\", "").replace('\\"', "")
    assert '"' not in unescaped


@given(st.text())
def test_any_header_value_gives_a_token_or_authentication_error(value: str) -> None:
    try:
        token = bearer_token(value)
    except AuthenticationError as exc:
        assert str(exc).endswith(EXPECTED)
    else:
        assert token and not any(ch.isspace() for ch in token)
