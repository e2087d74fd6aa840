"""The hot cache: exact keys, bounded size, and no entry outliving a clear it did not see."""

from __future__ import annotations

from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauthz.server.hotcache import HotCache, HotEntry, as_hit, digest, request_fingerprint


def entry(fresh_until: float) -> HotEntry:
    return HotEntry(b"", fresh_until, jti="j", subject="s", rate_key="r")


ENTRY = entry(100.0)


def request(
    *, extensions: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> CheckRequest:
    return CheckRequest(
        attributes=AttributeContext(
            request=AttributeContext.Request(
                http=AttributeContext.HttpRequest(
                    host="h", path="/", method="GET", headers=headers or {"authorization": "x"}
                )
            ),
            context_extensions=extensions or {},
        )
    )


def test_a_decision_overtaken_by_a_clear_is_not_stored() -> None:
    """A policy reload clears the cache; a decision made before it must not land after it."""
    cache = HotCache()
    before = cache.generation
    cache.clear()
    assert cache.put(("k",), ENTRY, generation=before, now=0.0) is False
    assert cache.get(("k",), now=0.0) is None
    assert cache.put(("k",), ENTRY, generation=cache.generation, now=0.0) is True
    assert cache.get(("k",), now=0.0) is ENTRY
    assert cache.get(("k",), now=100.0) is None  # stale at fresh_until


def test_the_cache_is_bounded_oldest_first() -> None:
    cache = HotCache(max_entries=2)
    for key in (b"a", b"b", b"c"):
        cache.put(key, ENTRY, generation=cache.generation, now=0.0)
    assert [cache.get(k, now=0.0) is not None for k in (b"a", b"b", b"c")] == [False, True, True]


def test_entries_seen_once_do_not_outstay_their_freshness() -> None:
    """A CI job's token is presented for one step, then never again: its entry goes once stale,
    when later entries are stored, not when the bound pushes it out."""
    cache = HotCache(max_entries=1000)
    for i in range(10):
        step = f"step-{i}".encode()
        cache.put(step, entry(10.0 + i), generation=cache.generation, now=float(i))
    assert len(cache) == 10
    cache.put(b"later", ENTRY, generation=cache.generation, now=15.0)
    assert len(cache) == 5  # step-0 .. step-5 (fresh until 10..15) are gone
    assert cache.get(b"step-6", now=15.0) is not None


def test_the_key_holds_the_headers_policy_reads() -> None:
    plain = request_fingerprint(request())
    tenant = request_fingerprint(request(), (("x-tenant", "shop"),))
    assert plain is not None
    assert tenant is not None
    assert plain != tenant


def test_context_extensions_are_kept_apart_in_the_key() -> None:
    """`a=b`: `c` and `a`: `b=c` are two routes, never one key."""
    one = request_fingerprint(request(extensions={"a=b": "c"}))
    other = request_fingerprint(request(extensions={"a": "b=c"}))
    assert one != other


def test_every_field_of_the_key_counts() -> None:
    """A key is a digest: one differing credential, route or header is another key, and
    fields cannot be shifted into each other (the digest is over the quoted fields)."""
    base = request(headers={"authorization": "Bearer a"})
    keys = {
        request_fingerprint(base),
        request_fingerprint(request(headers={"authorization": "Bearer b"})),
        request_fingerprint(
            request(headers={"authorization": "Bearer a", "x-forwarded-client-cert": "c"})
        ),
        request_fingerprint(base, (("x", "1"),)),
        request_fingerprint(base, (("x", "2"),)),
        request_fingerprint(base, (), ("10.0.0.1",)),
        request_fingerprint(request(headers={"authorization": "Bearer a', '"})),
    }
    assert len(keys) == 7
    assert all(isinstance(key, bytes) and len(key) == 32 for key in keys)
    assert request_fingerprint(base) == request_fingerprint(
        request(headers={"authorization": "Bearer a"})
    )


def test_no_credential_no_key() -> None:
    assert request_fingerprint(request(headers={"x-tenant": "shop"})) is None


def test_a_hit_answers_what_the_miss_answered_as_a_hit_without_its_request_id() -> None:
    """`as_hit` edits a copy of the miss's response; it must equal the response built anew for
    the same allow marked cached (what the hot cache stored before it), metadata included."""
    import dataclasses

    from extauthz.model import Evidence, Grant, Identity, IdentityKind
    from extauthz.policy.rego_decision import PolicyResponse
    from extauthz.server.decision import Allow
    from extauthz.server.respond import to_check_response
    from extauthz.server.tokencache import MintedToken

    identity = Identity(
        kind=IdentityKind.SPIFFE,
        subject="spiffe://prod.test/ns/web/sa/search",
        issuer="prod.test",
        credential_hash="ab",
        expires_at=2000,
        evidence=Evidence(kind="certificate", value=b""),
    )
    token = MintedToken(
        token="header.claims.signature",
        jti="jti-1",
        subject=identity.subject,
        audience="https://orders.internal",
        scopes=("orders:read",),
        issued_at=1000,
        expires_at=1900,
        signers=(1, 2),
    )
    policy = PolicyResponse(
        headers=(("x-tenant", "shop"),), dynamic_metadata={"team": "web", "keymint": "no"}
    )
    allow = Allow(
        identity, Grant("https://orders.internal", ("orders:read",), 900, "r"), token, False, policy
    )
    miss = to_check_response(allow, request_id="req-1")
    expected = to_check_response(dataclasses.replace(allow, cached=True))
    assert CheckResponse.FromString(as_hit(miss)) == expected
    assert (
        miss.dynamic_metadata.fields["keymint"].struct_value.fields["cache"].string_value == "miss"
    )


def test_a_field_holding_a_nul_never_passes_for_two_fields() -> None:
    """Fields are joined by NUL; one that holds a NUL is encoded another way, never confused
    with a neighbour (Envoy refuses NUL in headers and paths: this is for the rest)."""
    keys = {
        digest(("a\x00b", "c")),
        digest(("a", "b\x00c")),
        digest(("a\x00", "b")),
        digest(("a", "\x00b")),
        digest(("a", "b")),
        digest(("a", "b"), (("x", "1"),)),
        digest(("a", "b\x00('x', '1')")),
    }
    assert len(keys) == 7
