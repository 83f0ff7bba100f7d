"""A local stand-in for Entra ID: an RS256 key, its OIDC metadata and JWKS, and minted tokens.

For local mode only. It serves, on loopback only,

* ``GET /{tenant}/v2.0/.well-known/openid-configuration`` (names the ``jwks_uri``), and
* ``GET /{tenant}/discovery/v2.0/keys`` (the JWKS),

the same paths as ``login.microsoftonline.com``, and, when started with an identity
header secret,

* ``GET /msi/token?resource=...&api-version=2019-08-01[&client_id=...]`` (header
  ``X-IDENTITY-HEADER: <secret>``),

the App Service / Azure Functions managed-identity endpoint: a process whose environment
has ``IDENTITY_ENDPOINT=http://127.0.0.1:<port>/msi/token`` and ``IDENTITY_HEADER=<secret>``
gets tokens from azure-identity's ``ManagedIdentityCredential`` here, as it would in Azure
(the local router's hop tokens). It mints access tokens shaped like
Entra's whose ``iss`` is ``http://127.0.0.1:<port>/<tenant>/v2.0``. A validator accepts
them only when its policy was built with ``Authority.local_dev(<that base URL>)``; with
the default Entra authority the issuer check refuses them (and ``Authority`` itself
refuses a loopback base unless built for local mode).

The key is generated, or loaded from a PEM file (created with mode 0600 on first use)
so that restarts keep it and tokens minted earlier stay valid. The key id is the key's
RFC 7638 thumbprint, so it is stable too.

Run it::

    python -m shared.auth.dev_issuer --port 7070
    python -m shared.auth.dev_issuer --port 7070 --mint --audience api://scorefn \\
        --role Endpoint.Invoke        # prints a token signed with the same key file
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from jwt.utils import base64url_encode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.auth.authority import Authority, TokenVersion, is_loopback_url
from shared.auth.checks import ALGORITHM

__all__ = [
    "DEFAULT_KEY_FILE",
    "DEFAULT_PORT",
    "DEV_APP_ID",
    "DEV_IDENTITY_CLIENT_ID",
    "MSI_PATH",
    "identity_header_secret",
    "DEV_TENANT",
    "DevIssuer",
    "main",
]

DEFAULT_PORT: Final = 7070
"""Port the dev issuer listens on unless told otherwise."""
DEFAULT_KEY_FILE: Final = Path(".scorefn/dev-issuer/signing-key.pem")
"""Where the CLI keeps the signing key (relative to the working directory)."""
DEV_TENANT: Final = "00000000-0000-4000-8000-00000000de7e"
"""Tenant id of minted tokens unless another is given."""
DEV_APP_ID: Final = "00000000-0000-4000-8000-0000000c11e7"
"""Client application id (``azp``/``appid``) and default subject of minted tokens."""
DEV_IDENTITY_CLIENT_ID: Final = "00000000-0000-4000-8000-00000000a1d0"
"""Client id of managed-identity tokens asked for without a ``client_id``."""
MSI_PATH: Final = "/msi/token"
"""Path of the managed-identity endpoint (``IDENTITY_ENDPOINT``)."""
_MSI_LIFETIME_S: Final = 3600.0
_KEY_BITS: Final = 2048


class DevIssuer:
    """The local OIDC issuer at ``base_url`` (a loopback URL), signing with ``private_key``.

    ``now`` gives Unix seconds for minted tokens (injectable for tests).
    """

    def __init__(
        self,
        private_key: rsa.RSAPrivateKey,
        base_url: str,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not is_loopback_url(base_url):
            raise ValueError(f"dev issuer base URL {base_url!r} must be on 127.0.0.1")
        self.authority = Authority.local_dev(base_url)
        """The authority a local-mode validator trusts for this issuer."""
        self.base_url = self.authority.base_url
        self._private_key = private_key
        self._public_jwk = _public_jwk(private_key.public_key())
        self.kid: str = self._public_jwk["kid"]
        """Key id in minted tokens: the RFC 7638 thumbprint of the public key."""
        self._now = now

    @classmethod
    def generate(cls, base_url: str) -> DevIssuer:
        """An issuer with a fresh 2048-bit RSA key (tokens die with the process)."""
        return cls(_new_private_key(), base_url)

    @classmethod
    def from_key_file(cls, path: Path, base_url: str) -> DevIssuer:
        """An issuer whose key is kept in ``path`` (PEM), created there if absent."""
        return cls(_load_or_create_key(path), base_url)

    def issuer(self, tenant: str, version: TokenVersion = "2.0") -> str:
        """The ``iss`` of tokens minted for ``tenant``."""
        return self.authority.issuer(tenant, version)

    def jwks_uri(self, tenant: str) -> str:
        """Where the JWKS of ``tenant`` is served."""
        return f"{self.base_url}/{tenant}/discovery/v2.0/keys"

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set: the one public key."""
        return {"keys": [dict(self._public_jwk)]}

    def metadata(self, tenant: str) -> dict[str, Any]:
        """The OpenID Connect metadata document of ``tenant``."""
        return {
            "issuer": self.issuer(tenant),
            "jwks_uri": self.jwks_uri(tenant),
            "response_types_supported": ["token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "tenant_region_scope": "local",
        }

    def mint_token(
        self,
        audience: str,
        roles: Iterable[str] = (),
        tenant: str = DEV_TENANT,
        lifetime: float = 3600.0,
        *,
        scopes: Iterable[str] = (),
        subject: str = DEV_APP_ID,
        app_id: str = DEV_APP_ID,
        version: TokenVersion = "2.0",
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """An RS256 access token for ``audience`` valid for ``lifetime`` seconds from now.

        Shaped like Entra's: ``roles`` (app roles) and/or ``scp`` (``scopes``, for a
        delegated token), ``tid``, ``ver``, ``azp`` (v2.0) or ``appid`` (v1.0).
        ``extra_claims`` are added last and may override any claim.
        """
        now = int(self._now())
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": self.issuer(tenant, version),
            "iat": now,
            "nbf": now,
            "exp": now + int(lifetime),
            "tid": tenant,
            "sub": subject,
            "oid": subject,
            "ver": version,
            "uti": secrets.token_urlsafe(16),
            "azp" if version == "2.0" else "appid": app_id,
        }
        role_list = list(roles)
        if role_list:
            claims["roles"] = role_list
        scope_text = " ".join(scopes)
        if scope_text:
            claims["scp"] = scope_text
        claims.update(extra_claims or {})
        return jwt.encode(
            claims,
            self._private_key,
            algorithm=ALGORITHM,
            headers={"kid": self.kid, "typ": "JWT"},
        )

    def identity_token(self, resource: str, client_id: str | None = None) -> dict[str, str]:
        """The managed-identity endpoint's answer: a token for ``resource`` (an audience,
        as azure-identity sends it) whose ``azp`` and ``oid`` are ``client_id``."""
        client = client_id or DEV_IDENTITY_CLIENT_ID
        lifetime = _MSI_LIFETIME_S
        token = self.mint_token(resource, (), lifetime=lifetime, subject=client, app_id=client)
        return {
            "access_token": token,
            "expires_on": str(int(self._now() + lifetime)),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client,
        }

    def app(self, *, identity_header: str | None = None) -> Starlette:
        """The ASGI app serving the metadata and JWKS (run it with uvicorn), and with
        ``identity_header`` (a secret) the managed-identity endpoint at ``MSI_PATH``."""

        async def metadata(request: Request) -> JSONResponse:
            return JSONResponse(self.metadata(request.path_params["tenant"]))

        async def keys(request: Request) -> JSONResponse:
            return JSONResponse(self.jwks())

        async def identity(request: Request) -> JSONResponse:
            given = request.headers.get("x-identity-header", "")
            if identity_header is None or not secrets.compare_digest(given, identity_header):
                return _msi_error(401, "X-IDENTITY-HEADER is missing or wrong")
            resource = request.query_params.get("resource", "").strip()
            if not resource:
                return _msi_error(400, "the resource query parameter (an audience) is required")
            if request.query_params.get("mi_res_id") or request.query_params.get("object_id"):
                return _msi_error(400, "only client_id selects an identity here")
            client_id = request.query_params.get("client_id")
            return JSONResponse(self.identity_token(resource, client_id))

        routes = [
            Route("/{tenant}/v2.0/.well-known/openid-configuration", metadata),
            Route("/{tenant}/discovery/v2.0/keys", keys),
        ]
        if identity_header is not None:
            routes.append(Route(MSI_PATH, identity))
        return Starlette(routes=routes)


def _msi_error(status: int, message: str) -> JSONResponse:
    # The App Service endpoint's error shape, which azure-identity reports.
    return JSONResponse({"statusCode": status, "message": message}, status_code=status)


def _new_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)


def _public_jwk(public_key: rsa.RSAPublicKey) -> dict[str, str]:
    jwk: dict[str, str] = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    # RFC 7638: SHA-256 over the required members, sorted, without whitespace.
    canonical = json.dumps(
        {name: jwk[name] for name in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True
    )
    thumbprint = base64url_encode(hashlib.sha256(canonical.encode()).digest())
    return {
        "kty": "RSA",
        "use": "sig",
        "alg": ALGORITHM,
        "kid": thumbprint.decode("ascii"),
        "n": jwk["n"],
        "e": jwk["e"],
    }


def identity_header_secret(path: Path) -> str:
    """The managed-identity endpoint's ``IDENTITY_HEADER`` secret kept in ``path`` (created
    with mode 0600 if absent), so the issuer and the processes it serves agree on it
    without putting it on a command line."""
    try:
        secret = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return identity_header_secret(path)
        secret = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(secret)
        return secret
    if not secret:
        raise ValueError(f"{path}: the identity header secret file is empty")
    return secret


def _load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        key = _new_private_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            # O_EXCL: if another process created the file meanwhile, use its key instead.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return _load_or_create_key(path)
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
        return key
    loaded = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: expected an RSA private key in PEM")
    return loaded


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the dev issuer on loopback, or with ``--mint`` print one token and exit."""
    parser = argparse.ArgumentParser(
        prog="python -m shared.auth.dev_issuer",
        description="Local OIDC issuer for scorefn's local mode (never for Azure).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--key-file", type=Path, default=DEFAULT_KEY_FILE, help="PEM key, created if absent"
    )
    parser.add_argument("--mint", action="store_true", help="print a token and exit")
    parser.add_argument("--audience", help="aud of the minted token (with --mint)")
    parser.add_argument("--role", action="append", default=[], help="app role (repeatable)")
    parser.add_argument("--scope", action="append", default=[], help="scope (repeatable)")
    parser.add_argument("--tenant", default=DEV_TENANT)
    parser.add_argument("--lifetime", type=float, default=3600.0, help="seconds")
    parser.add_argument(
        "--identity-header-file",
        type=Path,
        help=(
            f"serve the managed-identity endpoint at {MSI_PATH}; its IDENTITY_HEADER secret "
            "is kept in this file (created if absent)"
        ),
    )
    args = parser.parse_args(argv)

    host = f"[{args.host}]" if ":" in args.host else args.host
    base_url = f"http://{host}:{args.port}"
    if not is_loopback_url(base_url):
        parser.error(f"--host {args.host!r} is not a loopback address; the dev issuer is local")
    issuer = DevIssuer.from_key_file(args.key_file, base_url)
    if args.mint:
        if not args.audience:
            parser.error("--mint needs --audience")
        token = issuer.mint_token(
            args.audience, args.role, args.tenant, args.lifetime, scopes=args.scope
        )
        sys.stdout.write(token + "\n")
        return 0

    import uvicorn  # only when serving: minting needs no server

    print(f"dev issuer: {issuer.issuer(args.tenant)} (kid {issuer.kid})", file=sys.stderr)
    secret = None
    if args.identity_header_file is not None:
        secret = identity_header_secret(args.identity_header_file)
    app = issuer.app(identity_header=secret)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
