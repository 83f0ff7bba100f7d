"""Who may call an endpoint: the auth mode of its spec applied to a request's credentials.

* ``entra``: an access token validated by ``TokenValidator`` with the endpoint's
  ``TokenPolicy``; scoring needs ``invoke_role`` (app role or scope), traffic changes
  need ``admin_role`` as an app role.
* ``key``: ``Authorization: Bearer <key>`` matching one of the endpoint's two stored key
  hashes. Keys grant scoring only; traffic is changed with storage access
  (``scorefn traffic set``), as Azure ML keeps it on the control plane.
* ``none``: anyone, and only on a router in local mode.

Which issuer is trusted is decided once, by the router's settings: the dev issuer when
``local_issuer`` is set (``Authority.local_dev``), Entra ID otherwise.
"""

from __future__ import annotations

import re
from typing import Literal

from shared.auth import (
    Authority,
    JwksClient,
    TokenPolicy,
    TokenValidator,
    bearer_token,
    require_key,
    require_role,
)
from shared.errors import AuthenticationError, PermissionDeniedError
from shared.routing.endpoint import AuthSpec
from shared.routing.store import StoredEndpoint

__all__ = ["Access", "EndpointAccess", "access_for_path"]

Access = Literal["invoke", "admin"]
"""What a request wants to do: score, or read/change traffic."""

_ADMIN_PATH = re.compile(r"v2/repository/models/[^/]+/(?:load|unload)/?")


def access_for_path(path: str) -> Access:
    """What forwarding ``path`` (under a deployment's ``/api/``) needs: the model
    repository's ``load`` / ``unload`` change what a deployment holds (admin); every
    other path scores or reads (invoke)."""
    return "admin" if _ADMIN_PATH.fullmatch(path) else "invoke"


class EndpointAccess:
    """Checks requests against endpoints' auth settings; one per router process."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority
        self._keys: JwksClient | None = None
        self._validators: dict[AuthSpec, TokenValidator] = {}

    @property
    def local(self) -> bool:
        """Whether this router trusts the local dev issuer (local mode)."""
        return self.authority.local

    async def aclose(self) -> None:
        """Close the shared key client."""
        if self._keys is not None:
            await self._keys.aclose()

    def _validator(self, auth: AuthSpec) -> TokenValidator:
        validator = self._validators.get(auth)
        if validator is None:
            if self._keys is None:  # created on first use, on the serving loop
                self._keys = JwksClient(self.authority)
            policy = TokenPolicy.from_spec(auth, authority=self.authority)
            validator = self._validators[auth] = TokenValidator(policy, keys=self._keys)
        return validator

    async def check(
        self, endpoint: StoredEndpoint, authorization: str | None, access: Access
    ) -> None:
        """Return if the request may do ``access`` on ``endpoint``; else raise
        ``AuthenticationError`` (401) or ``PermissionDeniedError`` (403)."""
        auth = endpoint.spec.auth
        name = endpoint.spec.name
        if auth.mode == "none":
            if not self.local:
                raise PermissionDeniedError(
                    f"endpoint {name!r} has auth mode 'none', which only a router in "
                    "local mode serves; use mode entra or key"
                )
            return
        if auth.mode == "key":
            if access == "admin":
                raise PermissionDeniedError(
                    f"endpoint {name!r} uses key auth; keys grant scoring only. Change "
                    "traffic with `scorefn traffic set` or switch the endpoint to entra auth"
                )
            if endpoint.keys is None:
                raise AuthenticationError(
                    f"endpoint {name!r} has no keys yet; create them with "
                    f"`scorefn keys regenerate {name} primary`"
                )
            require_key(endpoint.keys, bearer_token(authorization))
            return
        principal = await self._validator(auth).authenticate(authorization)
        if access == "admin":
            require_role(principal, auth.admin_role, accept_scope=False)
        else:
            require_role(principal, auth.invoke_role)
