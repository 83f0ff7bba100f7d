"""The decisions on a token's header and claims, as pure functions.

``check_header`` and ``check_claims`` take the decoded parts, the ``TokenPolicy`` and (for
claims) ``now``; they raise ``AuthenticationError`` naming the value that came and what is
accepted, or return what the caller needs. Nothing here does I/O or verifies signatures:
the validator runs these first, on the unverified token, so a token that would be refused
anyway never causes a key lookup, and then verifies the signature over those same bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, get_args

from shared.auth.authority import Authority, TokenVersion
from shared.auth.principal import Principal
from shared.auth.quoting import quoted
from shared.errors import AuthenticationError
from shared.routing.endpoint import AuthSpec

__all__ = [
    "ALGORITHM",
    "DEFAULT_LEEWAY_S",
    "TokenPolicy",
    "check_claims",
    "check_header",
    "format_time",
]

ALGORITHM: Final = "RS256"
"""The only signing algorithm accepted (Entra signs access tokens with RS256)."""
DEFAULT_LEEWAY_S: Final = 60.0
"""Clock skew allowed on ``exp`` and ``nbf``, in seconds."""
_MAX_LEEWAY_S: Final = 300.0
_VERSIONS: Final[tuple[str, ...]] = get_args(TokenVersion)
# Tenant ids end up in metadata URLs; allow GUIDs and domain names, nothing path-like.
_TENANT: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
_LATEST_NUMERIC_DATE: Final = 253_402_300_799  # 9999-12-31T23:59:59Z


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """What tokens an endpoint accepts. Refuses to be built without tenants or audiences."""

    tenants: tuple[str, ...]
    """Accepted tenant ids (``tid``)."""
    audiences: tuple[str, ...]
    """Accepted ``aud`` values: the API's client id and/or its ``api://...`` URI."""
    versions: tuple[TokenVersion, ...] = ("2.0",)
    """Accepted access-token versions; v1.0 tokens only when ``"1.0"`` is listed."""
    authority: Authority = field(default_factory=Authority.entra)
    """Issuer forms and key location; ``Authority.local_dev(...)`` only in local mode."""
    leeway_s: float = DEFAULT_LEEWAY_S
    """Clock skew allowed on ``exp`` and ``nbf``, 0 to 300 seconds."""

    def __post_init__(self) -> None:
        if not self.tenants:
            raise ValueError("a token policy needs at least one accepted tenant id")
        if not self.audiences or not all(self.audiences):
            raise ValueError("a token policy needs at least one non-empty accepted audience")
        for tenant in self.tenants:
            if not _TENANT.match(tenant):
                raise ValueError(
                    f"tenant id {tenant!r} is not valid; expected a GUID or a domain name"
                )
        if not self.versions:
            raise ValueError("a token policy needs at least one accepted token version")
        for version in self.versions:
            if version not in _VERSIONS:
                raise ValueError(
                    f"token version {version!r} is not known; expected {' or '.join(_VERSIONS)}"
                )
        if not 0.0 <= self.leeway_s <= _MAX_LEEWAY_S:
            raise ValueError(f"leeway_s is {self.leeway_s}; expected 0 to {_MAX_LEEWAY_S:g}")

    @classmethod
    def from_spec(
        cls,
        spec: AuthSpec,
        *,
        authority: Authority | None = None,
        leeway_s: float = DEFAULT_LEEWAY_S,
    ) -> TokenPolicy:
        """The policy of an endpoint's ``auth`` section (Entra unless ``authority`` says)."""
        return cls(
            tenants=spec.tenants,
            audiences=spec.audiences,
            versions=spec.token_versions,
            authority=authority if authority is not None else Authority.entra(),
            leeway_s=leeway_s,
        )


def format_time(seconds: float) -> str:
    """Unix seconds as ``2026-11-23T10:00:00Z``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_header(header: Mapping[str, Any]) -> str:
    """The signing key id of a token whose (unverified) JOSE ``header`` is acceptable.

    Only RS256 passes: ``none``, every HMAC algorithm (the classic attack signs HS256
    with the RSA public key as the secret) and everything else are refused by name.
    """
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise AuthenticationError(f"algorithm {quoted(alg)} is not allowed; only {ALGORITHM}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AuthenticationError("token header has no 'kid'; cannot choose a signing key")
    return kid


def check_claims(claims: Mapping[str, Any], policy: TokenPolicy, now: float) -> Principal:
    """The ``Principal`` of ``claims`` if they pass ``policy`` at Unix time ``now``.

    Checks, in order: ``tid`` allowed; ``ver`` accepted; ``iss`` is exactly the issuer of
    that tenant and version; ``aud`` accepted; not expired (``exp`` required); not before
    ``nbf`` (when present), both with ``policy.leeway_s``.
    """
    tenant = _string(claims, "tid")
    if tenant not in policy.tenants:
        raise AuthenticationError(f"tenant {quoted(tenant)} is not allowed")

    version = _string(claims, "ver")
    if version not in policy.versions:
        raise AuthenticationError(
            f"token version {quoted(version)} is not accepted; "
            f"accepted: {', '.join(policy.versions)}"
        )

    issuer = _string(claims, "iss")
    expected_issuer = policy.authority.issuer(tenant, version)
    if issuer != expected_issuer:
        raise AuthenticationError(
            f"issuer {quoted(issuer)} is not accepted; expected {expected_issuer}"
        )

    _check_audience(claims, policy.audiences)

    expires_at = _numeric_date(claims, "exp", required=True)
    assert expires_at is not None
    if now >= expires_at + policy.leeway_s:
        raise AuthenticationError(f"token expired at {format_time(expires_at)}")
    not_before = _numeric_date(claims, "nbf", required=False)
    if not_before is not None and now + policy.leeway_s < not_before:
        raise AuthenticationError(f"token not valid before {format_time(not_before)}")

    app_claim = "azp" if version == "2.0" else "appid"
    return Principal(
        subject=_string(claims, "sub"),
        object_id=_optional_string(claims, "oid"),
        tenant=tenant,
        app_id=_optional_string(claims, app_claim),
        roles=_roles(claims),
        scopes=tuple((_optional_string(claims, "scp") or "").split()),
        version=version,
        expires_at=expires_at,
    )


def _check_audience(claims: Mapping[str, Any], accepted: tuple[str, ...]) -> None:
    if "aud" not in claims:
        raise AuthenticationError("token has no 'aud' claim")
    aud = claims["aud"]
    # Entra sends one string; RFC 7519 also allows a list (accepted if any entry is).
    values = aud if isinstance(aud, list) else [aud]
    if any(isinstance(value, str) and value in accepted for value in values):
        return
    expected = accepted[0] if len(accepted) == 1 else f"one of {', '.join(accepted)}"
    raise AuthenticationError(f"audience {quoted(aud)} is not accepted; expected {expected}")


def _string(claims: Mapping[str, Any], name: str) -> str:
    if name not in claims:
        raise AuthenticationError(f"token has no {name!r} claim")
    value = claims[name]
    if not isinstance(value, str):
        raise AuthenticationError(f"claim {name!r} must be a string; got {quoted(value)}")
    return value


def _optional_string(claims: Mapping[str, Any], name: str) -> str | None:
    return _string(claims, name) if name in claims else None


def _numeric_date(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    if name not in claims:
        if required:
            raise AuthenticationError(f"token has no {name!r} claim")
        return None
    value = claims[name]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= _LATEST_NUMERIC_DATE
    ):
        raise AuthenticationError(
            f"claim {name!r} must be a date in Unix seconds; got {quoted(value)}"
        )
    return float(value)


def _roles(claims: Mapping[str, Any]) -> tuple[str, ...]:
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise AuthenticationError(f"claim 'roles' must be a list of strings; got {quoted(roles)}")
    return tuple(roles)
