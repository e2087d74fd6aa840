"""The shared state on a real redis-server: TLS that is really TLS, ACL credentials from a file,
revocations that reach another process in milliseconds, a stated staleness bound when Redis is
gone, healing when it returns (even empty), and a Redis that lies about the key ring."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from extauthz.dev.settings import root_ca, valid_now
from extauthz.server.keyring import KeyRing, KeyRingError
from extauthz.server.limits import RateLimiter, Revocations, SharedRateLimiter, StateUnavailable
from extauthz.server.state import SharedState, StateSettings
from extauthz.server.state.redis_store import RedisStore
from signer.redisconn import KEYRING_KEY, RedisSettings, RedisSettingsError
from signer.token import kid_for
from tests.extauthz.server.test_keyring import ISSUER, InMemorySigners, root_of
from tests.helpers.certs import pem
from tests.helpers.redis_server import RedisServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    running = RedisServer(tmp_path).start()
    yield running
    running.stop()


def store_for(url: str, **env: str) -> RedisStore:
    settings = RedisSettings.from_env({"KEYMINT_REDIS_URL": url, **env})
    assert settings is not None
    return RedisStore(settings, retry_seconds=0.05)


def state_for(store: RedisStore, staleness: float = 1.0) -> SharedState:
    return SharedState(store, Revocations(), StateSettings(0.1, staleness))


# --- TLS and credentials ----------------------------------------------------------------------


def tls_redis(directory: Path, name: str) -> tuple[RedisServer, Path]:
    """A TLS-only redis-server whose certificate, from a CA of its own, names `name` (as
    both its DNS name and its common name); and that CA's file."""
    from cryptography.hazmat.primitives import serialization

    ca = root_ca("redis.test")
    issued = ca.issue(dns_names=[name], common_name=name, **valid_now())
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(pem(ca.certificate))
    (directory / "server.pem").write_bytes(issued.chain_pem)
    (directory / "server.key").write_bytes(
        issued.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = RedisServer(
        directory,
        [
            "--tls-cert-file",
            str(directory / "server.pem"),
            "--tls-key-file",
            str(directory / "server.key"),
            "--tls-ca-cert-file",
            str(ca_file),
            "--tls-auth-clients",
            "no",
        ],
        tls=True,
    ).start()
    return server, ca_file


async def versions_or_refusal(url: str, **env: str) -> object:
    """The store's version markers, or the StateUnavailable that reading them raised."""
    store = store_for(url, **env)
    try:
        return await store.versions()
    except StateUnavailable as exc:
        return exc
    finally:
        await store.close()


def test_rediss_really_uses_tls_and_checks_the_servers_certificate(tmp_path: Path) -> None:
    server, ca_file = tls_redis(tmp_path, "localhost")
    other = tmp_path / "other-ca.pem"
    other.write_bytes(pem(root_ca("elsewhere.test").certificate))
    try:
        tls = f"rediss://localhost:{server.port}/0"
        ok = asyncio.run(versions_or_refusal(tls, KEYMINT_REDIS_CA_FILE=str(ca_file)))
        assert not isinstance(ok, Exception), ok
        # Plaintext to the TLS port gets nowhere; TLS with a CA that did not sign the server's
        # certificate is refused in the handshake.
        plain = asyncio.run(versions_or_refusal(f"redis://localhost:{server.port}/0"))
        assert isinstance(plain, StateUnavailable)
        wrong = asyncio.run(versions_or_refusal(tls, KEYMINT_REDIS_CA_FILE=str(other)))
        assert isinstance(wrong, StateUnavailable)
        assert "certificate verify failed" in wrong.detail.lower() or "ssl" in wrong.detail.lower()
    finally:
        server.stop()


def test_rediss_refuses_a_certificate_issued_to_another_host_name(tmp_path: Path) -> None:
    # A certificate from the trusted CA, but for another name than the URL's host: refused.
    server, ca_file = tls_redis(tmp_path, "elsewhere.test")
    try:
        url = f"rediss://localhost:{server.port}/0"
        refused = asyncio.run(versions_or_refusal(url, KEYMINT_REDIS_CA_FILE=str(ca_file)))
        assert isinstance(refused, StateUnavailable), refused
        assert "hostname mismatch" in refused.detail.lower(), refused.detail
    finally:
        server.stop()


def test_acl_credentials_come_from_a_file_never_the_url(tmp_path: Path) -> None:
    password_hash = hashlib.sha256(b"s3cret-pass").hexdigest()
    server = RedisServer(
        tmp_path,
        [
            "--user",
            "default",
            "off",
            "--user",
            "keymint",
            "on",
            f"#{password_hash}",
            "~*",
            "&*",
            "+@all",
        ],
    ).start()
    good = tmp_path / "good.credentials"
    good.write_text("keymint:s3cret-pass\n")
    good.chmod(0o600)
    bad = tmp_path / "bad.credentials"
    bad.write_text("keymint:wrong\n")
    bad.chmod(0o600)

    async def reachable(path: Path) -> bool:
        store = store_for(server.url, KEYMINT_REDIS_CREDENTIALS_FILE=str(path))
        try:
            await store.versions()
            return True
        except StateUnavailable:
            return False
        finally:
            await store.close()

    try:
        assert asyncio.run(reachable(good))
        assert not asyncio.run(reachable(bad))
    finally:
        server.stop()
    with pytest.raises(RedisSettingsError, match="holds credentials"):
        RedisSettings.from_env({"KEYMINT_REDIS_URL": "redis://keymint:s3cret@localhost:6379/0"})
    good.chmod(0o644)
    with pytest.raises(RedisSettingsError, match="readable by every local user"):
        store_for(server.url, KEYMINT_REDIS_CREDENTIALS_FILE=str(good))
    parsed = RedisSettings.from_env(
        {"KEYMINT_REDIS_URL": server.url, "KEYMINT_REDIS_CREDENTIALS_FILE": str(bad)}
    )
    assert parsed is not None
    options = parsed.client_options()
    assert (options["username"], options["password"]) == ("keymint", "wrong")
    assert "wrong" not in repr(parsed)
    assert "wrong" not in parsed.where


def test_sentinel_urls_name_the_master_and_several_hosts() -> None:
    settings = RedisSettings.from_env(
        {"KEYMINT_REDIS_URL": "rediss+sentinel://s1:26379,s2,[::1]:26380/keymint/2"}
    )
    assert settings is not None
    assert settings.hosts == (("s1", 26379), ("s2", 26379), ("::1", 26380))
    assert (settings.sentinel_master, settings.db, settings.tls) == ("keymint", 2, True)
    for url, problem in (
        ("redis+sentinel://s1:26379", "names the master"),
        ("redis://a:1,b:2/0", "several hosts"),
        ("http://a/0", "scheme"),
        ("redis://a/zero", "not a number"),
    ):
        with pytest.raises(RedisSettingsError, match=problem):
            RedisSettings.from_env({"KEYMINT_REDIS_URL": url})


# --- revocations across processes --------------------------------------------------------------


def test_a_revocation_reaches_another_replicas_view_within_a_second(server: RedisServer) -> None:
    async def run() -> float:
        first, second = state_for(store_for(server.url)), state_for(store_for(server.url))
        assert await second.sync_once()
        follower = asyncio.create_task(second.run())
        await asyncio.sleep(0.3)  # subscribed
        try:
            started = time.monotonic()
            await first.revocations.revoke("subject", "spiffe://prod.test/x", time.time() + 60)
            while not second.revocations.subject_revoked("spiffe://prod.test/x"):
                assert time.monotonic() - started < 1.0
                await asyncio.sleep(0.005)
            return time.monotonic() - started
        finally:
            follower.cancel()
            await first.store.close()
            await second.store.close()

    assert asyncio.run(run()) < 1.0


def test_redis_gone_makes_the_view_stale_past_the_bound_and_its_return_heals_it(
    server: RedisServer,
) -> None:
    async def run() -> None:
        replica = state_for(store_for(server.url), staleness=1.0)
        assert await replica.sync_once()
        await replica.revocations.revoke("subject", "before", time.time() + 60)
        server.kill()
        started = time.monotonic()
        assert not await replica.sync_once()
        assert replica.fresh()  # within the bound, the view in memory still serves
        with pytest.raises(StateUnavailable):
            await replica.revocations.revoke("jti", "during", time.time() + 60)
        assert replica.revocations.jti_revoked("during")  # held here at once
        await asyncio.sleep(max(0.0, 1.05 - (time.monotonic() - started)))
        assert not replica.fresh()
        # Redis comes back empty (no persistence): the replica syncs, and gives back both.
        server.start()
        assert await replica.sync_once()
        assert replica.fresh()
        another = state_for(store_for(server.url))
        assert await another.sync_once()
        assert another.revocations.subject_revoked("before")
        assert another.revocations.jti_revoked("during")
        await replica.store.close()
        await another.store.close()

    asyncio.run(run())


def test_one_bucket_across_replicas_bounds_what_they_accept_together(server: RedisServer) -> None:
    rate, burst = 10.0, 20

    async def run() -> int:
        stores = [store_for(server.url) for _ in range(3)]
        limiters = [
            SharedRateLimiter(
                store,
                rate_per_second=rate,
                burst=burst,
                fallback=RateLimiter(rate_per_second=rate, burst=burst),
            )
            for store in stores
        ]
        accepted = 0
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            for limiter in limiters:
                allowed, _ = await limiter.allow("github\x1fissuer\x1f74\x1fdeploy.yml")
                accepted += allowed
        elapsed = time.monotonic() - started
        for store in stores:
            await store.close()
        assert accepted <= burst + rate * elapsed + 1
        return accepted

    assert asyncio.run(run()) >= burst


class Overlap:
    """How many takes, through any of the stores `counted` wraps, are in flight at once."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0

    def counted(self, store: RedisStore) -> CountedStore:
        return CountedStore(store, self)


class CountedStore:
    def __init__(self, store: RedisStore, overlap: Overlap) -> None:
        self._store = store
        self._overlap = overlap

    async def take(self, key: str, want: int, rate: float, burst: int) -> tuple[int, float]:
        overlap = self._overlap
        overlap.in_flight += 1
        overlap.most = max(overlap.most, overlap.in_flight)
        try:
            return await self._store.take(key, want, rate, burst)
        finally:
            overlap.in_flight -= 1


@pytest.mark.parametrize("leased", [True, False], ids=["through leases", "one token per take"])
def test_many_concurrent_takers_across_connections_stay_within_one_bucket(
    server: RedisServer, leased: bool
) -> None:
    # Replicas with many requests in flight each: 4 stores (a connection pool each), 16 takers
    # on each, all pressing one identity's bucket at once.
    rate, burst = 20.0, 40
    key = "github\x1fissuer\x1f74\x1fconcurrent.yml"
    overlap = Overlap()

    async def run() -> tuple[int, float, int]:
        stores = [store_for(server.url) for _ in range(4)]
        counted = [overlap.counted(store) for store in stores]
        limiters = [
            SharedRateLimiter(
                store,
                rate_per_second=rate,
                burst=burst,
                fallback=RateLimiter(rate_per_second=rate, burst=burst),
            )
            for store in counted
        ]
        accepted = 0
        started = time.monotonic()

        async def taker(index: int) -> None:
            nonlocal accepted
            while time.monotonic() - started < 1.0:
                if leased:
                    allowed, _ = await limiters[index % 4].allow(key)
                else:
                    granted, _ = await counted[index % 4].take(key, 1, rate, burst)
                    allowed = granted == 1
                accepted += allowed
                if not allowed:
                    await asyncio.sleep(0.005)  # refused: no busy loop while the bucket refills

        try:
            await asyncio.gather(*(taker(i) for i in range(4 * 16)))
            elapsed = time.monotonic() - started
        finally:
            for store in stores:
                await store.close()
        return accepted, elapsed, sum(limiter.store_errors for limiter in limiters)

    accepted, elapsed, errors = asyncio.run(run())
    print(f"{accepted} accepted in {elapsed:.2f} s; at most {overlap.most} takes in flight at once")
    # A limiter that cannot reach Redis falls back to a bucket of its own: none did here, so
    # every acceptance came from the shared bucket.
    assert errors == 0
    assert overlap.most > 1, "the takes never overlapped"
    assert burst <= accepted <= burst + rate * elapsed


# --- a Redis that lies about the key ring ------------------------------------------------------


def test_a_lying_redis_cannot_add_a_key_nor_take_an_endorsement_back(server: RedisServer) -> None:
    from tests.helpers import ManualClock

    clock = ManualClock(time.time())
    signers = InMemorySigners(clock)
    signers.add_key()
    asyncio.run(signers.refresh_keys())
    root = root_of(signers)
    admin = redis.Redis(host="127.0.0.1", port=server.port)

    async def run() -> None:
        store = store_for(server.url)
        ring = await KeyRing.load(
            signers,
            root,
            store=store,
            max_token_ttl_seconds=900,
            publish_lead_seconds=0,
            clock=clock,
        )
        new = kid_for(signers.add_key())
        await ring.publish(new)
        honest = admin.get(KEYRING_KEY)
        assert honest is not None
        document = json.loads(honest)
        # An unendorsed key made active.
        admin.set(KEYRING_KEY, json.dumps({**document, "active": "attacker-kid"}))
        admin.set("keymint:keyring:version", "forged-1")
        with pytest.raises(KeyRingError, match="not trusted from the root"):
            await ring.adopt()
        # The endorsement chain taken back (the published key dropped).
        admin.set(KEYRING_KEY, json.dumps({**document, "endorsements": [], "next": None}))
        admin.set("keymint:keyring:version", "forged-2")
        with pytest.raises(KeyRingError, match="drops or changes endorsements"):
            await ring.adopt()
        assert (ring.active_kid, ring.next_kid) == (root.kids[0], new)
        # Flushed: the ring is given back.
        admin.flushall()
        assert not await ring.adopt()
        assert json.loads(admin.get(KEYRING_KEY) or b"{}")["next"]["kid"] == new
        assert json.loads(admin.get(KEYRING_KEY) or b"{}")["issuer"] == ISSUER
        await store.close()

    asyncio.run(run())
