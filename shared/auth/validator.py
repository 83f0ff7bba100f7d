"""Entra ID access-token validation: a bearer token in, a ``Principal`` out.

The steps, each refusing with ``AuthenticationError`` (401) and a specific message:

1. the token is a compact JWS of reasonable size (``malformed token`` otherwise);
2. its header names ``alg`` RS256 and a ``kid`` (:func:`~shared.auth.checks.check_header`);
3. its claims pass the policy at ``now``: tenant, version, issuer, audience, ``exp``,
   ``nbf`` (:func:`~shared.auth.checks.check_claims`);
4. the tenant's JWKS holds ``kid`` (:class:`~shared.auth.jwks.JwksClient`);
5. the RS256 signature verifies with that key (PyJWT).

Steps 2 and 3 read the token before its signature is checked. That is safe because they
can only refuse: the principal is returned only after step 5 has verified the signature
over exactly the bytes those claims were decoded from. Doing them first means a token
that would be refused anyway (wrong tenant, expired) never costs a key lookup.

Tokens that passed every step are remembered (bounded LRU, ``CACHE_SIZE``) until their
``exp`` (plus the policy's leeway): a caller reuses one token for many requests, and
verifying an RS256 signature and decoding the claims cost far more than the request's
scoring. ``nbf`` cannot become false later, and ``exp`` is re-checked on every hit; a
signing key removed from the JWKS stops new tokens at once but not ones already
verified, which expire within their lifetime (about an hour for Entra tokens).

Local mode: a policy built with ``Authority.local_dev(base_url)`` accepts the dev
issuer's tokens; a policy with the default ``Authority.entra()`` expects
``https://login.microsoftonline.com/{tid}/v2.0`` as issuer and so refuses them at step 3.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import jwt
from jwt.types import Options

from shared.auth.bearer import bearer_token
from shared.auth.checks import ALGORITHM, TokenPolicy, check_claims, check_header
from shared.auth.jwks import JwksClient
from shared.auth.principal import Principal
from shared.errors import AuthenticationError

__all__ = ["CACHE_SIZE", "MAX_TOKEN_CHARS", "TokenValidator"]

CACHE_SIZE: Final = 4096
"""Verified tokens remembered per validator (least recently used dropped first)."""

MAX_TOKEN_CHARS: Final = 32 * 1024
"""Longest token accepted; Entra access tokens are a few kilobytes."""

_MALFORMED: Final = "malformed token"
# Signature only: every claim is checked by check_claims, with our own messages.
_SIGNATURE_ONLY: Final[Options] = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "enforce_minimum_key_length": True,
}


class TokenValidator:
    """Validates access tokens against one ``TokenPolicy`` (one endpoint's ``auth``).

    Share one ``JwksClient`` between the validators of a process (its authority must be
    the policy's); without one, the validator creates its own and :meth:`aclose` closes
    it. ``now`` gives Unix seconds (injectable for tests).
    """

    def __init__(
        self,
        policy: TokenPolicy,
        *,
        keys: JwksClient | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        if keys is not None and keys.authority != policy.authority:
            raise ValueError(
                f"the key client serves {keys.authority.base_url}; "
                f"the policy trusts {policy.authority.base_url}"
            )
        self.policy = policy
        self._owns_keys = keys is None
        self._keys = keys if keys is not None else JwksClient(policy.authority)
        self._now = now
        self._verified: OrderedDict[str, Principal] = OrderedDict()

    async def aclose(self) -> None:
        """Close the key client if this validator created it."""
        if self._owns_keys:
            await self._keys.aclose()

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer <token>`` header value."""
        return await self.validate(bearer_token(authorization))

    async def validate(self, token: str) -> Principal:
        """The principal ``token`` speaks for; ``AuthenticationError`` says why not."""
        known = self._verified.get(token)
        if known is not None:
            if self._now() < known.expires_at + self.policy.leeway_s:
                self._verified.move_to_end(token)
                return known
            del self._verified[token]  # expired: the full check below says so
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationError(
                f"token is {len(token)} characters; the limit is {MAX_TOKEN_CHARS}"
            )
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthenticationError(_MALFORMED) from exc
        kid = check_header(header)
        principal = check_claims(claims, self.policy, self._now())
        key = await self._keys.get_signing_key(principal.tenant, kid)
        try:
            jwt.decode(token, key, algorithms=[ALGORITHM], options=_SIGNATURE_ONLY)
        except jwt.InvalidSignatureError as exc:
            raise AuthenticationError("signature verification failed") from exc
        except jwt.PyJWTError as exc:
            raise AuthenticationError(_MALFORMED) from exc
        self._verified[token] = principal
        if len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal
