"""TokenValidator end to end: real RSA keys, real signed JWTs, a real JWKS over HTTP.

The JWKS is a tiny Starlette app served by uvicorn in a thread on 127.0.0.1; each test
gets its own JWKS path (its own keys, status and request count), so tests stay
independent while sharing one server. Time is a fake clock passed to the validator
(``now``) and the key client (``clock``), so throttling is asserted exactly.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.auth import Authority, JwksClient, Principal, TokenPolicy, TokenValidator
from shared.auth.dev_issuer import DevIssuer
from shared.auth.validator import MAX_TOKEN_CHARS
from shared.errors import AuthenticationError

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
AUDIENCE = "api://scorefn"
CALLER = "2d4d11a2-f814-46a7-890a-274a72a7309e"
SUBJECT = "b7a2a4a9-0c7c-4b8f-9a8e-2bd5f6a1c001"
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC).timestamp()
POLICY = TokenPolicy(tenants=(TENANT,), audiences=(AUDIENCE,))


# --- a real JWKS server ------------------------------------------------------------------


@dataclass
class JwksPath:
    """One test's JWKS: what it serves and how often it was fetched."""

    url: str
    keys: list[dict[str, Any]]
    status: int = 200
    hits: int = 0


@dataclass
class JwksServer:
    base_url: str = ""
    paths: dict[str, JwksPath] = field(default_factory=dict)

    def add(self, keys: list[dict[str, Any]]) -> JwksPath:
        name = secrets.token_hex(8)
        path = self.paths[name] = JwksPath(f"{self.base_url}/jwks/{name}", keys)
        return path

    def app(self) -> Starlette:
        async def jwks(request: Request) -> JSONResponse:
            path = self.paths[request.path_params["name"]]
            path.hits += 1
            return JSONResponse({"keys": path.keys}, status_code=path.status)

        return Starlette(routes=[Route("/jwks/{name}", jwks)])


def serve_in_thread(app: Starlette) -> tuple[str, uvicorn.Server, threading.Thread]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "JWKS server did not start"
        time.sleep(0.01)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    state = JwksServer()
    state.base_url, server, thread = serve_in_thread(state.app())
    yield state
    server.should_exit = True
    thread.join(timeout=10)


# --- keys, tokens, clock -------------------------------------------------------------------


@pytest.fixture(scope="module")
def key1() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def key2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def app_claims(now: float, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "aud": AUDIENCE,
        "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + 3600,
        "azp": CALLER,
        "oid": SUBJECT,
        "sub": SUBJECT,
        "roles": ["Endpoint.Invoke"],
        "tid": TENANT,
        "ver": "2.0",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def sign(claims: dict[str, Any], key: rsa.RSAPrivateKey, kid: str | None = "k1") -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """header.payload, unsigned."""
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    validator: TokenValidator
    jwks: JwksPath
    clock: FakeClock

    async def refusal(self, token: str) -> str:
        with pytest.raises(AuthenticationError) as info:
            await self.validator.validate(token)
        assert info.value.error == "invalid_token"
        return str(info.value)


@pytest.fixture
async def harness(jwks_server: JwksServer, key1: rsa.RSAPrivateKey) -> AsyncIterator[Harness]:
    jwks = jwks_server.add([public_jwk(key1, "k1")])
    clock = FakeClock(T0)
    keys = JwksClient(Authority.entra(), jwks_urls={TENANT: jwks.url}, clock=clock)
    yield Harness(TokenValidator(POLICY, keys=keys, now=clock), jwks, clock)
    await keys.aclose()


# --- valid tokens ------------------------------------------------------------------------


async def test_valid_token_gives_principal(harness: Harness, key1: rsa.RSAPrivateKey) -> None:
    principal = await harness.validator.validate(sign(app_claims(T0), key1))
    assert principal == Principal(
        subject=SUBJECT,
        object_id=SUBJECT,
        tenant=TENANT,
        app_id=CALLER,
        roles=("Endpoint.Invoke",),
        scopes=(),
        version="2.0",
        expires_at=T0 + 3600,
    )
    assert harness.jwks.hits == 1


async def test_keys_are_cached(harness: Harness, key1: rsa.RSAPrivateKey) -> None:
    for _ in range(5):
        await harness.validator.validate(sign(app_claims(harness.clock.now), key1))
        harness.clock.advance(600)
    assert harness.jwks.hits == 1


async def test_authenticate_reads_the_authorization_header(
    harness: Harness, key1: rsa.RSAPrivateKey
) -> None:
    token = sign(app_claims(T0, roles=None, scp="Endpoint.Invoke"), key1)
    principal = await harness.validator.authenticate(f"Bearer {token}")
    assert principal.scopes == ("Endpoint.Invoke",)
    with pytest.raises(AuthenticationError) as info:
        await harness.validator.authenticate(None)
    assert (info.value.error, str(info.value)) == (
        None,
        "no credentials; expected 'Authorization: Bearer <token>'",
    )


# --- refused by claims (before any key lookup) -------------------------------------------


async def test_expired(harness: Harness, key1: rsa.RSAPrivateKey) -> None:
    exp = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
    token = sign(app_claims(T0, exp=int(exp)), key1)
    harness.clock.now = exp + 60
    assert await harness.refusal(token) == "token expired at 2026-11-23T10:00:00Z"
    assert harness.jwks.hits == 0


async def test_not_yet_valid(harness: Harness, key1: rsa.RSAPrivateKey) -> None:
    token = sign(app_claims(T0, nbf=int(T0) + 3600), key1)
    assert await harness.refusal(token) == "token not valid before 2026-11-23T10:00:00Z"


async def test_wrong_issuer(harness: Harness, key1: rsa.RSAPrivateKey) -> None:
    token = sign(app_claims(T0, iss="https://login.example.com/v2.0"), key1)
    assert await harness.refusal(token) == (
        "issuer 'https://login.example.com/v2.0' is not accepted; "
        f"expected https://login.microsoftonline.com/{TENANT}/v2.0"
    )


async def test_wrong_audience(harness: Harness, key1: rsa.RSAPrivateKey) -> None:
    token = sign(app_claims(T0, aud="api://other"), key1)
    assert await harness.refusal(token) == (
        "audience 'api://other' is not accepted; expected api://scorefn"
    )


async def test_wrong_tenant_never_fetches_keys(harness: Harness, key1: rsa.RSAPrivateKey) -> None:
    other = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
    token = sign(
        app_claims(T0, tid=other, iss=f"https://login.microsoftonline.com/{other}/v2.0"), key1
    )
    assert await harness.refusal(token) == f"tenant '{other}' is not allowed"
    assert harness.jwks.hits == 0


async def test_v1_token_refused_unless_enabled(
    jwks_server: JwksServer, harness: Harness, key1: rsa.RSAPrivateKey
) -> None:
    v1 = app_claims(T0, ver="1.0", iss=f"https://sts.windows.net/{TENANT}/", azp=None, appid=CALLER)
    token = sign(v1, key1)
    assert await harness.refusal(token) == "token version '1.0' is not accepted; accepted: 2.0"
    jwks = jwks_server.add([public_jwk(key1, "k1")])
    policy = TokenPolicy(tenants=(TENANT,), audiences=(AUDIENCE,), versions=("2.0", "1.0"))
    async with JwksClient(policy.authority, jwks_urls={TENANT: jwks.url}) as keys:
        validator = TokenValidator(policy, keys=keys, now=lambda: T0)
        principal = await validator.validate(token)
    assert (principal.version, principal.app_id) == ("1.0", CALLER)


# --- refused by header or signature ------------------------------------------------------


async def test_alg_none(harness: Harness) -> None:
    token = compact({"alg": "none", "kid": "k1", "typ": "JWT"}, app_claims(T0)) + "."
    assert await harness.refusal(token) == "algorithm 'none' is not allowed; only RS256"
    assert harness.jwks.hits == 0


async def test_hs256_signed_with_the_public_key_pem(
    harness: Harness, key1: rsa.RSAPrivateKey
) -> None:
    pem = key1.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for alg in ("HS256", "RS256"):  # RS256 in the header, HMAC underneath: still refused
        signing_input = compact({"alg": alg, "kid": "k1", "typ": "JWT"}, app_claims(T0))
        mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        token = f"{signing_input}.{b64(mac)}"
        expected = (
            "algorithm 'HS256' is not allowed; only RS256"
            if alg == "HS256"
            else "signature verification failed"
        )
        assert await harness.refusal(token) == expected


async def test_tampered_payload(harness: Harness, key1: rsa.RSAPrivateKey) -> None:
    header, _, signature = sign(app_claims(T0), key1).split(".")
    forged = app_claims(T0, roles=["Endpoint.Invoke", "Endpoint.Admin"])
    token = f"{header}.{b64(json.dumps(forged).encode())}.{signature}"
    assert await harness.refusal(token) == "signature verification failed"


async def test_signed_by_another_key_with_a_known_kid(
    harness: Harness, key2: rsa.RSAPrivateKey
) -> None:
    assert await harness.refusal(sign(app_claims(T0), key2)) == "signature verification failed"


async def test_missing_kid(harness: Harness, key1: rsa.RSAPrivateKey) -> None:
    assert await harness.refusal(sign(app_claims(T0), key1, kid=None)) == (
        "token header has no 'kid'; cannot choose a signing key"
    )


@pytest.mark.parametrize(
    "token", ["", "abc", "a.b.c", "....", "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln"]
)
async def test_malformed(harness: Harness, token: str) -> None:
    assert await harness.refusal(token) == "malformed token"


async def test_oversized_token(harness: Harness) -> None:
    token = "a" * (MAX_TOKEN_CHARS + 1)
    assert await harness.refusal(token) == (
        f"token is {MAX_TOKEN_CHARS + 1} characters; the limit is {MAX_TOKEN_CHARS}"
    )


def test_arbitrary_tokens_are_refused_with_authentication_error() -> None:
    # Keys would come from a loopback port nothing listens on; no example gets that far.
    keys = JwksClient(Authority.entra(), jwks_urls={TENANT: "http://127.0.0.1:9/keys"})
    validator = TokenValidator(POLICY, keys=keys)

    @settings(max_examples=300, deadline=None)
    @given(
        header=st.fixed_dictionaries(
            {},
            optional={
                "alg": st.sampled_from(["RS256", "HS256", "none"]) | st.text() | st.integers(),
                "kid": st.just("k1") | st.text() | st.integers(),
                "crit": st.lists(st.text(max_size=3)),
            },
        ),
        claims=st.fixed_dictionaries(
            {},
            optional={
                name: st.just(value) | st.text() | st.integers() | st.none()
                for name, value in app_claims(T0).items()
            },
        ),
        signature=st.binary(max_size=300),
    )
    def refused(header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> None:
        token = f"{compact(header, claims)}.{b64(signature)}"
        with pytest.raises(AuthenticationError):
            asyncio.run(validator.validate(token))

    refused()
    asyncio.run(keys.aclose())


# --- key lookup: rotation, throttling, failures ------------------------------------------


async def test_unknown_kid_refetches_at_most_once_a_minute(
    harness: Harness, key1: rsa.RSAPrivateKey, key2: rsa.RSAPrivateKey
) -> None:
    await harness.validator.validate(sign(app_claims(T0), key1))
    assert harness.jwks.hits == 1
    # The authority rotates in k2; a k2 token right away is within the minute: no refetch.
    harness.jwks.keys = [public_jwk(key1, "k1"), public_jwk(key2, "k2")]
    token2 = sign(app_claims(T0), key2, kid="k2")
    assert await harness.refusal(token2) == "signing key 'k2' not found in the tenant's JWKS"
    assert harness.jwks.hits == 1
    # A minute later the unknown kid triggers one refetch, which finds it.
    harness.clock.advance(60)
    assert (await harness.validator.validate(token2)).tenant == TENANT
    assert harness.jwks.hits == 2
    # Another unknown kid within the minute does not refetch...
    token3 = sign(app_claims(harness.clock.now), key2, kid="k3")
    harness.clock.advance(59)
    assert await harness.refusal(token3) == "signing key 'k3' not found in the tenant's JWKS"
    assert harness.jwks.hits == 2
    # ...and after it, refetches once more (still not there).
    harness.clock.advance(1)
    assert await harness.refusal(token3) == "signing key 'k3' not found in the tenant's JWKS"
    assert harness.jwks.hits == 3


async def test_flood_of_unknown_kids_costs_one_fetch(
    harness: Harness, key1: rsa.RSAPrivateKey
) -> None:
    tokens = [sign(app_claims(T0), key1, kid=f"bogus-{i}") for i in range(200)]
    results = await asyncio.gather(
        *(harness.validator.validate(token) for token in tokens), return_exceptions=True
    )
    assert harness.jwks.hits == 1  # the first lookup (cold cache); the rest wait and reuse it
    assert [str(result) for result in results] == [
        f"signing key 'bogus-{i}' not found in the tenant's JWKS" for i in range(200)
    ]
    assert all(isinstance(result, AuthenticationError) for result in results)
    harness.clock.advance(61)
    await asyncio.gather(
        *(harness.validator.validate(token) for token in tokens), return_exceptions=True
    )
    assert harness.jwks.hits == 2
    assert (await harness.validator.validate(sign(app_claims(T0), key1))).tenant == TENANT
    assert harness.jwks.hits == 2


async def test_fetch_failure_is_refused_with_the_reason_then_recovers(
    harness: Harness, key1: rsa.RSAPrivateKey
) -> None:
    harness.jwks.status = 500
    token = sign(app_claims(T0), key1)
    expected = (
        "signing key 'k1' not found: the tenant's JWKS could not be fetched "
        f"(HTTP 500 from {harness.jwks.url})"
    )
    assert await harness.refusal(token) == expected
    harness.jwks.status = 200
    assert await harness.refusal(token) == expected  # failed a moment ago: not retried yet
    assert harness.jwks.hits == 1
    harness.clock.advance(60)
    assert (await harness.validator.validate(token)).tenant == TENANT
    assert harness.jwks.hits == 2


async def test_unreachable_jwks(key1: rsa.RSAPrivateKey) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/keys"
    async with JwksClient(Authority.entra(), jwks_urls={TENANT: url}) as keys:
        validator = TokenValidator(POLICY, keys=keys, now=lambda: T0)
        with pytest.raises(AuthenticationError) as info:
            await validator.validate(sign(app_claims(T0), key1))
    assert str(info.value) == (
        "signing key 'k1' not found: the tenant's JWKS could not be fetched "
        f"(ConnectError from {url})"
    )


@pytest.mark.parametrize(
    ("served", "reason"),
    [
        ([], "has no usable RS256 signing keys"),
        ([{"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}], "has no usable RS256 signing keys"),
        ([{"kty": "RSA", "kid": "k1", "n": "!!", "e": "AQAB"}], "has no usable RS256 signing keys"),
    ],
)
async def test_unusable_jwks(
    harness: Harness, key1: rsa.RSAPrivateKey, served: list[dict[str, Any]], reason: str
) -> None:
    harness.jwks.keys = served
    assert await harness.refusal(sign(app_claims(T0), key1)) == (
        "signing key 'k1' not found: the tenant's JWKS could not be fetched "
        f"({harness.jwks.url} {reason})"
    )


async def test_only_rs256_signature_keys_are_taken_from_the_jwks(
    harness: Harness, key1: rsa.RSAPrivateKey, key2: rsa.RSAPrivateKey
) -> None:
    harness.jwks.keys = [
        {**public_jwk(key1, "enc"), "use": "enc"},
        {**public_jwk(key1, "ps"), "alg": "PS256"},
        public_jwk(key2, "k2"),
    ]
    for kid in ("enc", "ps"):
        token = sign(app_claims(T0), key1, kid=kid)
        assert await harness.refusal(token) == (
            f"signing key '{kid}' not found in the tenant's JWKS"
        )
    assert (await harness.validator.validate(sign(app_claims(T0), key2, kid="k2"))).roles


async def test_keys_older_than_max_age_are_refreshed(
    jwks_server: JwksServer, key1: rsa.RSAPrivateKey, key2: rsa.RSAPrivateKey
) -> None:
    jwks = jwks_server.add([public_jwk(key1, "k1")])
    clock = FakeClock(T0)
    async with JwksClient(
        Authority.entra(), jwks_urls={TENANT: jwks.url}, clock=clock, max_age_s=3600
    ) as keys:
        validator = TokenValidator(POLICY, keys=keys, now=clock)
        await validator.validate(sign(app_claims(T0), key1))
        # The authority drops k1. Once the cached set is an hour old, it is refreshed and
        # k1 stops working even though no token named an unknown kid.
        jwks.keys = [public_jwk(key2, "k2")]
        clock.advance(3599)
        await validator.validate(sign(app_claims(clock.now), key1))
        assert jwks.hits == 1
        clock.advance(1)
        with pytest.raises(AuthenticationError) as info:
            await validator.validate(sign(app_claims(clock.now), key1))
        assert str(info.value) == "signing key 'k1' not found in the tenant's JWKS"
        assert jwks.hits == 2


async def test_failed_refresh_keeps_the_keys_held(
    jwks_server: JwksServer, key1: rsa.RSAPrivateKey
) -> None:
    jwks = jwks_server.add([public_jwk(key1, "k1")])
    clock = FakeClock(T0)
    async with JwksClient(
        Authority.entra(), jwks_urls={TENANT: jwks.url}, clock=clock, max_age_s=3600
    ) as keys:
        validator = TokenValidator(POLICY, keys=keys, now=clock)
        await validator.validate(sign(app_claims(T0), key1))
        jwks.status = 503
        clock.advance(3600)
        assert (await validator.validate(sign(app_claims(clock.now), key1))).tenant == TENANT
        assert jwks.hits == 2


async def test_dev_token_is_refused_by_an_entra_validator(harness: Harness) -> None:
    dev = DevIssuer.generate("http://127.0.0.1:7070")
    policy = TokenPolicy(tenants=(TENANT,), audiences=(AUDIENCE,))
    async with JwksClient(Authority.entra()) as keys:  # would reach Entra; it never asks
        validator = TokenValidator(policy, keys=keys)
        with pytest.raises(AuthenticationError) as info:
            await validator.validate(dev.mint_token(AUDIENCE, ["Endpoint.Invoke"], TENANT))
    assert str(info.value) == (
        f"issuer 'http://127.0.0.1:7070/{TENANT}/v2.0' is not accepted; "
        f"expected https://login.microsoftonline.com/{TENANT}/v2.0"
    )


def test_validator_refuses_a_key_client_of_another_authority() -> None:
    keys = JwksClient(Authority.local_dev("http://127.0.0.1:7070"))
    with pytest.raises(ValueError) as info:
        TokenValidator(POLICY, keys=keys)
    assert str(info.value) == (
        "the key client serves http://127.0.0.1:7070; "
        "the policy trusts https://login.microsoftonline.com"
    )


def test_jwks_urls_must_be_https_off_loopback() -> None:
    with pytest.raises(ValueError) as info:
        JwksClient(Authority.entra(), jwks_urls={TENANT: "http://keys.example/jwks"})
    assert str(info.value) == (
        f"JWKS URL 'http://keys.example/jwks' of tenant '{TENANT}' must be https"
    )


async def test_shared_http_client_is_not_closed_by_the_key_client() -> None:
    async with httpx.AsyncClient() as client:
        async with JwksClient(Authority.entra(), client=client):
            pass
        assert not client.is_closed


# --- verified-token cache ------------------------------------------------------------------


async def test_verified_token_is_remembered_until_it_expires(
    harness: Harness, key1: rsa.RSAPrivateKey
) -> None:
    token = sign(app_claims(T0), key1)
    first = await harness.validator.validate(token)
    harness.clock.advance(3000)
    # A hit returns the remembered principal itself; a full check would build a new one.
    assert await harness.validator.validate(token) is first
    harness.clock.advance(600 + 60)  # past exp + the policy's 60 s leeway
    assert await harness.refusal(token) == f"token expired at {_iso(T0 + 3600)}"


async def test_a_tampered_copy_of_a_remembered_token_is_still_refused(
    harness: Harness, key1: rsa.RSAPrivateKey
) -> None:
    token = sign(app_claims(T0), key1)
    await harness.validator.validate(token)
    header, _payload, signature = token.split(".")
    forged = f"{header}.{b64(json.dumps(app_claims(T0, roles=['Endpoint.Admin'])).encode())}.{signature}"
    assert await harness.refusal(forged) == "signature verification failed"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
