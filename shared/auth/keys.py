"""Endpoint keys: two per endpoint (primary and secondary, as in Azure ML), stored as hashes.

Keys are 256-bit random strings from ``secrets``; the plaintext is returned once, when it
is generated, and never stored. The record keeps ``hmac-sha256$<salt>$<digest>`` per key
(base64url, a fresh 16-byte salt per key), so a leaked table reveals no key and equal keys
do not hash alike. A fast hash is enough here: the keys are random, not passwords, so
there is nothing to guess. Verification hashes the presented key once per slot and
compares fixed-length digests with ``hmac.compare_digest``, always checking both slots,
so timing says nothing about how close a guess was or which slot nearly matched.

Two keys allow rotation without downtime: clients move to the secondary, the primary is
regenerated, clients move back. ``EndpointKeys`` is a frozen pydantic model whose JSON
form is flat (strings only), ready for a table-storage entity.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from typing import Final, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import AuthenticationError

__all__ = [
    "KEY_BYTES",
    "EndpointKeys",
    "IssuedKeys",
    "KeySlot",
    "RegeneratedKey",
    "require_key",
]

KEY_BYTES: Final = 32
"""Random bytes per key (the plaintext is their base64url form, 43 characters)."""
KeySlot = Literal["primary", "secondary"]
"""Which of an endpoint's two keys."""

_SCHEME: Final = "hmac-sha256"
_SALT_BYTES: Final = 16
_HASH_PATTERN: Final = rf"^{_SCHEME}\$[A-Za-z0-9_-]{{22}}\$[A-Za-z0-9_-]{{43}}$"
_SLOTS: Final[tuple[KeySlot, ...]] = ("primary", "secondary")


class IssuedKeys(NamedTuple):
    """A new record and its two plaintext keys (shown to the user once, never stored)."""

    record: EndpointKeys
    primary: str
    secondary: str


class RegeneratedKey(NamedTuple):
    """The record after regenerating one key, and that key's plaintext (shown once)."""

    record: EndpointKeys
    key: str


class EndpointKeys(BaseModel):
    """The stored form of an endpoint's two keys: hashes only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str = Field(min_length=1, description="endpoint name")
    primary: str = Field(pattern=_HASH_PATTERN, description="salted hash of the primary key")
    secondary: str = Field(pattern=_HASH_PATTERN, description="salted hash of the secondary key")
    primary_created_at: datetime = Field(description="when the primary key was generated")
    secondary_created_at: datetime = Field(description="when the secondary key was generated")

    @classmethod
    def generate(cls, endpoint: str, *, now: datetime | None = None) -> IssuedKeys:
        """Two fresh keys for ``endpoint``: the record to store and the plaintexts."""
        at = now or datetime.now(UTC)
        primary, secondary = _new_key(), _new_key()
        record = cls(
            endpoint=endpoint,
            primary=_hash(primary),
            secondary=_hash(secondary),
            primary_created_at=at,
            secondary_created_at=at,
        )
        return IssuedKeys(record, primary, secondary)

    def regenerate(self, which: KeySlot, *, now: datetime | None = None) -> RegeneratedKey:
        """Replace the ``which`` key with a fresh one; the other keeps working."""
        if which not in _SLOTS:
            raise ValueError(f"key slot {which!r} is not known; expected primary or secondary")
        key = _new_key()
        record = self.model_copy(
            update={which: _hash(key), f"{which}_created_at": now or datetime.now(UTC)}
        )
        return RegeneratedKey(record, key)

    def verify(self, presented: str) -> KeySlot | None:
        """Which key ``presented`` is, or ``None``. Checks both slots every time."""
        matched: KeySlot | None = None
        for slot in _SLOTS:
            if _matches(presented, getattr(self, slot)) and matched is None:
                matched = slot
        return matched


def require_key(keys: EndpointKeys, presented: str) -> KeySlot:
    """The slot of ``presented``, or ``AuthenticationError`` when it is neither key."""
    slot = keys.verify(presented)
    if slot is None:
        raise AuthenticationError(f"the key is not valid for endpoint {keys.endpoint!r}")
    return slot


def _new_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _digest(salt: bytes, key: str) -> bytes:
    # surrogatepass: any str a header decoder can produce hashes instead of raising.
    return hmac.new(salt, key.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()


def _hash(key: str) -> str:
    salt = secrets.token_bytes(_SALT_BYTES)
    return f"{_SCHEME}${_b64(salt)}${_b64(_digest(salt, key))}"


def _matches(presented: str, stored: str) -> bool:
    _, salt, digest = stored.split("$")
    return hmac.compare_digest(_digest(_unb64(salt), presented), _unb64(digest))
