"""The router's own bearer token for the hop to its deployments, cached until near expiry.

The router authenticates each forwarded (and mirrored) request to a scoring app with a
token from its identity: azure-identity's ``ManagedIdentityCredential`` in Azure (the
user-assigned identity named by its client id). Locally ``scorefn up`` points the same
credential at the dev issuer, which serves the App Service managed-identity endpoint
(``IDENTITY_ENDPOINT`` / ``IDENTITY_HEADER``; see ``shared.auth.dev_issuer``).

``HopTokens.authorization()`` answers from memory while the token has more than
``refresh_margin_s`` left, so the hop costs nothing per request; otherwise one caller
fetches a new token (in a worker thread: the credential is synchronous) while concurrent
ones wait for it. When fetching fails, a token that has not expired yet is kept (and
another fetch tried after ``retry_after_s``); with none, ``UpstreamError`` (502) says
why, and the credential is not asked again for ``retry_after_s`` seconds, so a broken
identity endpoint is not hammered once per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final, Protocol

from azure.core.credentials import AccessToken

from shared.errors import UpstreamError

__all__ = ["DEFAULT_REFRESH_MARGIN_S", "HopTokens", "TokenSource", "hop_scope"]

log = logging.getLogger(__name__)

DEFAULT_REFRESH_MARGIN_S: Final = 300.0
"""A token is renewed once it has less than this many seconds left (Entra: ~24 h MI tokens)."""
_RETRY_AFTER_S: Final = 5.0


class TokenSource(Protocol):
    """What ``HopTokens`` needs of an azure-identity ``TokenCredential``."""

    def get_token(self, *scopes: str) -> AccessToken: ...


def hop_scope(audience: str) -> str:
    """The scope to ask an identity for when calling an API whose audience is ``audience``."""
    return audience if audience.endswith("/.default") else f"{audience.rstrip('/')}/.default"


class HopTokens:
    """``Authorization`` header values for the hop, from ``credential`` for ``scope``.

    ``clock`` gives Unix seconds (injectable for tests).
    """

    def __init__(
        self,
        credential: TokenSource,
        scope: str,
        *,
        refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
        retry_after_s: float = _RETRY_AFTER_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.scope = scope
        self._credential = credential
        self._margin_s = refresh_margin_s
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._header = ""
        self._expires_on = float("-inf")
        self._failed_at = float("-inf")
        self._failure = ""
        self._lock: asyncio.Lock | None = None

    async def authorization(self) -> str:
        """``Bearer <token>``; ``UpstreamError`` when no valid token can be had."""
        if self._clock() < self._expires_on - self._margin_s:
            return self._header
        if self._lock is None:  # created on the serving loop
            self._lock = asyncio.Lock()
        async with self._lock:
            now = self._clock()
            if now < self._expires_on - self._margin_s:
                return self._header  # another caller renewed it meanwhile
            if now - self._failed_at >= self._retry_after_s:
                await self._renew()
            if self._clock() < self._expires_on:
                return self._header  # fresh, or old but still valid
        raise UpstreamError(
            f"the router could not get a token for the hop to its deployments "
            f"(scope {self.scope}): {self._failure}"
        )

    async def _renew(self) -> None:
        try:
            token = await asyncio.to_thread(self._credential.get_token, self.scope)
        except Exception as exc:  # any credential failure: reported, the old token kept
            self._failed_at = self._clock()
            self._failure = f"{type(exc).__name__}: {exc}"
            log.warning("hop token for %s not renewed: %s", self.scope, self._failure)
            return
        self._header = f"Bearer {token.token}"
        self._expires_on = float(token.expires_on)
        self._failed_at = float("-inf")
