"""Load errors: every kind of bad policy is refused, naming file, JSON path and fault."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from extauthz.policy import PolicyError, load_policy_file, parse_policy
from extauthz.policy.loader import compile_policy
from extauthz.policy.model import GithubMatch
from tests.extauthz.policy import DEPLOY, ORDERS, policy_document

Edit = Callable[[dict[str, Any]], None]


def refused(edit: Edit) -> PolicyError:
    document = policy_document()
    edit(document)
    with pytest.raises(PolicyError) as caught:
        compile_policy(document, "policy.json")
    return caught.value


def github_claims(document: dict[str, Any]) -> dict[str, Any]:
    claims: dict[str, Any] = document["bindings"][3]["match"]["claims"]
    return claims


def test_the_reference_document_compiles() -> None:
    policy = compile_policy(policy_document(), "policy.json")
    assert [b.name for b in policy.bindings] == [
        "web-reads",
        "frontend-writes",
        "batch",
        "deploy-main",
    ]
    assert policy.audiences == {ORDERS, DEPLOY}


def test_bindings_are_indexed_by_what_identities_carry() -> None:
    policy = compile_policy(policy_document())
    assert policy.spiffe_exact == {
        "spiffe://prod.test/ns/web/sa/frontend": (1,),
        "spiffe://prod.test/ns/billing/sa/api": (1,),
    }
    # Wildcards by trust domain and the literal segments before the first `*`.
    assert policy.spiffe_wildcard == {"prod.test/ns/web/sa": (0,), "prod.test/batch": (2,)}
    assert policy.github_by_repository_id == {"74": (3,)}
    assert policy.github_by_owner_id == {}


def test_empty_document_is_an_empty_policy() -> None:
    policy = parse_policy("{}")
    assert policy.bindings == ()
    assert policy.roles == {}


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"roles": {"r": {"scopes": ["a"], "max_ttl_second": 60}}}')
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)
    error = caught.value
    assert error.source == str(path)
    assert error.location == "roles.r.max_ttl_second"
    assert "did you mean 'max_ttl_seconds'?" in str(error)
    assert str(error).startswith(f"{path}: roles.r.max_ttl_second: unknown key")


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy"):
        load_policy_file(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"roles": {', "invalid JSON"),
        ('{"roles": {}} trailing', "invalid JSON"),
        (b'{"description": "\xff"}', "not UTF-8"),
        ('{"version": NaN}', "NaN is not a JSON number"),
        ("[]", "expected an object, found an array"),
    ],
)
def test_unparseable_documents(content: str | bytes, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(content, "p.json")


def test_invalid_json_reports_line_and_column() -> None:
    with pytest.raises(PolicyError, match=r"p\.json: invalid JSON: .* \(line 2, column 2\)"):
        parse_policy('{"roles": {}\n}}', "p.json")


def test_duplicate_keys_are_refused() -> None:
    # json.loads would keep the second silently: a policy must not mean something unwritten.
    text = '{"roles": {"r": {"scopes": ["a"], "max_ttl_seconds": 60, "scopes": ["b"]}}}'
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.json")
    assert caught.value.location == "roles.r.scopes"
    assert "key given twice" in caught.value.message


def _target(document: dict[str, Any], keys: tuple[str | int, ...]) -> Any:
    target: Any = document
    for key in keys:
        target = target[key]
    return target


def _set(*path: str | int, to: Any) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        _target(document, path[:-1])[path[-1]] = to

    return edit


def _delete(*path: str | int) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        del _target(document, path[:-1])[path[-1]]

    return edit


@pytest.mark.parametrize(
    ("edit", "location", "message"),
    [
        # unknown keys, wherever they are: a typo must not change what a policy means
        (_set("rolez", to={}), "rolez", "did you mean 'roles'?"),
        (
            _set("roles", "reader", "scope", to=["x"]),
            "roles.reader.scope",
            "did you mean 'scopes'?",
        ),
        (_set("bindings", 0, "rolee", to="reader"), "bindings[0].rolee", "unknown key"),
        (_set("bindings", 0, "match", "id", to=[]), "bindings[0].match.id", "did you mean 'ids'?"),
        (
            _set("bindings", 0, "routes", "audience", to=[ORDERS]),
            "bindings[0].routes.audience",
            "unknown",
        ),
        (
            _set("bindings", 3, "match", "claim", to={}),
            "bindings[3].match.claim",
            "did you mean 'claims'?",
        ),
        (_set("audiences", ORDERS, "host", to=["a"]), f'audiences["{ORDERS}"].host', "unknown"),
        # missing and mistyped values
        (_delete("roles", "reader", "max_ttl_seconds"), "roles.reader", "missing required key"),
        (_delete("bindings", 0, "match"), "bindings[0]", "missing required key 'match'"),
        (_set("version", to=2), "version", "unsupported policy version"),
        (_set("version", to=True), "version", "unsupported policy version"),
        (_set("roles", to=[]), "roles", "expected an object, found an array"),
        (_set("bindings", to={}), "bindings", "expected an array"),
        (
            _set("roles", "reader", "max_ttl_seconds", to=True),
            "roles.reader.max_ttl_seconds",
            "integer",
        ),
        (
            _set("roles", "reader", "max_ttl_seconds", to=1.5),
            "roles.reader.max_ttl_seconds",
            "integer",
        ),
        (
            _set("roles", "reader", "max_ttl_seconds", to=0),
            "roles.reader.max_ttl_seconds",
            "outside",
        ),
        (
            _set("roles", "reader", "max_ttl_seconds", to=900_000),
            "roles.reader.max_ttl_seconds",
            "outside",
        ),
        (_set("roles", "reader", "scopes", to=[]), "roles.reader.scopes", "non-empty"),
        (_set("roles", "reader", "scopes", to=["a b"]), "roles.reader.scopes[0]", "not a scope"),
        (
            _set("roles", "reader", "scopes", to=["a", "a"]),
            "roles.reader.scopes[1]",
            "listed twice",
        ),
        (_set("roles", "bad/name", to={}), 'roles["bad/name"]', "role name"),
        # references between sections
        (_set("bindings", 0, "role", to="readr"), "bindings[0].role", "did you mean 'reader'?"),
        (
            _set("bindings", 1, "name", to="web-reads"),
            "bindings[1].name",
            "already used by bindings[0]",
        ),
        (
            _set("bindings", 0, "routes", "audiences", to=["https://x"]),
            "bindings[0].routes.audiences[0]",
            "not declared",
        ),
        (_set("bindings", 0, "routes", to={}), "bindings[0].routes", "restricts nothing"),
        (
            _set("bindings", 0, "routes", "methods", to=["get"]),
            "bindings[0].routes.methods[0]",
            "upper-case",
        ),
        (
            _set("bindings", 0, "routes", "path_prefixes", to=["api"]),
            "bindings[0].routes.path_prefixes[0]",
            "path prefix",
        ),
        (
            _set("bindings", 0, "match", "kind", to="saml"),
            "bindings[0].match.kind",
            "expected one of 'spiffe', 'github_actions', 'gitlab_ci', 'kubernetes', 'oidc'",
        ),
        # audiences
        (
            _set("audiences", DEPLOY, to={"hosts": ["orders.example.com"]}),
            f'audiences["{DEPLOY}"]',
            "already map to audience",
        ),
        (
            _set("audiences", DEPLOY, "route_keys", to=["orders"]),
            f'audiences["{DEPLOY}"].route_keys',
            "already maps",
        ),
        (
            _set("audiences", DEPLOY, "hosts", to=["deploy.example.com:443"]),
            f'audiences["{DEPLOY}"].hosts[0]',
            "without port",
        ),
        (_set("audiences", "has space", to={}), 'audiences["has space"]', "without whitespace"),
    ],
)
def test_structural_errors_name_the_path(edit: Edit, location: str, message: str) -> None:
    error = refused(edit)
    assert error.location == location
    assert message in error.message
    assert str(error).startswith(f"policy.json: {location}: ")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("spiffe://*.test/ns/web", "must be exact"),  # the trust domain is never a wildcard
        ("spiffe://Prod.test/ns/web", "must be exact"),
        ("spiffe://prod.test/ns/sa-*", "whole path segment"),
        ("spiffe://prod.test/**/web", "only be the last segment"),
        ("spiffe://prod.test/ns//web", "invalid SPIFFE ID path segment ''"),
        ("spiffe://prod.test/ns/web/", "invalid SPIFFE ID path segment ''"),
        ("spiffe://prod.test/ns/../web", "invalid SPIFFE ID path segment '..'"),
        ("https://prod.test/ns/web", "starts with 'spiffe://'"),
    ],
)
def test_bad_spiffe_patterns(pattern: str, message: str) -> None:
    error = refused(_set("bindings", 0, "match", "ids", to=[pattern]))
    assert error.location == "bindings[0].match.ids[0]"
    assert message in error.message


def test_github_binding_on_names_only_is_refused() -> None:
    def names_only(document: dict[str, Any]) -> None:
        claims = github_claims(document)
        del claims["repository_id"]
        claims["repository"] = "octo-org/octo-repo"
        claims["repository_owner"] = "octo-org"

    error = refused(names_only)
    assert error.location == "bindings[3].match.claims"
    assert "'deploy-main'" in error.message
    assert "repository_id" in error.message
    assert "repository_owner_id" in error.message


@pytest.mark.parametrize(
    "value", ["glob:7*", "regex:74|75", "octo-repo", ["74", "regex:.*"], "exact:"]
)
def test_repository_ids_must_be_exact_numbers(value: Any) -> None:
    error = refused(lambda d: github_claims(d).__setitem__("repository_id", value))
    assert error.location == "bindings[3].match.claims.repository_id"
    assert "exact numeric ids" in error.message


def test_invalid_regex_names_binding_and_claim() -> None:
    error = refused(lambda d: github_claims(d).__setitem__("ref", "regex:refs/heads/(main"))
    assert error.location == "bindings[3].match.claims.ref"
    assert "binding 'deploy-main' claim 'ref': invalid regex 'refs/heads/(main'" in error.message


@pytest.mark.parametrize(
    ("claim", "value", "message"),
    [
        ("ref", "glob:", "empty glob pattern"),
        ("ref", "regex:", "empty regex pattern"),
        ("ref", [], "non-empty array"),
        ("ref", 7, "expected a string or an array of strings"),
        ("iss", "https://x", "checked when the token is verified"),
        ("aud", "x", "checked when the token is verified"),
        ("bad-claim", "x", "expected a claim name"),
    ],
)
def test_bad_claim_rules(claim: str, value: Any, message: str) -> None:
    error = refused(lambda d: github_claims(d).__setitem__(claim, value))
    assert error.location.startswith(f"bindings[3].match.claims.{claim}") or claim == "bad-claim"
    assert message in error.message


def test_issuer_must_be_https() -> None:
    error = refused(_set("bindings", 3, "match", "issuer", to="http://token.example.com"))
    assert error.location == "bindings[3].match.issuer"


def test_claim_rules_accept_alternatives_and_exact_escape() -> None:
    document = policy_document()
    github_claims(document)["event_name"] = ["push", "exact:glob:literally"]
    match = compile_policy(document).bindings[3].match
    assert isinstance(match, GithubMatch)
    (event,) = [c for c in match.conditions if c.claim == "event_name"]
    assert [event.matches({"event_name": v}) for v in ("push", "glob:literally", "pull")] == [
        True,
        True,
        False,
    ]
