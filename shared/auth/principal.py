"""Who a validated token speaks for."""

from __future__ import annotations

from dataclasses import dataclass

from shared.auth.authority import TokenVersion

__all__ = ["Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a token was validated for.

    App-only tokens (client credentials) carry app roles in ``roles``; delegated (user)
    tokens carry consented scopes in ``scopes`` and the user's app roles in ``roles``.
    """

    subject: str
    """``sub``: the principal, pairwise per application."""
    object_id: str | None
    """``oid``: the user's or service principal's object id, stable across applications."""
    tenant: str
    """``tid``: the tenant the token was issued in."""
    app_id: str | None
    """The calling client's application id: ``azp`` (v2.0) or ``appid`` (v1.0)."""
    roles: tuple[str, ...]
    """``roles``: app roles granted to the caller."""
    scopes: tuple[str, ...]
    """``scp`` split on spaces: delegated permissions (user tokens only)."""
    version: TokenVersion
    """``ver``: the access-token version."""
    expires_at: float
    """``exp``: when the token expires (Unix seconds)."""
