"""A ``TokenCredential`` for local mode: tokens minted with the dev issuer's signing key.

It reads the same PEM file the running dev issuer serves the public half of, so its tokens
validate at a router whose settings trust that issuer (and nowhere else). The scope's
``/.default`` suffix is dropped to give the audience, as Entra ID does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken

from shared.auth.dev_issuer import DEFAULT_KEY_FILE, DEV_TENANT, DevIssuer

__all__ = ["DevIssuerCredential", "audience_of"]


def audience_of(scope: str) -> str:
    """``api://x/.default`` -> ``api://x`` (the audience a token for ``scope`` names)."""
    return scope.removesuffix("/.default")


class DevIssuerCredential:
    """Mints dev tokens carrying ``roles`` for the scope's audience (local mode only)."""

    def __init__(
        self,
        issuer_url: str = "http://127.0.0.1:7070",
        *,
        key_file: Path = DEFAULT_KEY_FILE,
        roles: Sequence[str] = ("Endpoint.Invoke",),
        tenant: str = DEV_TENANT,
        lifetime_s: float = 3600.0,
    ) -> None:
        self._issuer = DevIssuer.from_key_file(key_file, issuer_url)
        self._roles = tuple(roles)
        self._tenant = tenant
        self._lifetime_s = lifetime_s

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """A token for the first scope (``TokenCredential`` protocol)."""
        if not scopes:
            raise ValueError("get_token needs a scope, e.g. api://scorefn-fraud/.default")
        token = self._issuer.mint_token(
            audience_of(scopes[0]),
            self._roles,
            tenant_id or self._tenant,
            self._lifetime_s,
        )
        return AccessToken(token, int(time.time() + self._lifetime_s))
