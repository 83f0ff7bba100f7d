"""The dev issuer over real HTTP: uvicorn on a free loopback port, discovery, JWKS, tokens.

A local-mode validator (``Authority.local_dev``) finds the keys through the issuer's OIDC
metadata exactly as it would through Entra's, and accepts its tokens; an Entra-mode
validator refuses them. The CLI is run as a real process too.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from shared.auth import (
    Authority,
    JwksClient,
    TokenPolicy,
    TokenValidator,
    require_role,
)
from shared.auth.dev_issuer import DEV_APP_ID, DEV_TENANT, DevIssuer
from shared.errors import AuthenticationError, PermissionDeniedError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AUDIENCE = "api://scorefn-local"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def running_issuer() -> Iterator[DevIssuer]:
    """A dev issuer served by uvicorn in a thread on a free port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    issuer = DevIssuer.generate(f"http://127.0.0.1:{sock.getsockname()[1]}")
    server = uvicorn.Server(uvicorn.Config(issuer.app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "dev issuer did not start"
        time.sleep(0.01)
    yield issuer
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def local_policy(issuer: DevIssuer) -> TokenPolicy:
    return TokenPolicy(tenants=(DEV_TENANT,), audiences=(AUDIENCE,), authority=issuer.authority)


async def test_metadata_and_jwks_are_served(running_issuer: DevIssuer) -> None:
    base = running_issuer.base_url
    async with httpx.AsyncClient() as client:
        metadata = await client.get(f"{base}/{DEV_TENANT}/v2.0/.well-known/openid-configuration")
        jwks = await client.get(f"{base}/{DEV_TENANT}/discovery/v2.0/keys")
    assert metadata.status_code == 200
    assert metadata.json() == {
        "issuer": f"{base}/{DEV_TENANT}/v2.0",
        "jwks_uri": f"{base}/{DEV_TENANT}/discovery/v2.0/keys",
        "response_types_supported": ["token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "tenant_region_scope": "local",
    }
    assert jwks.status_code == 200
    [key] = jwks.json()["keys"]
    assert (key["kty"], key["use"], key["alg"], key["kid"], key["e"]) == (
        "RSA",
        "sig",
        "RS256",
        running_issuer.kid,
        "AQAB",
    )


async def test_minted_token_validates_in_local_mode(running_issuer: DevIssuer) -> None:
    token = running_issuer.mint_token(AUDIENCE, ["Endpoint.Invoke"], lifetime=600)
    async with JwksClient(running_issuer.authority) as keys:
        validator = TokenValidator(local_policy(running_issuer), keys=keys)
        principal = await validator.authenticate(f"Bearer {token}")
        # A second token is checked with the cached key.
        user = running_issuer.mint_token(AUDIENCE, scopes=["Endpoint.Invoke"], subject="u-1")
        user_principal = await validator.validate(user)
    assert principal.tenant == DEV_TENANT
    assert principal.app_id == DEV_APP_ID
    assert principal.roles == ("Endpoint.Invoke",)
    assert principal.version == "2.0"
    require_role(principal, "Endpoint.Invoke")
    with pytest.raises(PermissionDeniedError) as info:
        require_role(principal, "Endpoint.Admin", accept_scope=False)
    assert str(info.value) == (
        "app role 'Endpoint.Admin' is required; the token has roles: Endpoint.Invoke"
    )
    assert (user_principal.subject, user_principal.scopes) == ("u-1", ("Endpoint.Invoke",))
    require_role(user_principal, "Endpoint.Invoke")


async def test_v1_dev_token_needs_v1_enabled(running_issuer: DevIssuer) -> None:
    token = running_issuer.mint_token(AUDIENCE, ["Endpoint.Invoke"], version="1.0")
    both = TokenPolicy(
        tenants=(DEV_TENANT,),
        audiences=(AUDIENCE,),
        versions=("1.0", "2.0"),
        authority=running_issuer.authority,
    )
    async with JwksClient(running_issuer.authority) as keys:
        with pytest.raises(AuthenticationError) as info:
            await TokenValidator(local_policy(running_issuer), keys=keys).validate(token)
        assert str(info.value) == "token version '1.0' is not accepted; accepted: 2.0"
        principal = await TokenValidator(both, keys=keys).validate(token)
    assert (principal.version, principal.app_id) == ("1.0", DEV_APP_ID)


async def test_dev_token_is_refused_by_an_entra_mode_validator(running_issuer: DevIssuer) -> None:
    token = running_issuer.mint_token(AUDIENCE, ["Endpoint.Invoke"])
    entra = TokenPolicy(tenants=(DEV_TENANT,), audiences=(AUDIENCE,))
    async with JwksClient(entra.authority) as keys:
        with pytest.raises(AuthenticationError) as info:
            await TokenValidator(entra, keys=keys).validate(token)
    assert str(info.value) == (
        f"issuer '{running_issuer.base_url}/{DEV_TENANT}/v2.0' is not accepted; "
        f"expected https://login.microsoftonline.com/{DEV_TENANT}/v2.0"
    )


async def test_token_of_another_dev_issuer_fails_the_signature(
    running_issuer: DevIssuer,
) -> None:
    # Same base URL (so same issuer string) but a different key: the kid is unknown.
    impostor = DevIssuer.generate(running_issuer.base_url)
    async with JwksClient(running_issuer.authority) as keys:
        validator = TokenValidator(local_policy(running_issuer), keys=keys)
        with pytest.raises(AuthenticationError) as info:
            await validator.validate(impostor.mint_token(AUDIENCE, ["Endpoint.Invoke"]))
    assert str(info.value) == f"signing key '{impostor.kid}' not found in the tenant's JWKS"


async def test_issuer_down_is_refused_with_the_reason() -> None:
    port = free_port()
    issuer = DevIssuer.generate(f"http://127.0.0.1:{port}")
    async with JwksClient(issuer.authority) as keys:
        with pytest.raises(AuthenticationError) as info:
            await TokenValidator(local_policy(issuer), keys=keys).validate(
                issuer.mint_token(AUDIENCE)
            )
    assert str(info.value) == (
        f"signing key '{issuer.kid}' not found: the tenant's JWKS could not be fetched "
        f"(ConnectError from http://127.0.0.1:{port}/{DEV_TENANT}/v2.0/.well-known/"
        "openid-configuration)"
    )


async def start_cli(command: list[str], base: str) -> subprocess.Popen[str]:
    server = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    async with httpx.AsyncClient() as client:
        deadline = time.monotonic() + 15
        while True:
            try:
                await client.get(f"{base}/{DEV_TENANT}/discovery/v2.0/keys")
                return server
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    stop(server)
                    raise AssertionError("dev issuer CLI did not start") from None
                await asyncio.sleep(0.05)


def stop(server: subprocess.Popen[str]) -> None:
    server.terminate()
    server.wait(timeout=10)
    if server.stderr:
        server.stderr.close()


async def test_cli_serves_and_mints_with_a_kept_key(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key_file = tmp_path / "dev-issuer" / "key.pem"
    command = [sys.executable, "-m", "shared.auth.dev_issuer", "--port", str(port)]
    command += ["--key-file", str(key_file)]
    authority = Authority.local_dev(base)
    policy = TokenPolicy(tenants=(DEV_TENANT,), audiences=(AUDIENCE,), authority=authority)

    server = await start_cli(command, base)
    try:
        minted = subprocess.run(
            [*command, "--mint", "--audience", AUDIENCE, "--role", "Endpoint.Invoke"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        token = minted.stdout.strip()
        async with JwksClient(authority) as keys:
            principal = await TokenValidator(policy, keys=keys).validate(token)
        assert principal.roles == ("Endpoint.Invoke",)
        assert key_file.stat().st_mode & 0o777 == 0o600
    finally:
        stop(server)

    # A restarted issuer keeps the key, so the token minted before still validates.
    server = await start_cli(command, base)
    try:
        async with JwksClient(authority) as keys:
            assert (await TokenValidator(policy, keys=keys).validate(token)).tenant == DEV_TENANT
    finally:
        stop(server)
