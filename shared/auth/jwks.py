"""Signing keys per tenant: discovered from OIDC metadata, fetched as a JWKS, cached.

One ``JwksClient`` per process (one pooled ``httpx.AsyncClient``), shared by every
endpoint's validator. Per tenant it keeps the last good key set and refreshes it:

* when a token names a ``kid`` the cache does not hold (key rotation), and
* when the set is older than ``max_age_s`` (so keys the authority dropped stop working),

but never more often than once per ``refetch_interval_s`` per tenant, however many
tokens arrive: a flood of tokens with made-up ``kid`` values costs at most one fetch a
minute. Refreshes of one tenant are serialised, so concurrent requests share one fetch.
A failed fetch keeps the keys already held; a token whose key is not held is then
refused with the reason the fetch failed. Nothing here raises anything but
``AuthenticationError``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from jwt import PyJWK, PyJWTError

from shared.auth.authority import Authority, is_loopback_url
from shared.auth.checks import ALGORITHM
from shared.auth.quoting import quoted
from shared.errors import AuthenticationError
from shared.telemetry.state import TELEMETRY

__all__ = ["DEFAULT_MAX_AGE_S", "DEFAULT_REFETCH_INTERVAL_S", "JwksClient"]

DEFAULT_REFETCH_INTERVAL_S: Final = 60.0
"""Least time between two fetches of one tenant's keys, in seconds."""
DEFAULT_MAX_AGE_S: Final = 24 * 3600.0
"""Age after which a tenant's key set is refreshed even if every kid is known."""
_MIN_RSA_BITS: Final = 2048


class _FetchError(Exception):
    """A key fetch failed; ``str`` is the short reason shown to callers."""


@dataclass(slots=True)
class _TenantKeys:
    keys: dict[str, PyJWK] = field(default_factory=dict)
    jwks_uri: str | None = None
    fetched_at: float | None = None  # last success (clock seconds)
    attempted_at: float | None = None  # last attempt, successful or not
    failure: str | None = None  # why the last attempt failed; None after a success
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class JwksClient:
    """Fetches and caches the RS256 signing keys of each tenant of one ``Authority``.

    ``jwks_urls`` maps a tenant to its JWKS URL directly, skipping metadata discovery.
    ``clock`` is monotonic seconds (injectable for tests). Pass ``client`` to share an
    ``httpx.AsyncClient``; otherwise one is created and closed by :meth:`aclose`.
    """

    def __init__(
        self,
        authority: Authority,
        *,
        jwks_urls: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        refetch_interval_s: float = DEFAULT_REFETCH_INTERVAL_S,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.authority = authority
        self._jwks_urls = dict(jwks_urls or {})
        for tenant, url in self._jwks_urls.items():
            if not _allowed_url(url):
                raise ValueError(f"JWKS URL {url!r} of tenant {tenant!r} must be https")
        self._owns_client = client is None
        # Proxies configured in the environment do not apply to the loopback dev issuer.
        self._client = client or httpx.AsyncClient(
            timeout=timeout_s, follow_redirects=False, trust_env=not authority.local
        )
        self._refetch_interval_s = refetch_interval_s
        self._max_age_s = max_age_s
        self._clock = clock
        self._tenants: dict[str, _TenantKeys] = {}

    async def __aenter__(self) -> JwksClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_client:
            await self._client.aclose()

    async def get_signing_key(self, tenant: str, kid: str) -> PyJWK:
        """The key ``kid`` of ``tenant``, fetching the tenant's JWKS when allowed.

        ``AuthenticationError`` names the kid when it is not in the key set (or when the
        key set could not be fetched, with the reason).
        """
        entry = self._tenants.get(tenant)
        if entry is None:
            entry = self._tenants[tenant] = _TenantKeys()
        key = entry.keys.get(kid)
        if key is not None and not self._stale(entry):
            return key
        async with entry.lock:
            # Another request may have refreshed while this one waited for the lock.
            wanted = kid not in entry.keys or self._stale(entry)
            if wanted and self._may_fetch(entry):
                await self._refresh(tenant, entry)
        key = entry.keys.get(kid)
        if key is not None:
            return key
        if entry.failure is not None:
            raise AuthenticationError(
                f"signing key {quoted(kid)} not found: the tenant's JWKS could not be "
                f"fetched ({entry.failure})"
            )
        raise AuthenticationError(f"signing key {quoted(kid)} not found in the tenant's JWKS")

    def _stale(self, entry: _TenantKeys) -> bool:
        return entry.fetched_at is None or self._clock() - entry.fetched_at >= self._max_age_s

    def _may_fetch(self, entry: _TenantKeys) -> bool:
        return (
            entry.attempted_at is None
            or self._clock() - entry.attempted_at >= self._refetch_interval_s
        )

    async def _refresh(self, tenant: str, entry: _TenantKeys) -> None:
        entry.attempted_at = self._clock()
        try:
            uri = self._jwks_urls.get(tenant) or entry.jwks_uri
            if uri is None:
                uri = await self._discover(tenant)
            keys = _parse_jwks(await self._get_json(uri), uri)
        except _FetchError as exc:
            entry.failure = str(exc)
            entry.jwks_uri = None  # discover again next time: the metadata may have moved
            if TELEMETRY.metrics is not None:
                TELEMETRY.metrics.jwks_fetch("failed")
            return
        if TELEMETRY.metrics is not None:
            TELEMETRY.metrics.jwks_fetch("ok")
        entry.jwks_uri = uri
        entry.keys = keys
        entry.fetched_at = entry.attempted_at
        entry.failure = None

    async def _discover(self, tenant: str) -> str:
        url = self.authority.metadata_url(tenant)
        metadata = await self._get_json(url)
        uri = metadata.get("jwks_uri")
        if not isinstance(uri, str) or not _allowed_url(uri):
            raise _FetchError(f"{url} names no usable jwks_uri: {quoted(uri)}")
        return uri

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise _FetchError(f"{type(exc).__name__} from {url}") from exc
        if response.status_code != 200:
            raise _FetchError(f"HTTP {response.status_code} from {url}")
        try:
            body = response.json()
        except ValueError as exc:
            raise _FetchError(f"{url} did not return JSON") from exc
        if not isinstance(body, dict):
            raise _FetchError(f"{url} did not return a JSON object")
        return body


def _allowed_url(url: str) -> bool:
    # Plain HTTP only on loopback (the dev issuer, or a test JWKS); https everywhere else.
    return urlsplit(url).scheme == "https" or is_loopback_url(url)


def _parse_jwks(document: dict[str, Any], url: str) -> dict[str, PyJWK]:
    """The usable RS256 signature keys of a JWKS document, by kid (others are skipped)."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise _FetchError(f"{url} is not a JWKS (no 'keys' list)")
    keys: dict[str, PyJWK] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if (
            not isinstance(kid, str)
            or not kid
            or entry.get("kty") != "RSA"
            or entry.get("use", "sig") != "sig"
            or entry.get("alg", ALGORITHM) != ALGORITHM
        ):
            continue
        try:
            key = PyJWK(entry, algorithm=ALGORITHM)
        except PyJWTError:
            continue
        if getattr(key.key, "key_size", 0) < _MIN_RSA_BITS:
            continue
        keys[kid] = key
    if not keys:
        raise _FetchError(f"{url} has no usable {ALGORITHM} signing keys")
    return keys
