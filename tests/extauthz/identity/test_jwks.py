"""The JWKS cache against a real local issuer: freshness, cooldown, ETag, stale-if-unreachable."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest
from aiocache import SimpleMemoryCache
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from extauthz.dev.github import LocalOidcIssuer, SigningKey, b64url
from extauthz.identity import IdentityConfigError, IdentityError, JwksCache, JwksSettings, Reason
from extauthz.identity.jwks import fetch_status, is_rs256_signing_key
from tests.extauthz.identity.conftest import TEST_JWKS_SETTINGS
from tests.helpers import ManualClock, Run

COOLDOWN = TEST_JWKS_SETTINGS.fetch_cooldown_seconds  # 60 s


@pytest.fixture
def jwks(issuer: LocalOidcIssuer, session: aiohttp.ClientSession, clock: ManualClock) -> JwksCache:
    return JwksCache(issuer.issuer, session=session, settings=TEST_JWKS_SETTINGS, clock=clock)


def reason_of(run: Run, jwks: JwksCache, kid: str) -> Reason:
    with pytest.raises(IdentityError) as caught:
        run(jwks.signing_key(kid))
    return caught.value.reason


def test_cache_hit_needs_no_fetch(run: Run, jwks: JwksCache, issuer: LocalOidcIssuer) -> None:
    first = run(jwks.signing_key("key-1"))
    for _ in range(10):
        assert run(jwks.signing_key("key-1")) is first
    assert issuer.served == {"discovery": 1, "jwks": 1}
    assert first.public_numbers() == issuer.signing_key.private_key.public_key().public_numbers()


def test_fresh_keys_held_in_this_process_are_read_without_yielding(
    run: Run, jwks: JwksCache, issuer: LocalOidcIssuer
) -> None:
    """A new credential's verification waits for nothing once the keys are fresh: on a busy
    event loop, each yield queues the request behind every other ready callback."""

    async def read() -> list[str]:
        await jwks.signing_key("key-1")  # the one fetch
        others: list[str] = []
        asyncio.get_running_loop().call_soon(others.append, "ran")
        for _ in range(5):
            await jwks.signing_key("key-1")
        return list(others)  # as it stood when the reads were done

    assert run(read()) == []
    assert issuer.served == {"discovery": 1, "jwks": 1}


def test_concurrent_cold_misses_share_one_fetch(
    run: Run, jwks: JwksCache, issuer: LocalOidcIssuer
) -> None:
    async def many() -> list[Any]:
        return await asyncio.gather(*(jwks.signing_key("key-1") for _ in range(25)))

    assert len(set(map(id, run(many())))) == 1
    assert issuer.served == {"discovery": 1, "jwks": 1}


def test_unknown_kid_fetches_at_most_once_per_cooldown(
    run: Run, jwks: JwksCache, issuer: LocalOidcIssuer, clock: ManualClock
) -> None:
    run(jwks.signing_key("key-1"))
    clock.advance(COOLDOWN)

    async def flood() -> list[BaseException | Any]:
        kids = [f"made-up-{n}" for n in range(50)]
        return await asyncio.gather(*map(jwks.signing_key, kids), return_exceptions=True)

    outcomes = run(flood())
    assert all(isinstance(o, IdentityError) and o.reason is Reason.UNKNOWN_KID for o in outcomes)
    assert issuer.jwks_fetches == 2  # the first load, and one refetch shared by all 50

    for _ in range(20):  # later unknown kids within the cooldown fetch nothing
        clock.advance(2)
        assert reason_of(run, jwks, "made-up-again") is Reason.UNKNOWN_KID
    assert issuer.jwks_fetches == 2
    clock.advance(COOLDOWN)
    assert reason_of(run, jwks, "made-up-again") is Reason.UNKNOWN_KID
    assert issuer.jwks_fetches == 3


def test_key_rotation_is_picked_up_after_the_cooldown(
    run: Run,
    jwks: JwksCache,
    issuer: LocalOidcIssuer,
    clock: ManualClock,
    rsa_keys: dict[str, SigningKey],
) -> None:
    run(jwks.signing_key("key-1"))
    issuer.rotate(rsa_keys["key-2"])
    clock.advance(10)
    assert reason_of(run, jwks, "key-2") is Reason.UNKNOWN_KID  # within the cooldown
    clock.advance(COOLDOWN)
    assert run(jwks.signing_key("key-2"))
    assert reason_of(run, jwks, "key-1") is Reason.UNKNOWN_KID  # rotated out
    assert issuer.jwks_fetches == 2


def test_etag_revalidation_keeps_the_keys(
    run: Run, jwks: JwksCache, issuer: LocalOidcIssuer, clock: ManualClock
) -> None:
    key = run(jwks.signing_key("key-1"))
    clock.advance(issuer.max_age + 1)
    assert run(jwks.signing_key("key-1")) is key
    assert issuer.served == {"discovery": 2, "jwks": 1, "jwks_not_modified": 1}
    clock.advance(issuer.max_age - 1)  # fresh again for max-age after the 304
    run(jwks.signing_key("key-1"))
    assert issuer.served["jwks_not_modified"] == 1


def test_max_age_is_clamped(
    run: Run, issuer: LocalOidcIssuer, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    settings = JwksSettings(min_cache_seconds=120, max_cache_seconds=600, insecure_allow_http=True)
    jwks = JwksCache(issuer.issuer, session=session, settings=settings, clock=clock)
    issuer.max_age = 1  # too short: held for the 120 s floor
    run(jwks.signing_key("key-1"))
    clock.advance(119)
    run(jwks.signing_key("key-1"))
    assert issuer.served["discovery"] == 1
    clock.advance(2)
    issuer.max_age = 10**6  # too long: held for the 600 s ceiling
    run(jwks.signing_key("key-1"))
    clock.advance(599)
    run(jwks.signing_key("key-1"))
    assert issuer.served["discovery"] == 2
    clock.advance(2)
    run(jwks.signing_key("key-1"))
    assert issuer.served["discovery"] == 3


def test_unreachable_issuer_serves_stale_keys_for_a_bounded_time(
    run: Run, jwks: JwksCache, issuer: LocalOidcIssuer, clock: ManualClock
) -> None:
    key = run(jwks.signing_key("key-1"))
    issuer.down = True
    clock.advance(issuer.max_age + 1)
    assert run(jwks.signing_key("key-1")) is key  # stale, refresh failed
    assert issuer.served["down"] == 1
    for _ in range(10):  # within the cooldown, no retry at all
        clock.advance(5)
        assert run(jwks.signing_key("key-1")) is key
    assert issuer.served["down"] == 1
    clock.advance(TEST_JWKS_SETTINGS.serve_stale_seconds - 100)
    assert run(jwks.signing_key("key-1")) is key  # last minutes of the stale window
    clock.advance(100)
    assert reason_of(run, jwks, "key-1") is Reason.ISSUER_UNREACHABLE


def test_issuer_coming_back_ends_staleness(
    run: Run, jwks: JwksCache, issuer: LocalOidcIssuer, clock: ManualClock
) -> None:
    run(jwks.signing_key("key-1"))
    issuer.down = True
    clock.advance(issuer.max_age + 1)
    run(jwks.signing_key("key-1"))
    issuer.down = False
    clock.advance(COOLDOWN)
    run(jwks.signing_key("key-1"))
    assert issuer.served["jwks_not_modified"] == 1


def test_the_readiness_report_shows_each_issuers_last_fetch(
    run: Run, jwks: JwksCache, issuer: LocalOidcIssuer, clock: ManualClock
) -> None:
    """What /readyz lists under `issuers` (`fetch_status`): a failing issuer is named with what
    went wrong, and shown healthy again once a fetch works; it never decides readiness."""
    run(jwks.signing_key("key-1"))
    assert fetch_status()[issuer.issuer] == {"ok": True, "at": clock()}
    issuer.down = True
    clock.advance(issuer.max_age + 1)
    run(jwks.signing_key("key-1"))  # stale keys still served
    failed = fetch_status()[issuer.issuer]
    assert failed["ok"] is False
    assert failed["at"] == clock()
    assert "503" in str(failed["problem"])
    issuer.down = False
    clock.advance(COOLDOWN)
    run(jwks.signing_key("key-1"))
    assert fetch_status()[issuer.issuer] == {"ok": True, "at": clock()}


def test_cold_start_against_a_down_issuer(
    run: Run, jwks: JwksCache, issuer: LocalOidcIssuer, clock: ManualClock
) -> None:
    issuer.down = True
    assert reason_of(run, jwks, "key-1") is Reason.ISSUER_UNREACHABLE
    assert reason_of(run, jwks, "key-1") is Reason.ISSUER_UNREACHABLE
    assert issuer.served["down"] == 1  # the second request did not hammer it
    issuer.down = False
    clock.advance(COOLDOWN)
    assert run(jwks.signing_key("key-1"))


def test_nothing_listening(run: Run, session: aiohttp.ClientSession, clock: ManualClock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    jwks = JwksCache(
        f"http://127.0.0.1:{port}", session=session, settings=TEST_JWKS_SETTINGS, clock=clock
    )
    assert reason_of(run, jwks, "key-1") is Reason.ISSUER_UNREACHABLE


@pytest.mark.parametrize(
    "overrides",
    [
        {"issuer": "https://token.actions.githubusercontent.com"},  # someone else's document
        {"jwks_uri": "http://attacker.example/jwks"},  # keys from another origin
        {"jwks_uri": None},
    ],
)
def test_discovery_document_must_vouch_for_the_keys(
    run: Run, jwks: JwksCache, issuer: LocalOidcIssuer, overrides: dict[str, Any]
) -> None:
    issuer.discovery_overrides = overrides
    assert reason_of(run, jwks, "key-1") is Reason.ISSUER_UNREACHABLE
    assert "jwks" not in issuer.served


def test_only_rs256_signing_keys_are_kept(
    run: Run, jwks: JwksCache, issuer: LocalOidcIssuer, rsa_keys: dict[str, SigningKey]
) -> None:
    good = rsa_keys["key-2"].public_jwk()
    small = SigningKey("small", rsa.generate_private_key(public_exponent=65537, key_size=1024))
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    ec_jwk = {"kty": "EC", "crv": "P-256", "kid": "ec", **_ec_coordinates(ec_key)}
    bare = {k: v for k, v in good.items() if k not in ("use", "alg")}
    issuer.extra_jwks = [
        {**good, "kid": "enc", "use": "enc"},
        {**good, "kid": "rs512", "alg": "RS512"},
        {**good, "kid": "private", "d": "AQAB"},
        {**good, "kid": "no-verify", "key_ops": ["encrypt"]},
        {**good, "kid": "twice"},
        {**good, "kid": "twice"},
        {**bare, "kid": "no-use-no-alg"},
        small.public_jwk(),
        ec_jwk,
        "not an object",
    ]
    assert run(jwks.signing_key("key-1"))
    assert run(jwks.signing_key("no-use-no-alg"))
    for kid in ("enc", "rs512", "private", "no-verify", "twice", "small", "ec"):
        assert reason_of(run, jwks, kid) is Reason.UNKNOWN_KID, kid


def _ec_coordinates(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = key.public_numbers()
    return {"x": b64url(numbers.x.to_bytes(32, "big")), "y": b64url(numbers.y.to_bytes(32, "big"))}


def test_oversized_jwks_is_refused(run: Run, jwks: JwksCache, issuer: LocalOidcIssuer) -> None:
    issuer.extra_jwks = [{"kty": "oct", "k": "A" * 1000, "kid": str(n)} for n in range(100)]
    assert reason_of(run, jwks, "key-1") is Reason.ISSUER_UNREACHABLE


def test_injected_cache_is_shared_between_replicas(
    run: Run, issuer: LocalOidcIssuer, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    shared = SimpleMemoryCache()  # stands in for Redis: same interface
    replicas = [
        JwksCache(
            issuer.issuer, session=session, cache=shared, settings=TEST_JWKS_SETTINGS, clock=clock
        )
        for _ in range(3)
    ]
    for replica in replicas:
        assert run(replica.signing_key("key-1"))
    assert issuer.served == {"discovery": 1, "jwks": 1}


def test_corrupt_cache_entry_falls_through_to_the_issuer(
    run: Run, issuer: LocalOidcIssuer, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    cache = SimpleMemoryCache()
    run(cache.set(f"keymint:jwks:{issuer.issuer}", "{not json"))
    jwks = JwksCache(
        issuer.issuer, session=session, cache=cache, settings=TEST_JWKS_SETTINGS, clock=clock
    )
    assert run(jwks.signing_key("key-1"))
    assert issuer.served["jwks"] == 1


def test_rs256_key_filter() -> None:
    base = {"kty": "RSA", "kid": "k", "n": "x", "e": "AQAB"}
    assert is_rs256_signing_key(base)
    assert is_rs256_signing_key({**base, "use": "sig", "alg": "RS256", "key_ops": ["verify"]})
    assert not is_rs256_signing_key({**base, "kid": ""})
    assert not is_rs256_signing_key({**base, "kty": "oct"})
    assert not is_rs256_signing_key({**base, "alg": "PS256"})


@pytest.mark.parametrize(
    "settings",
    [
        {"min_cache_seconds": 0},
        {"min_cache_seconds": 100, "max_cache_seconds": 50},
        {"fetch_cooldown_seconds": 0},
        {"serve_stale_seconds": -1},
        {"max_document_bytes": 0},
    ],
)
def test_settings_are_checked(settings: dict[str, Any]) -> None:
    with pytest.raises(IdentityConfigError):
        JwksSettings(**settings)


@pytest.mark.parametrize(
    "issuer_url",
    [
        "http://token.actions.githubusercontent.com",  # http without the test-only switch
        "https://token.actions.githubusercontent.com/",
        "https://token.actions.githubusercontent.com?x=1",
        "https://user@token.actions.githubusercontent.com",
        "token.actions.githubusercontent.com",
    ],
)
def test_issuer_urls_are_checked(run: Run, session: aiohttp.ClientSession, issuer_url: str) -> None:
    with pytest.raises(IdentityConfigError):
        JwksCache(issuer_url, session=session)
