"""Authorisation: whether a validated principal holds the role an operation needs."""

from __future__ import annotations

from shared.auth.principal import Principal
from shared.errors import PermissionDeniedError

__all__ = ["require_role"]


def require_role(principal: Principal, role: str, *, accept_scope: bool = True) -> None:
    """Refuse with ``PermissionDeniedError`` unless ``principal`` holds ``role``.

    App-only tokens carry app roles in ``roles``; delegated (user) tokens carry consented
    scopes in ``scp``. With ``accept_scope`` (the default, used for invoke) either grants
    the role; pass ``accept_scope=False`` to require an app role (e.g. for admin).
    """
    if role in principal.roles or (accept_scope and role in principal.scopes):
        return
    held = f"roles: {_listed(principal.roles)}"
    if accept_scope:
        raise PermissionDeniedError(
            f"role {role!r} is required; the token has {held}; scopes: {_listed(principal.scopes)}"
        )
    raise PermissionDeniedError(f"app role {role!r} is required; the token has {held}")


def _listed(values: tuple[str, ...]) -> str:
    return ", ".join(values) if values else "(none)"
