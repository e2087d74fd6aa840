"""SPIFFE IDs: the spec's accept/refuse cases, and path patterns."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extauthz.identity import (
    IdentityConfigError,
    IdentityError,
    Reason,
    SpiffeIdPattern,
    parse_spiffe_id,
)
from extauthz.model import SpiffeId

TRUST_DOMAIN_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.-_"
SEGMENT_CHARS = TRUST_DOMAIN_CHARS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@pytest.mark.parametrize(
    ("text", "trust_domain", "path"),
    [
        ("spiffe://example.org", "example.org", ""),
        ("spiffe://example.org/ns/prod/sa/deployer", "example.org", "/ns/prod/sa/deployer"),
        (
            "spiffe://k8s-west_1.example.org/Payments/web.FE",
            "k8s-west_1.example.org",
            "/Payments/web.FE",
        ),
        ("spiffe://td/a/.../b", "td", "/a/.../b"),  # only "." and ".." are special
    ],
)
def test_valid_ids_parse(text: str, trust_domain: str, path: str) -> None:
    spiffe_id = parse_spiffe_id(text)
    assert spiffe_id == SpiffeId(trust_domain, path)
    assert str(spiffe_id) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "example.org/workload",
        "http://example.org/workload",
        "SPIFFE://example.org/workload",  # scheme must be lower case
        "spiffe:/example.org/workload",
        "spiffe://",
        "spiffe:///workload",  # empty trust domain
        "spiffe://Example.org/workload",  # trust domain must be lower case
        "spiffe://example.org:8443/workload",  # port
        "spiffe://user@example.org/workload",  # userinfo
        "spiffe://exa%6Dple.org/workload",  # percent-encoding
        "spiffe://example.org/workload?x=1",  # query
        "spiffe://example.org/workload#frag",  # fragment
        "spiffe://example.org/",  # trailing slash: an empty segment
        "spiffe://example.org//workload",
        "spiffe://example.org/a/./b",
        "spiffe://example.org/a/../b",
        "spiffe://example.org/work%20load",
        "spiffe://example.org/wörk",
        "spiffe://example.org/a b",
        "spiffe://" + "a" * 256 + "/x",  # trust domain over 255
        "spiffe://example.org/" + "a" * 2048,  # whole ID over 2048 bytes
    ],
)
def test_invalid_ids_are_refused(text: str) -> None:
    with pytest.raises(IdentityError) as caught:
        parse_spiffe_id(text)
    assert caught.value.reason is Reason.MALFORMED_SPIFFE_ID


def test_longest_allowed_id_parses() -> None:
    prefix = "spiffe://example.org/"
    text = prefix + "a" * (2048 - len(prefix))
    assert parse_spiffe_id(text).trust_domain == "example.org"


segments = st.text(alphabet=SEGMENT_CHARS, min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)


@given(
    trust_domain=st.text(alphabet=TRUST_DOMAIN_CHARS, min_size=1, max_size=30),
    path=st.lists(segments, max_size=6),
)
def test_every_valid_id_round_trips(trust_domain: str, path: list[str]) -> None:
    spiffe_id = SpiffeId(trust_domain, "".join("/" + s for s in path))
    assert parse_spiffe_id(str(spiffe_id)) == spiffe_id


@given(st.text(max_size=300))
def test_arbitrary_text_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        parse_spiffe_id(text)
    except IdentityError as error:
        reason = error.reason
    else:
        return
    assert reason is Reason.MALFORMED_SPIFFE_ID


@pytest.mark.parametrize(
    ("pattern", "spiffe_id", "expected"),
    [
        (
            "spiffe://example.org/ns/prod/sa/deployer",
            "spiffe://example.org/ns/prod/sa/deployer",
            True,
        ),
        (
            "spiffe://example.org/ns/prod/sa/deployer",
            "spiffe://example.org/ns/prod/sa/other",
            False,
        ),
        (
            "spiffe://example.org/ns/prod/sa/deployer",
            "spiffe://other.org/ns/prod/sa/deployer",
            False,
        ),
        ("spiffe://example.org/ns/*/sa/deployer", "spiffe://example.org/ns/prod/sa/deployer", True),
        ("spiffe://example.org/ns/*/sa/deployer", "spiffe://example.org/ns/a/b/sa/deployer", False),
        ("spiffe://example.org/ns/*/sa/deployer", "spiffe://example.org/ns/sa/deployer", False),
        ("spiffe://example.org/ns/prod/**", "spiffe://example.org/ns/prod/sa/x", True),
        ("spiffe://example.org/ns/prod/**", "spiffe://example.org/ns/prod/x", True),
        ("spiffe://example.org/ns/prod/**", "spiffe://example.org/ns/prod", False),
        ("spiffe://example.org/ns/prod/**", "spiffe://example.org/ns/production/x", False),
        ("spiffe://example.org/**", "spiffe://example.org/anything/at/all", True),
        ("spiffe://example.org/**", "spiffe://example.org", False),
        ("spiffe://example.org", "spiffe://example.org", True),
        ("spiffe://example.org", "spiffe://example.org/x", False),
        ("spiffe://example.org/*/**", "spiffe://example.org/a", False),
        ("spiffe://example.org/*/**", "spiffe://example.org/a/b", True),
    ],
)
def test_pattern_matching(pattern: str, spiffe_id: str, expected: bool) -> None:
    assert SpiffeIdPattern.parse(pattern).matches(parse_spiffe_id(spiffe_id)) is expected


@pytest.mark.parametrize(
    "pattern",
    [
        "spiffe://Example.org/x",
        "spiffe://example.org/deploy-*",  # partial globs are refused
        "spiffe://example.org/**/x",  # ** only last
        "spiffe://example.org/a//b",
        "spiffe://example.org/a/../b",
        "https://example.org/x",
        "spiffe://example.org:1/x",
    ],
)
def test_invalid_patterns_are_configuration_errors(pattern: str) -> None:
    with pytest.raises(IdentityConfigError):
        SpiffeIdPattern.parse(pattern)


def test_pattern_from_parts_and_back() -> None:
    pattern = SpiffeIdPattern("example.org", "/ns/*/sa/deployer")
    assert str(pattern) == "spiffe://example.org/ns/*/sa/deployer"
    assert SpiffeIdPattern.parse(str(pattern)) == pattern
