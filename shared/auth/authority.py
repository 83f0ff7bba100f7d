"""The token authority: which issuer strings a tenant's tokens carry and where its keys are.

Entra ID publishes, per tenant, an OpenID Connect metadata document at
``{base}/{tenant}/v2.0/.well-known/openid-configuration`` whose ``jwks_uri`` lists the
signing keys. Its access tokens name their issuer as

* v2.0: ``{base}/{tenant}/v2.0`` (``https://login.microsoftonline.com/{tid}/v2.0``)
* v1.0: ``https://sts.windows.net/{tid}/``

Local mode swaps the base for the dev issuer's loopback URL. It exists only when built
explicitly with :meth:`Authority.local_dev`; an ``Authority`` refuses to be built with a
plain-HTTP or loopback base unless ``local`` is set, and refuses ``local`` with anything
but a loopback base, so no configuration mistake makes production accept dev tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

__all__ = [
    "ENTRA_AUTHORITY",
    "ENTRA_V1_ISSUER_BASE",
    "Authority",
    "TokenVersion",
    "is_loopback_url",
]

ENTRA_AUTHORITY: Final = "https://login.microsoftonline.com"
"""The public-cloud Entra ID authority."""
ENTRA_V1_ISSUER_BASE: Final = "https://sts.windows.net"
"""Base of the issuer in v1.0 Entra access tokens (public cloud)."""

TokenVersion = Literal["1.0", "2.0"]
"""Entra access-token versions (the ``ver`` claim)."""

_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` is an http(s) URL on this machine's loopback interface."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and parts.hostname in _LOOPBACK_HOSTS


@dataclass(frozen=True, slots=True)
class Authority:
    """Where tokens come from: the issuer forms a tenant's tokens carry and its metadata URL.

    Build it with :meth:`entra` (the default everywhere) or :meth:`local_dev`.
    """

    base_url: str
    """Authority base, without a trailing slash (``https://login.microsoftonline.com``)."""
    v1_issuer_base: str
    """Base of v1.0 issuers (``https://sts.windows.net``; the dev issuer's own base locally)."""
    local: bool = False
    """Local mode: the base is the dev issuer on loopback. Never set in Azure."""

    def __post_init__(self) -> None:
        for name in ("base_url", "v1_issuer_base"):
            url = getattr(self, name)
            if url.endswith("/"):
                raise ValueError(f"{name} {url!r} must not end with '/'")
            if self.local and not is_loopback_url(url):
                raise ValueError(
                    f"{name} {url!r} is not a loopback URL; local mode only serves 127.0.0.1"
                )
            if not self.local and (urlsplit(url).scheme != "https" or is_loopback_url(url)):
                raise ValueError(
                    f"{name} {url!r} must be an https URL off this machine; "
                    "use Authority.local_dev() for the local dev issuer"
                )

    @classmethod
    def entra(
        cls, base_url: str = ENTRA_AUTHORITY, v1_issuer_base: str = ENTRA_V1_ISSUER_BASE
    ) -> Authority:
        """Entra ID (the public cloud by default; pass the bases of a sovereign cloud)."""
        return cls(base_url=base_url, v1_issuer_base=v1_issuer_base)

    @classmethod
    def local_dev(cls, base_url: str) -> Authority:
        """The local dev issuer at ``base_url`` (``http://127.0.0.1:7070``): local mode.

        Tokens it mints name ``{base_url}/{tenant}/v2.0`` as issuer, so they only pass a
        validator whose policy was built with this authority.
        """
        base = base_url.rstrip("/")
        return cls(base_url=base, v1_issuer_base=base, local=True)

    def issuer(self, tenant: str, version: TokenVersion) -> str:
        """The ``iss`` a ``version`` token of ``tenant`` must carry."""
        if version == "1.0":
            return f"{self.v1_issuer_base}/{tenant}/"
        return f"{self.base_url}/{tenant}/v2.0"

    def metadata_url(self, tenant: str) -> str:
        """The tenant's OpenID Connect metadata document (it names ``jwks_uri``)."""
        return f"{self.base_url}/{tenant}/v2.0/.well-known/openid-configuration"
