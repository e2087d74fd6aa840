"""The hot cache: exact keys, bounded size, and no entry outliving a clear it did not see."""

from __future__ import annotations

from typing import cast

from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauthz.decision import Allow
from extauthz.hotcache import HotCache, HotEntry, request_fingerprint

ENTRY = HotEntry(allow=cast(Allow, None), response=CheckResponse(), fresh_until=100.0)


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
    assert cache.put(("k",), ENTRY, generation=before) is False
    assert cache.get(("k",), now=0.0) is None
    assert cache.put(("k",), ENTRY, generation=cache.generation) is True
    assert cache.get(("k",), now=0.0) is ENTRY
    assert cache.get(("k",), now=100.0) is None  # stale at fresh_until


def test_the_cache_is_bounded_oldest_first() -> None:
    cache = HotCache(max_entries=2)
    for key in ("a", "b", "c"):
        cache.put((key,), ENTRY, generation=cache.generation)
    assert [cache.get((k,), now=0.0) is not None for k in "abc"] == [False, True, True]


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


def test_no_credential_no_key() -> None:
    assert request_fingerprint(request(headers={"x-tenant": "shop"})) is None
