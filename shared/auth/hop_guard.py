"""The scoring app's side of hop authentication: only the router's token gets in.

When a scoring app is configured with a hop audience (``ScoringSettings.hop_audience``),
every request but the open ones (health, the OpenAPI document and docs) must carry
``Authorization: Bearer <token>`` with a token that ``TokenValidator`` accepts for that
audience and tenant: issued by Entra ID, or in local mode by the dev issuer (only when
``hop_local_issuer`` is set). With ``allowed_clients``, the token must also name one of
them as its client application (``azp`` / ``appid``) or object id (``oid``): the
router's managed identity, not any identity of the tenant that can get a token for the
audience.

A refused token is a 401 with ``WWW-Authenticate`` (``AuthenticationError``); a valid
token of another identity a 403 (``PermissionDeniedError``). Verified tokens are
remembered by the validator until they expire, so the router's one token costs a
dictionary lookup per request.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.auth.authority import Authority
from shared.auth.checks import TokenPolicy
from shared.auth.principal import Principal
from shared.auth.validator import TokenValidator
from shared.errors import PermissionDeniedError
from shared.settings import ScoringSettings

__all__ = ["HopGuard", "hop_guard"]


class HopGuard:
    """Checks the hop token of requests to a scoring app."""

    def __init__(self, validator: TokenValidator, *, allowed_clients: Iterable[str] = ()) -> None:
        self.validator = validator
        self.allowed_clients = frozenset(c.strip().lower() for c in allowed_clients if c.strip())

    @classmethod
    def build(
        cls,
        *,
        audience: str,
        tenant: str,
        local_issuer: str | None = None,
        allowed_clients: Iterable[str] = (),
    ) -> HopGuard:
        """A guard accepting tokens for ``audience`` from ``tenant``: Entra ID's, or the dev
        issuer's at ``local_issuer`` (local mode). ``ValueError`` names a bad setting."""
        authority = Authority.local_dev(local_issuer) if local_issuer else Authority.entra()
        policy = TokenPolicy(tenants=(tenant,), audiences=(audience,), authority=authority)
        return cls(TokenValidator(policy), allowed_clients=allowed_clients)

    async def aclose(self) -> None:
        """Close the validator's key client."""
        await self.validator.aclose()

    async def check(self, authorization: str | None) -> Principal:
        """The hop's principal; ``AuthenticationError`` (401) or ``PermissionDeniedError``."""
        principal = await self.validator.authenticate(authorization)
        allowed = self.allowed_clients
        if allowed and not (
            (principal.app_id or "").lower() in allowed
            or (principal.object_id or "").lower() in allowed
        ):
            raise PermissionDeniedError(
                f"client {principal.app_id or principal.subject!r} may not call this "
                "deployment; only the router's identity may (hop_allowed_clients)"
            )
        return principal


def hop_guard(settings: ScoringSettings) -> HopGuard | None:
    """The guard ``settings`` ask for (``hop_audience`` set), else None (hop auth off)."""
    if not settings.hop_audience:
        return None
    if not settings.hop_tenant:
        raise ValueError(
            "SCOREFN_HOP_AUDIENCE is set but SCOREFN_HOP_TENANT is not; hop authentication "
            "needs the tenant id whose tokens it accepts"
        )
    return HopGuard.build(
        audience=settings.hop_audience,
        tenant=settings.hop_tenant,
        local_issuer=settings.hop_local_issuer,
        allowed_clients=settings.hop_allowed_clients.split(","),
    )
