"""The pure token decisions: header, claims, policy, authority, roles. No I/O at all."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.auth import Authority, Principal, TokenPolicy, check_claims, check_header, require_role
from shared.errors import AuthenticationError, PermissionDeniedError
from shared.routing.endpoint import AuthSpec

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
APP_ID_URI = "api://scorefn"
CALLER = "2d4d11a2-f814-46a7-890a-274a72a7309e"
EXP = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
NOW = EXP - 1800
POLICY = TokenPolicy(tenants=(TENANT,), audiences=(APP_ID_URI, CLIENT_ID))
V2_ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"


def claims(**changes: Any) -> dict[str, Any]:
    """A v2.0 app-only Entra access token's claims; ``None`` removes a claim."""
    base: dict[str, Any] = {
        "aud": APP_ID_URI,
        "iss": V2_ISSUER,
        "iat": EXP - 3600,
        "nbf": EXP - 3600,
        "exp": EXP,
        "azp": CALLER,
        "azpacr": "1",
        "oid": "b7a2a4a9-0c7c-4b8f-9a8e-2bd5f6a1c001",
        "roles": ["Endpoint.Invoke"],
        "sub": "b7a2a4a9-0c7c-4b8f-9a8e-2bd5f6a1c001",
        "tid": TENANT,
        "ver": "2.0",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def refusal(token_claims: dict[str, Any], policy: TokenPolicy = POLICY, now: float = NOW) -> str:
    with pytest.raises(AuthenticationError) as info:
        check_claims(token_claims, policy, now)
    assert info.value.error == "invalid_token"
    return info.value.error_description


# --- header ---------------------------------------------------------------------------


def test_rs256_header_gives_its_kid() -> None:
    assert check_header({"alg": "RS256", "kid": "abc", "typ": "JWT"}) == "abc"


@pytest.mark.parametrize(
    ("alg", "shown"),
    [("none", "'none'"), ("HS256", "'HS256'"), ("RS512", "'RS512'"), ("PS256", "'PS256'")],
)
def test_only_rs256_is_allowed(alg: str, shown: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        check_header({"alg": alg, "kid": "abc"})
    assert str(info.value) == f"algorithm {shown} is not allowed; only RS256"


def test_header_without_alg_is_refused() -> None:
    with pytest.raises(AuthenticationError) as info:
        check_header({"kid": "abc"})
    assert str(info.value) == "algorithm None is not allowed; only RS256"


@pytest.mark.parametrize("header", [{"alg": "RS256"}, {"alg": "RS256", "kid": ""}])
def test_header_without_kid_is_refused(header: dict[str, Any]) -> None:
    with pytest.raises(AuthenticationError) as info:
        check_header(header)
    assert str(info.value) == "token header has no 'kid'; cannot choose a signing key"


# --- claims -----------------------------------------------------------------------------


def test_valid_app_token_gives_principal() -> None:
    assert check_claims(claims(), POLICY, NOW) == Principal(
        subject="b7a2a4a9-0c7c-4b8f-9a8e-2bd5f6a1c001",
        object_id="b7a2a4a9-0c7c-4b8f-9a8e-2bd5f6a1c001",
        tenant=TENANT,
        app_id=CALLER,
        roles=("Endpoint.Invoke",),
        scopes=(),
        version="2.0",
        expires_at=EXP,
    )


def test_user_token_scopes_are_split_and_the_client_id_audience_is_accepted() -> None:
    principal = check_claims(
        claims(aud=CLIENT_ID, roles=None, scp="Endpoint.Invoke user_impersonation"), POLICY, NOW
    )
    assert principal.scopes == ("Endpoint.Invoke", "user_impersonation")
    assert principal.roles == ()


def test_audience_list_is_accepted_when_one_entry_is() -> None:
    assert check_claims(claims(aud=["api://other", CLIENT_ID]), POLICY, NOW).tenant == TENANT


def test_expired() -> None:
    assert refusal(claims(), now=EXP + 60) == "token expired at 2026-11-23T10:00:00Z"


def test_expiry_has_leeway() -> None:
    assert check_claims(claims(), POLICY, EXP + 59.9).expires_at == EXP


def test_not_yet_valid() -> None:
    nbf = datetime(2026, 11, 23, 9, 45, tzinfo=UTC).timestamp()
    message = refusal(claims(nbf=nbf), now=nbf - 61)
    assert message == "token not valid before 2026-11-23T09:45:00Z"
    assert check_claims(claims(nbf=nbf), POLICY, nbf - 60).tenant == TENANT


@given(offset=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_expiry_decision_is_exactly_now_before_exp_plus_leeway(offset: float) -> None:
    now = EXP + offset
    if now < EXP + POLICY.leeway_s:
        assert check_claims(claims(nbf=None), POLICY, now).expires_at == EXP
    else:
        assert refusal(claims(nbf=None), now=now) == "token expired at 2026-11-23T10:00:00Z"


@given(offset=st.floats(min_value=-1e5, max_value=1e5, allow_nan=False))
def test_not_before_decision_is_exactly_now_plus_leeway_at_least_nbf(offset: float) -> None:
    nbf = NOW + offset
    if NOW + POLICY.leeway_s >= nbf:
        assert check_claims(claims(nbf=nbf), POLICY, NOW).tenant == TENANT
    else:
        assert refusal(claims(nbf=nbf)).startswith("token not valid before ")


def test_wrong_issuer() -> None:
    message = refusal(claims(iss="https://evil.example/v2.0"))
    assert message == (
        "issuer 'https://evil.example/v2.0' is not accepted; "
        f"expected https://login.microsoftonline.com/{TENANT}/v2.0"
    )


def test_issuer_of_another_tenant_is_refused() -> None:
    other = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
    message = refusal(claims(iss=f"https://login.microsoftonline.com/{other}/v2.0"))
    assert message == (
        f"issuer 'https://login.microsoftonline.com/{other}/v2.0' is not accepted; "
        f"expected https://login.microsoftonline.com/{TENANT}/v2.0"
    )


def test_long_issuer_is_cut_short_in_the_message() -> None:
    message = refusal(claims(iss="x" * 500))
    assert message == (
        f"issuer '{'x' * 80}...' is not accepted; "
        f"expected https://login.microsoftonline.com/{TENANT}/v2.0"
    )


def test_wrong_audience() -> None:
    assert refusal(claims(aud="api://other")) == (
        f"audience 'api://other' is not accepted; expected one of api://scorefn, {CLIENT_ID}"
    )


def test_wrong_audience_with_one_accepted() -> None:
    policy = TokenPolicy(tenants=(TENANT,), audiences=(APP_ID_URI,))
    assert refusal(claims(aud=["a", "b"]), policy) == (
        "audience ['a', 'b'] is not accepted; expected api://scorefn"
    )


def test_wrong_tenant() -> None:
    other = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
    iss = f"https://login.microsoftonline.com/{other}/v2.0"
    assert refusal(claims(tid=other, iss=iss)) == f"tenant '{other}' is not allowed"


def test_v1_token_refused_unless_enabled() -> None:
    v1 = claims(
        ver="1.0", iss=f"https://sts.windows.net/{TENANT}/", azp=None, appid=CALLER, aud=CLIENT_ID
    )
    assert refusal(v1) == "token version '1.0' is not accepted; accepted: 2.0"
    both = TokenPolicy(tenants=(TENANT,), audiences=(CLIENT_ID,), versions=("2.0", "1.0"))
    principal = check_claims(v1, both, NOW)
    assert (principal.version, principal.app_id) == ("1.0", CALLER)


def test_v1_token_must_carry_the_v1_issuer() -> None:
    both = TokenPolicy(tenants=(TENANT,), audiences=(APP_ID_URI,), versions=("1.0", "2.0"))
    assert refusal(claims(ver="1.0"), both) == (
        f"issuer '{V2_ISSUER}' is not accepted; expected https://sts.windows.net/{TENANT}/"
    )


@pytest.mark.parametrize("name", ["tid", "ver", "iss", "aud", "exp", "sub"])
def test_required_claims(name: str) -> None:
    assert refusal(claims(**{name: None})) == f"token has no {name!r} claim"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tid": 7}, "claim 'tid' must be a string; got 7"),
        ({"exp": "tomorrow"}, "claim 'exp' must be a date in Unix seconds; got 'tomorrow'"),
        ({"exp": True}, "claim 'exp' must be a date in Unix seconds; got True"),
        ({"exp": 1e300}, "claim 'exp' must be a date in Unix seconds; got 1e+300"),
        ({"nbf": -5}, "claim 'nbf' must be a date in Unix seconds; got -5"),
        (
            {"roles": "Endpoint.Invoke"},
            "claim 'roles' must be a list of strings; got 'Endpoint.Invoke'",
        ),
        ({"scp": ["a"]}, "claim 'scp' must be a string; got ['a']"),
    ],
)
def test_claims_of_the_wrong_type(changes: dict[str, Any], message: str) -> None:
    assert refusal(claims(**changes)) == message


@given(
    st.dictionaries(
        st.sampled_from(["tid", "ver", "iss", "aud", "exp", "nbf", "sub", "roles", "scp", "azp"]),
        st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.lists(st.text()),
    )
)
def test_any_claims_either_pass_or_raise_authentication_error(changes: dict[str, Any]) -> None:
    try:
        check_claims(claims(**changes), POLICY, NOW)
    except AuthenticationError as exc:
        assert exc.error_description


# --- policy and authority --------------------------------------------------------------


def test_policy_from_endpoint_auth_spec() -> None:
    spec = AuthSpec(tenants=(TENANT,), audiences=(APP_ID_URI,), token_versions=("1.0", "2.0"))
    policy = TokenPolicy.from_spec(spec)
    assert policy == TokenPolicy(
        tenants=(TENANT,), audiences=(APP_ID_URI,), versions=("1.0", "2.0")
    )
    assert policy.authority == Authority.entra()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tenants": ()}, "a token policy needs at least one accepted tenant id"),
        ({"audiences": ()}, "a token policy needs at least one non-empty accepted audience"),
        ({"audiences": ("",)}, "a token policy needs at least one non-empty accepted audience"),
        ({"tenants": ("../x",)}, "tenant id '../x' is not valid; expected a GUID or a domain name"),
        ({"versions": ()}, "a token policy needs at least one accepted token version"),
        ({"versions": ("3.0",)}, "token version '3.0' is not known; expected 1.0 or 2.0"),
        ({"leeway_s": 600.0}, "leeway_s is 600.0; expected 0 to 300"),
    ],
)
def test_policy_refuses_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {"tenants": (TENANT,), "audiences": (APP_ID_URI,), **kwargs}
    with pytest.raises(ValueError) as info:
        TokenPolicy(**settings)
    assert str(info.value) == message


def test_entra_authority_issuers_and_metadata() -> None:
    entra = Authority.entra()
    assert entra.issuer(TENANT, "2.0") == f"https://login.microsoftonline.com/{TENANT}/v2.0"
    assert entra.issuer(TENANT, "1.0") == f"https://sts.windows.net/{TENANT}/"
    assert entra.metadata_url(TENANT) == (
        f"https://login.microsoftonline.com/{TENANT}/v2.0/.well-known/openid-configuration"
    )
    assert not entra.local


def test_local_authority_issuers() -> None:
    local = Authority.local_dev("http://127.0.0.1:7070/")
    assert local.local
    assert local.issuer(TENANT, "2.0") == f"http://127.0.0.1:7070/{TENANT}/v2.0"
    assert local.issuer(TENANT, "1.0") == f"http://127.0.0.1:7070/{TENANT}/"


def test_entra_authority_refuses_loopback_or_plain_http() -> None:
    with pytest.raises(ValueError) as info:
        Authority.entra("http://127.0.0.1:7070")
    assert str(info.value) == (
        "base_url 'http://127.0.0.1:7070' must be an https URL off this machine; "
        "use Authority.local_dev() for the local dev issuer"
    )
    with pytest.raises(ValueError):
        Authority.entra("https://localhost:7070")
    with pytest.raises(ValueError):
        Authority(base_url="http://login.example", v1_issuer_base="https://sts.windows.net")


def test_local_authority_refuses_anything_but_loopback() -> None:
    with pytest.raises(ValueError) as info:
        Authority.local_dev("https://login.microsoftonline.com")
    assert str(info.value) == (
        "base_url 'https://login.microsoftonline.com' is not a loopback URL; "
        "local mode only serves 127.0.0.1"
    )


def test_dev_tokens_fail_the_issuer_check_of_an_entra_policy() -> None:
    dev_claims = claims(iss=f"http://127.0.0.1:7070/{TENANT}/v2.0")
    assert refusal(dev_claims) == (
        f"issuer 'http://127.0.0.1:7070/{TENANT}/v2.0' is not accepted; "
        f"expected https://login.microsoftonline.com/{TENANT}/v2.0"
    )
    local = TokenPolicy(
        tenants=(TENANT,),
        audiences=(APP_ID_URI,),
        authority=Authority.local_dev("http://127.0.0.1:7070"),
    )
    assert check_claims(dev_claims, local, NOW).tenant == TENANT
    # ...and the local policy refuses real Entra tokens.
    assert refusal(claims(), local) == (
        f"issuer '{V2_ISSUER}' is not accepted; expected http://127.0.0.1:7070/{TENANT}/v2.0"
    )


# --- roles ------------------------------------------------------------------------------


def principal(roles: tuple[str, ...] = (), scopes: tuple[str, ...] = ()) -> Principal:
    return Principal(
        subject="s",
        object_id=None,
        tenant=TENANT,
        app_id=None,
        roles=roles,
        scopes=scopes,
        version="2.0",
        expires_at=EXP,
    )


def test_role_in_roles_or_scopes_grants_invoke() -> None:
    require_role(principal(roles=("Endpoint.Invoke",)), "Endpoint.Invoke")
    require_role(principal(scopes=("Endpoint.Invoke",)), "Endpoint.Invoke")


def test_missing_role_is_permission_denied() -> None:
    with pytest.raises(PermissionDeniedError) as info:
        require_role(principal(roles=("Reader", "Writer")), "Endpoint.Invoke")
    assert str(info.value) == (
        "role 'Endpoint.Invoke' is required; the token has roles: Reader, Writer; scopes: (none)"
    )


def test_app_role_only_ignores_scopes() -> None:
    with pytest.raises(PermissionDeniedError) as info:
        require_role(principal(scopes=("Endpoint.Admin",)), "Endpoint.Admin", accept_scope=False)
    assert str(info.value) == "app role 'Endpoint.Admin' is required; the token has roles: (none)"
    require_role(principal(roles=("Endpoint.Admin",)), "Endpoint.Admin", accept_scope=False)
