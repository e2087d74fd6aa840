"""Two gateway replicas share minted tokens through a real redis-server (aiocache Redis backend)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from extauthz.mint import Minter, MintSettings
from extauthz.model import Evidence, Grant, Identity, IdentityKind, Route
from extauthz.policy import AuthzRequest
from extauthz.tokencache import MintedToken, TokenCache, cache_key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is required (make setup installs it)"
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    process.terminate()
    process.wait()


@dataclass
class Outcome:
    signature: bytes
    signers: tuple[int, ...]


class CountingSigner:
    def __init__(self) -> None:
        self.calls = 0

    async def sign(self, message: bytes, **_: object) -> Outcome:
        self.calls += 1
        await asyncio.sleep(0.01)
        return Outcome(b"\x01" * 64, (1, 2))


IDENTITY = Identity(
    kind=IdentityKind.GITHUB_ACTIONS,
    subject="repo:octo-org/octo-repo:environment:prod",
    issuer="https://token.actions.githubusercontent.com",
    credential_hash="ab" * 32,
    expires_at=int(time.time()) + 300,
    evidence=Evidence("oidc_token", b"token"),
    claims={"repository_id": "74", "repository_owner_id": "65"},
)
GRANT = Grant("https://deploy.internal", ("deploy:read",), 600, "ci/deployer")
ROUTE = Route("api.internal", "/", "GET")
REQUEST = AuthzRequest(IDENTITY, ROUTE)
POLICY = "0" * 64  # the policy version the grant came from: only the signers read it


def replica(cache: TokenCache, signer: CountingSigner) -> Minter:
    return Minter(
        settings=MintSettings(issuer="https://keymint.test"),
        signer=signer,
        group_public_key=lambda: b"\x02" * 32,
        cache=cache,
    )


def test_replicas_share_tokens_through_redis(redis_url: str) -> None:
    async def run() -> tuple[MintedToken, bool, MintedToken, bool, int, int]:
        first_signer, second_signer = CountingSigner(), CountingSigner()
        first_cache, second_cache = TokenCache.redis(redis_url), TokenCache.redis(redis_url)
        try:
            first, first_cached = await replica(first_cache, first_signer).mint(
                REQUEST, GRANT, POLICY
            )
            second, second_cached = await replica(second_cache, second_signer).mint(
                REQUEST, GRANT, POLICY
            )
        finally:
            await first_cache.close()
            await second_cache.close()
        return first, first_cached, second, second_cached, first_signer.calls, second_signer.calls

    first, first_cached, second, second_cached, first_calls, second_calls = asyncio.run(run())
    assert (first_cached, second_cached) == (False, True)
    assert second == first
    assert (first_calls, second_calls) == (1, 0)
    # What rests in Redis is JSON text, never a pickle.
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    raw = redis.Redis(host="127.0.0.1", port=port).get(
        cache_key(IDENTITY.credential_hash, GRANT.audience, GRANT.scopes)
    )
    assert raw is not None
    assert MintedToken.from_json(raw.decode()) == first


def test_concurrent_misses_share_one_mint(redis_url: str) -> None:
    async def run() -> int:
        signer = CountingSigner()
        cache = TokenCache.redis(redis_url)
        minter = replica(cache, signer)
        try:
            results = await asyncio.gather(
                *(minter.mint(REQUEST, GRANT, POLICY) for _ in range(20))
            )
        finally:
            await cache.close()
        assert len({token for token, _ in results}) == 1
        return signer.calls

    assert asyncio.run(run()) == 1


def test_an_unreachable_redis_is_bypassed_not_trusted() -> None:
    async def run() -> tuple[bool, int]:
        signer = CountingSigner()
        cache = TokenCache.redis(f"redis://127.0.0.1:{free_port()}/0")
        try:
            _, cached = await replica(cache, signer).mint(REQUEST, GRANT, POLICY)
        finally:
            await cache.close()
        return cached, signer.calls

    assert asyncio.run(run()) == (False, 1)
