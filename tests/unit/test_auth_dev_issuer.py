"""The dev issuer without a server: key file, key id, minted claims, CLI guard rails."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.auth.dev_issuer import DEV_APP_ID, DEV_TENANT, DevIssuer, main

BASE = "http://127.0.0.1:7070"


def test_key_file_is_created_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "issuer" / "key.pem"
    first = DevIssuer.from_key_file(path, BASE)
    assert path.stat().st_mode & 0o777 == 0o600
    second = DevIssuer.from_key_file(path, BASE)
    assert first.kid == second.kid
    assert first.jwks() == second.jwks()
    token = first.mint_token("api://x")
    key = jwt.PyJWK(second.jwks()["keys"][0])
    assert jwt.decode(token, key, algorithms=["RS256"], audience="api://x")["tid"] == DEV_TENANT


def test_key_file_must_hold_an_rsa_key(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("not a key")
    with pytest.raises(ValueError):
        DevIssuer.from_key_file(path, BASE)


def test_minted_claims_look_like_entra() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer = DevIssuer(key, BASE, now=lambda: 1_800_000_000.5)
    token = issuer.mint_token(
        "api://x", ["Endpoint.Invoke"], "t-1", 600, scopes=["a", "b"], extra_claims={"x": 1}
    )
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": issuer.kid, "typ": "JWT"}
    claims = jwt.decode(token, options={"verify_signature": False})
    uti = claims.pop("uti")
    assert isinstance(uti, str) and uti
    assert claims == {
        "aud": "api://x",
        "iss": "http://127.0.0.1:7070/t-1/v2.0",
        "iat": 1_800_000_000,
        "nbf": 1_800_000_000,
        "exp": 1_800_000_600,
        "tid": "t-1",
        "sub": DEV_APP_ID,
        "oid": DEV_APP_ID,
        "ver": "2.0",
        "azp": DEV_APP_ID,
        "roles": ["Endpoint.Invoke"],
        "scp": "a b",
        "x": 1,
    }
    v1 = jwt.decode(
        issuer.mint_token("api://x", version="1.0"), options={"verify_signature": False}
    )
    assert (v1["iss"], v1["ver"], v1["appid"], "azp" in v1) == (
        f"http://127.0.0.1:7070/{DEV_TENANT}/",
        "1.0",
        DEV_APP_ID,
        False,
    )


def test_issuer_refuses_a_non_loopback_base() -> None:
    with pytest.raises(ValueError) as info:
        DevIssuer.generate("https://login.microsoftonline.com")
    assert str(info.value) == (
        "dev issuer base URL 'https://login.microsoftonline.com' must be on 127.0.0.1"
    )


def test_cli_refuses_a_non_loopback_host(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--host", "0.0.0.0", "--mint", "--audience", "x"])
    assert "--host '0.0.0.0' is not a loopback address" in capsys.readouterr().err


def test_cli_mint_needs_an_audience(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--key-file", str(tmp_path / "k.pem"), "--mint"])
    assert "--mint needs --audience" in capsys.readouterr().err


def test_cli_mint_prints_a_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "k.pem"
    assert main(["--key-file", str(key_file), "--port", "7071", "--mint", "--audience", "a"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == f"http://127.0.0.1:7071/{DEV_TENANT}/v2.0"
    assert jwt.get_unverified_header(token)["kid"] == DevIssuer.from_key_file(key_file, BASE).kid
