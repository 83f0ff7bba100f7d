"""HopTokens: the router's hop token is fetched once, reused until near expiry, renewed by
one caller at a time, and failures neither hammer the credential nor drop a valid token.

The credential is the seam: a ``TokenSource`` minting real RS256 tokens with a dev
issuer, counting calls, with a clock the test moves.
"""

from __future__ import annotations

import asyncio
import threading
import time

import jwt
import pytest
from azure.core.credentials import AccessToken

from shared.auth.dev_issuer import DevIssuer
from shared.auth.hop_guard import hop_guard
from shared.auth.hop_tokens import HopTokens, hop_scope
from shared.errors import UpstreamError
from shared.settings import ScoringSettings

SCOPE = "api://scorefn-scoring/.default"
LIFETIME = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class MintingCredential:
    """Mints a token per call (expiring ``LIFETIME`` after the clock's now); can fail."""

    def __init__(self, issuer: DevIssuer, clock: Clock, *, delay_s: float = 0.0) -> None:
        self.issuer = issuer
        self.clock = clock
        self.delay_s = delay_s
        self.calls = 0
        self.failing: Exception | None = None
        self._lock = threading.Lock()

    def get_token(self, *scopes: str) -> AccessToken:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay_s)
        if self.failing is not None:
            raise self.failing
        assert scopes == (SCOPE,)
        token = self.issuer.mint_token("api://scorefn-scoring", (), lifetime=LIFETIME)
        return AccessToken(token, int(self.clock() + LIFETIME))


@pytest.fixture(scope="module")
def issuer() -> DevIssuer:
    return DevIssuer.generate("http://127.0.0.1:7070")


def _token(header: str) -> str:
    scheme, _, token = header.partition(" ")
    assert scheme == "Bearer"
    jwt.get_unverified_header(token)  # a real JWS
    return token


async def test_one_fetch_serves_until_the_refresh_margin(issuer: DevIssuer) -> None:
    clock = Clock()
    credential = MintingCredential(issuer, clock)
    tokens = HopTokens(credential, SCOPE, refresh_margin_s=300, clock=clock)
    first = await tokens.authorization()
    _token(first)
    for _ in range(100):
        assert await tokens.authorization() == first
    clock.now += LIFETIME - 301  # 301 s left: still served from memory
    assert await tokens.authorization() == first
    assert credential.calls == 1
    clock.now += 2  # 299 s left: renewed
    second = await tokens.authorization()
    assert second != first
    assert credential.calls == 2


async def test_concurrent_callers_share_one_fetch(issuer: DevIssuer) -> None:
    clock = Clock()
    credential = MintingCredential(issuer, clock, delay_s=0.05)
    tokens = HopTokens(credential, SCOPE, clock=clock)
    headers = await asyncio.gather(*(tokens.authorization() for _ in range(20)))
    assert len(set(headers)) == 1
    assert credential.calls == 1


async def test_a_failure_without_a_token_is_a_502_and_not_retried_at_once(
    issuer: DevIssuer,
) -> None:
    clock = Clock()
    credential = MintingCredential(issuer, clock)
    credential.failing = RuntimeError("identity endpoint said 500")
    tokens = HopTokens(credential, SCOPE, retry_after_s=5, clock=clock)
    message = (
        "the router could not get a token for the hop to its deployments "
        "(scope api://scorefn-scoring/.default): RuntimeError: identity endpoint said 500"
    )
    for _ in range(10):
        with pytest.raises(UpstreamError) as caught:
            await tokens.authorization()
        assert str(caught.value) == message
    assert credential.calls == 1  # a flood of requests costs one call per retry_after_s
    clock.now += 5
    credential.failing = None
    _token(await tokens.authorization())
    assert credential.calls == 2


async def test_a_failed_renewal_keeps_the_token_that_is_still_valid(issuer: DevIssuer) -> None:
    clock = Clock()
    credential = MintingCredential(issuer, clock)
    tokens = HopTokens(credential, SCOPE, refresh_margin_s=300, retry_after_s=5, clock=clock)
    first = await tokens.authorization()
    clock.now += LIFETIME - 100  # inside the margin, not expired
    credential.failing = OSError("connection refused")
    assert await tokens.authorization() == first
    assert await tokens.authorization() == first
    assert credential.calls == 2  # one failed renewal, then quiet for retry_after_s
    clock.now += 101  # expired now, and the identity endpoint still fails
    with pytest.raises(UpstreamError):
        await tokens.authorization()


def test_hop_scope() -> None:
    assert hop_scope("api://scorefn-scoring") == "api://scorefn-scoring/.default"
    assert hop_scope("api://scorefn-scoring/") == "api://scorefn-scoring/.default"
    assert hop_scope("api://x/.default") == "api://x/.default"
    guid = "11111111-2222-4333-8444-555555555555"
    assert hop_scope(guid) == f"{guid}/.default"


def test_hop_guard_settings() -> None:
    assert hop_guard(ScoringSettings()) is None  # off unless asked for
    with pytest.raises(ValueError) as caught:
        hop_guard(ScoringSettings(hop_audience="api://scorefn-scoring"))
    assert str(caught.value) == (
        "SCOREFN_HOP_AUDIENCE is set but SCOREFN_HOP_TENANT is not; hop authentication "
        "needs the tenant id whose tokens it accepts"
    )
    guard = hop_guard(
        ScoringSettings(
            hop_audience="api://scorefn-scoring",
            hop_tenant="00000000-0000-4000-8000-00000000de7e",
            hop_allowed_clients=" A1, b2 ,,",
        )
    )
    assert guard is not None
    assert guard.allowed_clients == frozenset({"a1", "b2"})
    assert not guard.validator.policy.authority.local  # Entra unless a local issuer is set
    with pytest.raises(ValueError):  # local mode only on loopback
        hop_guard(
            ScoringSettings(
                hop_audience="api://scorefn-scoring",
                hop_tenant="00000000-0000-4000-8000-00000000de7e",
                hop_local_issuer="http://issuer.example.com",
            )
        )
