"""Decisions of the JSON policy: each rule allows what it should and denies what it should."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extauthz.model import Evidence, Grant, Identity, IdentityKind, Route, SpiffeId
from extauthz.policy import (
    Decision,
    Denial,
    DenyReason,
    Limits,
    PolicyEngine,
    PolicyError,
    evaluate_policy,
)
from extauthz.policy.loader import compile_policy, parse_policy
from extauthz.policy.model import ClaimRule, GithubMatch, Policy, RuleKind
from tests.extauthz.policy import (
    DEPLOY,
    ORDERS,
    github_identity,
    policy_document,
    request,
    route,
    spiffe_identity,
)

ALL_SCOPES = frozenset({"orders:read", "orders:write", "deploy:read", "deploy:write"})
LIMITS = Limits(allowed_scopes=ALL_SCOPES, default_ttl_seconds=900)
POLICY = compile_policy(policy_document(), "test-policy.json")

WEB = "spiffe://prod.test/ns/web/sa/search"
FRONTEND = "spiffe://prod.test/ns/web/sa/frontend"
BILLING = "spiffe://prod.test/ns/billing/sa/api"
ORDERS_GET = route("orders.example.com", "/orders/42")
DEPLOY_POST = route("deploy.example.com", "/api/deployments/shop", "POST")


def decide(
    identity: Identity, on: Route = ORDERS_GET, limits: Limits = LIMITS, **fields: Any
) -> Decision:
    return evaluate_policy(POLICY, request(identity, on, **fields), limits)


def denied(decision: object, reason: DenyReason) -> Denial:
    assert isinstance(decision, Denial), decision
    assert decision.reason is reason, decision
    return decision


def test_spiffe_workload_is_granted_its_role_for_the_routes_audience() -> None:
    assert decide(spiffe_identity(WEB)) == Grant(
        audience=ORDERS, scopes=("orders:read",), ttl_seconds=600, rule="web-reads/reader"
    )


def test_github_deploy_from_main_is_granted() -> None:
    assert decide(github_identity(), DEPLOY_POST) == Grant(
        audience=DEPLOY,
        scopes=("deploy:read", "deploy:write"),
        ttl_seconds=900,
        rule="deploy-main/deployer",
    )


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://staging.test/ns/web/sa/search",  # wrong trust domain
        "spiffe://prod.test.evil/ns/web/sa/search",
        "spiffe://prod.test/ns/web/sa/search/extra",  # `*` is exactly one segment
        "spiffe://prod.test/ns/web/sa",
        "spiffe://prod.test/ns/webx/sa/search",
        "spiffe://prod.test/batch",  # `/**` needs at least one more segment
    ],
)
def test_spiffe_ids_outside_every_pattern_match_no_binding(uri: str) -> None:
    denied(decide(spiffe_identity(uri)), DenyReason.NO_MATCHING_BINDING)


def test_trailing_double_star_matches_any_depth() -> None:
    decision = decide(spiffe_identity("spiffe://prod.test/batch/nightly/a/b"))
    assert isinstance(decision, Grant)
    assert decision.rule == "batch/reader"


@pytest.mark.parametrize("path", ["/ns/web/sa/..", "/ns/web/sa/", "ns/web/sa/x"])
def test_malformed_spiffe_path_matches_no_wildcard(path: str) -> None:
    # `*` stands for one valid segment: never "..", never empty.
    malformed = SpiffeId(trust_domain="prod.test", path=path)
    identity = dataclasses.replace(spiffe_identity(WEB), spiffe_id=malformed)
    denied(decide(identity), DenyReason.NO_MATCHING_BINDING)


def test_recycled_repository_name_with_another_id_is_denied() -> None:
    # Same name, owner and everything else: only the id says it is not the repository we trust.
    impostor = github_identity(repository_id="99999")
    assert impostor.claims["repository"] == "octo-org/octo-repo"
    denied(decide(impostor, DEPLOY_POST), DenyReason.NO_MATCHING_BINDING)


@pytest.mark.parametrize(
    "claims",
    [
        {"ref": "refs/heads/dev"},
        {"ref": "refs/heads/main-evil"},  # regex: is anchored at the end
        {"ref": "xrefs/heads/main"},  # ... and at the start
        {"ref": "refs/heads/main\n"},
        {"environment": "staging"},
        {"job_workflow_ref": "octo-org/octo-automation/.github/workflows/x/y.yml@refs/heads/main"},
        {"job_workflow_ref": "evil/octo-automation/.github/workflows/oidc.yml@refs/heads/main"},
    ],
)
def test_github_claim_rules_deny_near_misses(claims: dict[str, str]) -> None:
    denied(decide(github_identity(**claims), DEPLOY_POST), DenyReason.NO_MATCHING_BINDING)


def test_github_identity_from_another_issuer_is_denied() -> None:
    other = dataclasses.replace(
        github_identity(), issuer="https://ghes.example.com/_services/token"
    )
    denied(decide(other, DEPLOY_POST), DenyReason.NO_MATCHING_BINDING)


def test_certificate_without_spiffe_id_matches_no_binding() -> None:
    x509 = Identity(
        kind=IdentityKind.X509,
        subject="CN=legacy",
        issuer="corp-ca",
        credential_hash="ef" * 32,
        expires_at=0,
        evidence=Evidence(kind="certificate", value=b""),
    )
    denied(decide(x509), DenyReason.NO_MATCHING_BINDING)


def test_empty_policy_denies_everyone() -> None:
    empty = parse_policy("{}")
    for identity, on in ((spiffe_identity(WEB), ORDERS_GET), (github_identity(), DEPLOY_POST)):
        decision = evaluate_policy(empty, request(identity, on), LIMITS)
        denied(decision, DenyReason.NO_MATCHING_BINDING)


def test_audience_not_granted_to_the_binding_is_denied() -> None:
    denial = denied(decide(spiffe_identity(WEB), audience=DEPLOY), DenyReason.AUDIENCE_NOT_ALLOWED)
    assert DEPLOY in denial.detail


def test_undeclared_audience_is_denied() -> None:
    decision = decide(spiffe_identity(WEB), audience="https://elsewhere.example.com")
    denied(decision, DenyReason.UNKNOWN_AUDIENCE)


def test_route_without_an_audience_is_denied() -> None:
    decision = decide(spiffe_identity(WEB), route("unmapped.example.com"))
    denied(decision, DenyReason.NO_AUDIENCE)


def test_audience_from_route_key_and_from_context_extensions() -> None:
    by_key = decide(spiffe_identity(WEB), route("gateway.local", route="orders"))
    by_context = decide(spiffe_identity(WEB), route("gateway.local", audience=ORDERS))
    assert isinstance(by_key, Grant)
    assert isinstance(by_context, Grant)
    assert by_key.audience == by_context.audience == ORDERS
    denied(
        decide(spiffe_identity(WEB), route("gateway.local", route="nope")), DenyReason.NO_AUDIENCE
    )


def test_explicit_audience_cannot_override_the_routes() -> None:
    on = route("gateway.local", audience=ORDERS)
    denied(decide(spiffe_identity(WEB), on, audience=DEPLOY), DenyReason.AUDIENCE_NOT_ALLOWED)


def test_audience_path_prefix_matches_on_segment_boundaries() -> None:
    deploy = github_identity()
    assert isinstance(decide(deploy, route("deploy.example.com", "/api?x=1", "POST")), Grant)
    denied(decide(deploy, route("deploy.example.com", "/apix", "POST")), DenyReason.NO_AUDIENCE)


@pytest.mark.parametrize(
    "on",
    [
        route("orders.example.com", "/orders/1", "DELETE"),  # method
        route("orders.example.com", "/payments", "POST"),  # path prefix
        route("orders.example.com", "/orders-archive", "POST"),  # prefix is per segment
    ],
)
def test_binding_routes_restrict_method_and_path(on: Route) -> None:
    billing = spiffe_identity(BILLING)  # matches frontend-writes only
    assert isinstance(decide(billing, route("orders.example.com", "/orders/1", "POST")), Grant)
    denial = denied(decide(billing, on), DenyReason.ROUTE_NOT_ALLOWED)
    assert denial.rule == "frontend-writes/writer"


def test_first_binding_that_covers_the_requested_scopes_grants() -> None:
    identity = spiffe_identity(FRONTEND)  # matches web-reads and frontend-writes
    reads = decide(identity, route("orders.example.com", "/orders", "POST"))
    writes = decide(
        identity, route("orders.example.com", "/orders", "POST"), scopes=("orders:write",)
    )
    assert isinstance(reads, Grant)
    assert reads.rule == "web-reads/reader"
    assert writes == Grant(ORDERS, ("orders:write",), 300, "frontend-writes/writer")


def test_scope_the_role_lacks_is_denied() -> None:
    denial = denied(
        decide(spiffe_identity(WEB), scopes=("orders:write",)), DenyReason.SCOPE_NOT_ALLOWED
    )
    assert denial.rule == "web-reads/reader"
    assert "orders:write" in denial.detail


def test_requested_scope_outside_allowed_scopes_is_refused() -> None:
    capped = Limits(allowed_scopes=frozenset({"orders:read"}))
    identity = spiffe_identity(FRONTEND)
    on = route("orders.example.com", "/orders", "POST")
    denial = denied(
        decide(identity, on, capped, scopes=("orders:write",)), DenyReason.SCOPE_NOT_ALLOWED
    )
    assert "ALLOWED_SCOPES" in denial.detail


def test_role_default_scopes_outside_allowed_scopes_are_dropped() -> None:
    capped = Limits(allowed_scopes=frozenset({"deploy:read"}))
    decision = decide(github_identity(), DEPLOY_POST, capped)
    assert isinstance(decision, Grant)
    assert decision.scopes == ("deploy:read",)
    nothing_left = Limits(allowed_scopes=frozenset({"other"}))
    denied(decide(github_identity(), DEPLOY_POST, nothing_left), DenyReason.NO_SCOPES)


def test_scopes_from_context_extensions_are_a_request() -> None:
    on = route("deploy.example.com", "/api/x", "POST", scopes="deploy:read  deploy:read")
    decision = decide(github_identity(), on)
    assert isinstance(decision, Grant)
    assert decision.scopes == ("deploy:read",)


@pytest.mark.parametrize(
    ("requested", "default", "expected"),
    [
        (None, 900, 600),  # default above the role's maximum
        (None, 120, 120),
        (3600, 900, 600),  # request above the maximum
        (60, 900, 60),
    ],
)
def test_ttl_is_the_request_or_default_clamped_to_the_role(
    requested: int | None, default: int, expected: int
) -> None:
    limits = Limits(allowed_scopes=ALL_SCOPES, default_ttl_seconds=default)
    decision = decide(spiffe_identity(WEB), limits=limits, ttl_seconds=requested)
    assert isinstance(decision, Grant)
    assert decision.ttl_seconds == expected


def test_non_positive_ttl_is_denied() -> None:
    denied(decide(spiffe_identity(WEB), ttl_seconds=0), DenyReason.INVALID_TTL)


def test_engine_needs_a_policy() -> None:
    with pytest.raises(PolicyError, match="no policy configured"):
        PolicyEngine(limits=LIMITS)


def test_engine_with_json_policy_alone_is_evaluate_policy() -> None:
    engine = PolicyEngine(limits=LIMITS, policy=POLICY)
    req = request(spiffe_identity(WEB), ORDERS_GET)
    assert engine.evaluate(req) == evaluate_policy(POLICY, req, LIMITS)


def test_compiled_policy_is_frozen() -> None:
    assert isinstance(POLICY, Policy)
    with pytest.raises(dataclasses.FrozenInstanceError):
        POLICY.bindings = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        POLICY.roles["reader"] = POLICY.roles["writer"]  # type: ignore[index]


_SEGMENT = st.text(st.characters(blacklist_characters="/\n"), max_size=12)


@given(_SEGMENT, _SEGMENT)
def test_glob_star_matches_within_a_segment_never_across(left: str, right: str) -> None:
    rule = _claim_rule("glob:refs/heads/release-*")
    assert rule.matches(f"refs/heads/release-{left}")
    assert not rule.matches(f"refs/heads/release-{left}/{right}")


@given(st.text(min_size=1))
def test_regex_rule_is_anchored(suffix: str) -> None:
    rule = _claim_rule("regex:refs/heads/main")
    assert rule.matches("refs/heads/main")
    assert not rule.matches("refs/heads/main" + suffix)
    assert not rule.matches(suffix + "refs/heads/main")


def _claim_rule(text: str) -> ClaimRule:
    document = policy_document()
    document["bindings"][3]["match"]["claims"]["ref"] = text
    match = compile_policy(document).bindings[3].match
    assert isinstance(match, GithubMatch)
    condition = next(c for c in match.conditions if c.claim == "ref")
    assert condition.rules[0].kind in (RuleKind.GLOB, RuleKind.REGEX)
    return condition.rules[0]
