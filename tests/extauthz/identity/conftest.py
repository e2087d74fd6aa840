"""Fixtures for the identity tests.

pytest-asyncio is not installed, so async code runs on an `asyncio.Runner` per test: the `run`
fixture is its `run` method, and async setup/teardown (issuer, HTTP session) go through it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

import aiohttp
import pytest

from extauthz.dev.github import DEFAULT_AUDIENCE, LocalOidcIssuer, SigningKey
from extauthz.dev.issuers import JwtKey, LocalIssuer
from extauthz.identity import GitHubOidcVerifier, JwksSettings
from tests.helpers import ManualClock, Run

START = 1_900_000_000.0  # 2030-03-17: tokens and caches run on this manual clock
# Local issuer speaks http; everything else as in production.
TEST_JWKS_SETTINGS = JwksSettings(insecure_allow_http=True)


class SpireDiscoveryProvider(LocalIssuer):
    """SPIRE's OIDC discovery provider: discovery and `/keys` on the issuer's origin, like any
    issuer, but its JWT authorities carry `alg` and no `use` (`use: sig` only with its
    `set_key_use` option), so a verifier must take a key without `use` as a signing key. Every
    JWKS it serves or writes has the `use` it was made with, whatever a caller asks for."""

    def __init__(self, *, keys: Iterable[JwtKey], key_use: str | None = None) -> None:
        super().__init__(keys=keys)
        self.key_use = key_use

    def jwks_document(self, *, use: str | None = "sig") -> dict[str, Any]:
        return super().jwks_document(use=self.key_use)


@pytest.fixture(scope="session")
def rsa_keys() -> dict[str, SigningKey]:
    """RSA key generation is slow; three keys serve the whole session."""
    return {kid: SigningKey.generate(kid) for kid in ("key-1", "key-2", "attacker")}


@pytest.fixture
def run() -> Iterator[Run]:
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def issuer(
    run: Run, clock: ManualClock, rsa_keys: dict[str, SigningKey]
) -> Iterator[LocalOidcIssuer]:
    issuer = run(LocalOidcIssuer(clock=clock, keys=[rsa_keys["key-1"]]).start())
    yield issuer
    run(issuer.stop())


@pytest.fixture
def session(run: Run) -> Iterator[aiohttp.ClientSession]:
    async def open_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    session = run(open_session())
    yield session
    run(session.close())


@pytest.fixture
def verifier(
    issuer: LocalOidcIssuer, session: aiohttp.ClientSession, clock: ManualClock
) -> GitHubOidcVerifier:
    return GitHubOidcVerifier.for_issuers(
        [issuer.issuer],
        audiences=[DEFAULT_AUDIENCE],
        session=session,
        jwks_settings=TEST_JWKS_SETTINGS,
        clock=clock,
    )
