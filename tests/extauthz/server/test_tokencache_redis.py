"""Gateway replicas share minted tokens through a real redis-server, and serve a token read from it
only to the caller it was minted for: a Redis that lies cannot hand one caller another's token."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pickle
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from extauthz.model import Evidence, Grant, Identity, IdentityKind, Route
from extauthz.policy import AuthzRequest
from extauthz.server.mint import Minter, MintSettings
from extauthz.server.tokencache import MintedToken, TokenCache, cache_key
from signer.token import b64url


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


GROUP_KEY = Ed25519PrivateKey.generate()  # stands in for the signers' threshold key
GROUP_PUBLIC = GROUP_KEY.public_key().public_bytes(
    serialization.Encoding.Raw, serialization.PublicFormat.Raw
)


class CountingSigner:
    def __init__(self, key: Ed25519PrivateKey = GROUP_KEY) -> None:
        self.calls = 0
        self._key = key

    async def sign(self, message: bytes, **_: object) -> Outcome:
        self.calls += 1
        await asyncio.sleep(0.01)
        return Outcome(self._key.sign(message), (1, 2))


IDENTITY = Identity(
    kind=IdentityKind.GITHUB_ACTIONS,
    subject="repo:octo-org/octo-repo:environment:prod",
    issuer="https://token.actions.githubusercontent.com",
    credential_hash="ab" * 32,
    # Made when the module is collected: far enough ahead for a suite that runs it much later.
    expires_at=int(time.time()) + 86_400,
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
        group_public_key=lambda: GROUP_PUBLIC,
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


def _client(redis_url: str) -> redis.Redis:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    return redis.Redis(host="127.0.0.1", port=port)


def _serve_once(redis_url: str, request: AuthzRequest, grant: Grant = GRANT) -> tuple[bool, int]:
    """One replica asks the shared cache for `request`'s token: (served from it, signatures)."""

    async def run() -> tuple[bool, int]:
        signer = CountingSigner()
        cache = TokenCache.redis(redis_url)
        try:
            _, cached = await replica(cache, signer).mint(request, grant, POLICY)
        finally:
            await cache.close()
        return cached, signer.calls

    return asyncio.run(run())


OTHER = dataclasses.replace(
    IDENTITY,
    subject="https://token.actions.githubusercontent.com#repository_owner_id=65&repository_id=99",
    credential_hash="cd" * 32,
    claims={"repository_id": "99", "repository_owner_id": "65"},
)
BOUND = dataclasses.replace(
    IDENTITY,
    kind=IdentityKind.SPIFFE,
    subject="spiffe://prod.test/ns/shop/sa/web",
    credential_hash="ef" * 32,
    claims={},
    certificate_sha256=b"\x11" * 32,
)


def test_a_redis_that_hands_a_caller_another_callers_token_is_not_believed(
    redis_url: str,
) -> None:
    # Caller A's genuine token, minted and cached.
    assert _serve_once(redis_url, REQUEST) == (False, 1)
    key_a = cache_key(IDENTITY.credential_hash, GRANT.audience, GRANT.scopes)
    key_b = cache_key(OTHER.credential_hash, GRANT.audience, GRANT.scopes)
    client = _client(redis_url)
    stolen = client.get(key_a)
    assert stolen is not None
    # Redis lies: under caller B's key it holds A's token, its record rewritten to name B.
    record = json.loads(stolen)
    client.set(key_b, json.dumps({**record, "subject": OTHER.subject}))
    # B is not served A's token: the replica mints B its own.
    assert _serve_once(redis_url, AuthzRequest(OTHER, ROUTE)) == (False, 1)
    # Nor with other scopes or another audience than the ones it was minted for.
    wider = Grant(GRANT.audience, ("deploy:read", "deploy:write"), 600, GRANT.rule)
    client.set(cache_key(IDENTITY.credential_hash, wider.audience, wider.scopes), stolen)
    assert _serve_once(redis_url, REQUEST, wider) == (False, 1)
    elsewhere = Grant("https://orders.internal", GRANT.scopes, 600, GRANT.rule)
    client.set(cache_key(IDENTITY.credential_hash, elsewhere.audience, elsewhere.scopes), stolen)
    assert _serve_once(redis_url, REQUEST, elsewhere) == (False, 1)
    # A itself still is (the control).
    assert _serve_once(redis_url, REQUEST) == (True, 0)


def test_a_token_bound_to_another_certificate_is_not_served(redis_url: str) -> None:
    bound = AuthzRequest(BOUND, ROUTE)
    assert _serve_once(redis_url, bound) == (False, 1)
    client = _client(redis_url)
    minted = client.get(cache_key(BOUND.credential_hash, GRANT.audience, GRANT.scopes))
    assert minted is not None
    # Same subject, another certificate: another credential hash, and a cnf that is not its.
    thief = dataclasses.replace(BOUND, credential_hash="01" * 32, certificate_sha256=b"\x22" * 32)
    client.set(cache_key(thief.credential_hash, GRANT.audience, GRANT.scopes), minted)
    assert _serve_once(redis_url, AuthzRequest(thief, ROUTE)) == (False, 1)


def test_a_token_not_signed_by_a_published_key_is_not_served(redis_url: str) -> None:
    assert _serve_once(redis_url, REQUEST) == (False, 1)
    client = _client(redis_url)
    key = cache_key(IDENTITY.credential_hash, GRANT.audience, GRANT.scopes)
    record = json.loads(client.get(key) or b"{}")
    # The same claims, signed by a key of Redis's own.
    signing_input = record["token"].rpartition(".")[0]
    forged = Ed25519PrivateKey.generate().sign(signing_input.encode())
    record["token"] = f"{signing_input}.{b64url(forged)}"
    client.set(key, json.dumps(record))
    assert _serve_once(redis_url, REQUEST) == (False, 1)


class TouchOnUnpickle:
    """Unpickled, it runs `Path.touch(marker)`: what a Redis that lies would plant to run code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("protocol", [0, pickle.DEFAULT_PROTOCOL])  # text (ASCII) and binary
def test_a_pickle_in_the_cache_is_never_unpickled_nor_served(
    redis_url: str, tmp_path: Path, protocol: int
) -> None:
    # The control: the payload does run code when unpickled.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(TouchOnUnpickle(control), protocol=protocol))
    assert control.exists()
    assert _serve_once(redis_url, REQUEST) == (False, 1)
    client = _client(redis_url)
    key = cache_key(IDENTITY.credential_hash, GRANT.audience, GRANT.scopes)
    marker = tmp_path / "unpickled"
    client.set(key, pickle.dumps(TouchOnUnpickle(marker), protocol=protocol))
    # The entry is ignored: the caller gets a token minted for it, and nothing ran.
    assert _serve_once(redis_url, REQUEST) == (False, 1)
    assert not marker.exists()


class CountingBackend:
    """A shared backend (JSON text, as Redis holds it) that counts the reads it answers."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.reads = 0

    async def get(self, key: str) -> str | None:
        self.reads += 1
        return self.values.get(key)

    async def set(self, key: str, value: object, ttl: int) -> None:
        assert isinstance(value, str)
        self.values[key] = value

    async def delete(self, key: str) -> None:
        self.values.pop(key, None)

    async def close(self) -> None:
        pass


def test_a_replica_serves_its_own_and_vouched_tokens_again_without_a_shared_read() -> None:
    async def run() -> None:
        shared = CountingBackend()
        first_signer, second_signer = CountingSigner(), CountingSigner()
        first = replica(TokenCache(shared, shared=True), first_signer)
        second = replica(TokenCache(shared, shared=True), second_signer)
        minted, cached = await first.mint(REQUEST, GRANT, POLICY)
        assert (cached, first_signer.calls, shared.reads) == (False, 1, 1)
        assert await first.mint(REQUEST, GRANT, POLICY) == (minted, True)
        assert shared.reads == 1  # its own token: no shared read
        # The other replica reads it once, vouches for it, and keeps it.
        assert await second.mint(REQUEST, GRANT, POLICY) == (minted, True)
        assert await second.mint(REQUEST, GRANT, POLICY) == (minted, True)
        assert (shared.reads, second_signer.calls) == (2, 0)
        # Forgetting it (a revoked jti) drops both layers: the next call is a new signature.
        await second.forget(IDENTITY, GRANT)
        renewed, cached = await second.mint(REQUEST, GRANT, POLICY)
        assert (cached, second_signer.calls) == (False, 1)
        assert renewed.jti != minted.jti

    asyncio.run(run())


def test_a_token_the_shared_cache_lies_about_is_not_kept_as_the_replicas_own() -> None:
    async def run() -> None:
        shared = CountingBackend()
        owner = replica(TokenCache(shared, shared=True), CountingSigner())
        stolen, _ = await owner.mint(REQUEST, GRANT, POLICY)
        key_b = cache_key(OTHER.credential_hash, GRANT.audience, GRANT.scopes)
        shared.values[key_b] = dataclasses.replace(stolen, subject=OTHER.subject).to_json()
        signer = CountingSigner()
        other = replica(TokenCache(shared, shared=True), signer)
        first, cached = await other.mint(AuthzRequest(OTHER, ROUTE), GRANT, POLICY)
        assert (cached, signer.calls) == (False, 1)
        assert first.token != stolen.token
        again, cached = await other.mint(AuthzRequest(OTHER, ROUTE), GRANT, POLICY)
        assert (again, cached, signer.calls) == (first, True, 1)

    asyncio.run(run())
