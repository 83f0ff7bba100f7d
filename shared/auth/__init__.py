"""Authentication and authorisation for scorefn endpoints, free of any HTTP framework.

* ``validator``: ``TokenValidator`` — Entra ID access tokens (RS256, JWKS) to a ``Principal``;
* ``checks``: ``TokenPolicy`` and the pure header / claims decisions;
* ``jwks``: ``JwksClient`` — per-tenant signing keys, cached, refetched at most once a minute;
* ``authority``: ``Authority`` — Entra ID, or the local dev issuer (local mode, explicit only);
* ``roles``: ``require_role`` — 403 unless the principal holds the role;
* ``bearer``: the ``Authorization`` header in, the ``WWW-Authenticate`` challenge out;
* ``keys``: ``EndpointKeys`` — primary / secondary endpoint keys, stored as salted hashes;
* ``hop_tokens``: ``HopTokens`` — the router's own token for the hop to deployments, cached;
* ``hop_guard``: ``HopGuard`` — a scoring app letting in only the router's token;
* ``dev_issuer``: the local OIDC issuer (not imported here: it pulls in Starlette).

Errors are ``shared.errors.AuthenticationError`` (401) and ``PermissionDeniedError`` (403).

Local mode is switched on in exactly one way: building the ``TokenPolicy`` (and its
``JwksClient``) with ``Authority.local_dev("http://127.0.0.1:<port>")``. Every default is
``Authority.entra()``, which expects ``https://login.microsoftonline.com/{tid}/v2.0`` as
issuer, so dev tokens (issuer ``http://127.0.0.1:<port>/{tid}/v2.0``) are refused unless
local mode was configured explicitly; ``Authority`` refuses a loopback base outside local
mode and anything but loopback inside it.
"""

from shared.auth.authority import Authority
from shared.auth.bearer import bearer_token, www_authenticate
from shared.auth.checks import TokenPolicy, check_claims, check_header
from shared.auth.jwks import JwksClient
from shared.auth.keys import EndpointKeys, KeySlot, require_key
from shared.auth.principal import Principal
from shared.auth.roles import require_role
from shared.auth.validator import TokenValidator

__all__ = [
    "Authority",
    "EndpointKeys",
    "JwksClient",
    "KeySlot",
    "Principal",
    "TokenPolicy",
    "TokenValidator",
    "bearer_token",
    "check_claims",
    "check_header",
    "require_key",
    "require_role",
    "www_authenticate",
]
