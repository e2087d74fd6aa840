"""The identity cache: a seen credential on a new route is not verified again, and nothing
that follows identification (revocation, policy) is skipped."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from extauthz.model import Identity
from extauthz.server.identitycache import IdentityCache, credential_key
from extauthz.server.pipeline import Pipeline
from tests.extauthz.server.test_pipeline import (
    CALLER,
    PROXY,
    check_request,
    denial,
    engine,
    from_proxy,
    pipeline,
    subject_of,
)
from tests.helpers.certs import CertificateAuthority, IssuedCertificate


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.root("prod.test")


@pytest.fixture(scope="module")
def caller(ca: CertificateAuthority) -> IssuedCertificate:
    return ca.issue_svid(CALLER)


@pytest.fixture(scope="module")
def proxy(ca: CertificateAuthority) -> IssuedCertificate:
    return ca.issue_svid(PROXY)


@pytest.fixture
def loop() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


def on_path(request: CheckRequest, path: str) -> CheckRequest:
    request.attributes.request.http.path = path
    return request


def counting(gateway: Pipeline) -> list[Identity]:
    """Every identity the identifier verifies, as it verifies it."""
    verified: list[Identity] = []
    identify = gateway._identifier.identify

    async def counted(request: CheckRequest) -> Identity:
        identity = await identify(request)
        verified.append(identity)
        return identity

    gateway._identifier.identify = counted  # type: ignore[method-assign]
    return verified


def test_a_seen_credential_on_a_new_path_is_not_verified_again(
    ca: CertificateAuthority, caller: IssuedCertificate, loop: asyncio.Runner
) -> None:
    policy = engine()
    gateway = pipeline(ca, policy)
    verified = counting(gateway)
    for i in range(5):
        response = loop.run(
            gateway.check(on_path(check_request(certificate=caller), f"/orders/{i}"))
        )
        assert subject_of(response) == CALLER
    assert len(verified) == 1
    assert policy.evaluations == 5  # policy still decides every new route


def test_a_revoked_subject_is_refused_on_a_new_path_with_its_identity_cached(
    ca: CertificateAuthority, caller: IssuedCertificate, loop: asyncio.Runner
) -> None:
    gateway = pipeline(ca, engine())
    assert subject_of(loop.run(gateway.check(check_request(certificate=caller)))) == CALLER
    gateway.revocations.revoke_subject(CALLER, until=2**40)
    later = on_path(check_request(certificate=caller), "/orders/2")
    status, body, _ = denial(loop.run(gateway.check(later)))
    assert (status, body["error"]) == (403, "subject_revoked")


def test_the_proxys_identity_is_never_served_for_a_caller_it_forwards(
    ca: CertificateAuthority,
    caller: IssuedCertificate,
    proxy: IssuedCertificate,
    loop: asyncio.Runner,
) -> None:
    """The proxy's own request and one it forwards differ in principal and XFCC: two keys, two
    identities, each verified."""
    gateway = pipeline(ca, engine())
    verified = counting(gateway)
    assert subject_of(loop.run(gateway.check(check_request(certificate=proxy)))) == PROXY
    forwarded = on_path(from_proxy(proxy, caller), "/orders/9")
    assert subject_of(loop.run(gateway.check(forwarded))) == CALLER
    assert len(verified) == 2


def test_the_key_holds_every_field_identification_reads(
    caller: IssuedCertificate, proxy: IssuedCertificate
) -> None:
    keys = {
        credential_key(check_request(certificate=caller)),
        credential_key(check_request(certificate=caller, principal=PROXY)),
        credential_key(check_request(certificate=proxy)),
        credential_key(check_request(headers={"authorization": "Bearer a"})),
        credential_key(check_request(headers={"authorization": "Bearer b"})),
        credential_key(check_request(headers={"x-forwarded-client-cert": "By=x"})),
        credential_key(from_proxy(proxy, caller)),
    }
    assert len(keys) == 7
    assert None not in keys
    assert credential_key(check_request(headers={"x-tenant": "shop"})) is None
    # The route is not part of it: that is the point.
    assert credential_key(on_path(check_request(certificate=caller), "/a")) == credential_key(
        on_path(check_request(certificate=caller), "/b")
    )


def identity(expires_at: int) -> Identity:
    from extauthz.model import Evidence, IdentityKind

    return Identity(
        kind=IdentityKind.SPIFFE,
        subject=CALLER,
        issuer="prod.test",
        credential_hash="00",
        expires_at=expires_at,
        evidence=Evidence(kind="certificate", value=b""),
    )


def test_an_identity_is_kept_no_longer_than_its_credential_nor_max_seconds() -> None:
    cache = IdentityCache(max_seconds=60.0)
    cache.put(b"short", identity(expires_at=1010), now=1000.0)
    cache.put(b"long", identity(expires_at=10_000), now=1000.0)
    cache.put(b"expired", identity(expires_at=1000), now=1000.0)
    assert cache.get(b"short", now=1009.0) is not None
    assert cache.get(b"short", now=1010.0) is None  # the credential's own expiry
    assert cache.get(b"long", now=1059.0) is not None
    assert cache.get(b"long", now=1060.0) is None  # at most max_seconds
    assert cache.get(b"expired", now=1000.0) is None
    assert len(cache) == 0


def test_the_cache_is_bounded_oldest_first() -> None:
    cache = IdentityCache(max_entries=2)
    for key in (b"a", b"b", b"c"):
        cache.put(key, identity(expires_at=2000), now=1000.0)
    assert [cache.get(k, now=1000.0) is not None for k in (b"a", b"b", b"c")] == [
        False,
        True,
        True,
    ]


def test_expired_entries_go_when_another_is_stored() -> None:
    """A credential seen once (a CI step's token) does not stay until the bound pushes it out."""
    cache = IdentityCache(max_entries=100, max_seconds=60.0)
    for i in range(10):
        cache.put(f"step-{i}".encode(), identity(expires_at=5000), now=1000.0 + i)
    assert len(cache) == 10

    cache.put(b"later", identity(expires_at=5000), now=1065.0)  # steps 0 to 5 expired at 1060-5

    assert len(cache) == 5  # steps 6 to 9 (expiring at 1066-9) and the new one
    assert cache.get(b"step-6", now=1065.0) is not None
