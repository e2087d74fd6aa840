"""policy/example.json and policy/example.rego make the decisions they were written to make."""

from __future__ import annotations

from typing import Any

import pytest

from extauthz.identity import load_issuers_file
from extauthz.identity.issuers import JwksPath
from extauthz.model import Evidence, Grant, Identity, IdentityKind, Route
from extauthz.policy import (
    Decision,
    Denial,
    DenyReason,
    Limits,
    PolicyEngine,
    RegoPolicy,
    evaluate_policy,
    load_policy_file,
)
from tests.conftest import REPO
from tests.extauthz.policy import github_identity, request, route, spiffe_identity

POLICY = load_policy_file(REPO / "policy" / "example.json")
REGO = RegoPolicy.load_file(REPO / "policy" / "example.rego")
LIMITS = Limits(
    allowed_scopes=frozenset(
        {
            "orders:read",
            "payments:charge",
            "payments:read",
            "deploy:read",
            "deploy:write",
            "deploy:preview",
        }
    )
)
JSON_ONLY = PolicyEngine(limits=LIMITS, policy=POLICY)
WITH_REGO = PolicyEngine(limits=LIMITS, policy=POLICY, rego=REGO)

ORDERS = "https://orders.internal.example.com"
PAYMENTS = "https://payments.internal.example.com"
DEPLOY = "https://deploy.internal.example.com"
CART = spiffe_identity("spiffe://prod.example.com/ns/checkout/sa/cart")
CHECKOUT_API = spiffe_identity("spiffe://prod.example.com/ns/checkout/sa/checkout-api")
ORDERS_GET = route("orders.internal.example.com", "/v1/orders/1")
DEPLOY_SHOP = route("deploy.internal.example.com", "/api/deployments/shop", "POST")


def decide(engine: PolicyEngine, identity: Any, on: Route, **fields: Any) -> Decision:
    return engine.evaluate(request(identity, on, **fields))


def reason(decision: Decision) -> DenyReason:
    assert isinstance(decision, Denial), decision
    return decision.reason


def test_checkout_services_read_orders() -> None:
    assert decide(JSON_ONLY, CART, ORDERS_GET) == Grant(
        ORDERS, ("orders:read",), 900, "checkout-reads-orders/orders-reader"
    )
    assert decide(WITH_REGO, CART, ORDERS_GET) == Grant(
        ORDERS, ("orders:read",), 900, "checkout-reads-orders/orders-reader+rego"
    )


def test_checkout_services_do_not_write_orders() -> None:
    on = route("orders.internal.example.com", "/v1/orders", "POST")
    assert reason(decide(JSON_ONLY, CART, on)) is DenyReason.ROUTE_NOT_ALLOWED


def test_other_trust_domains_get_nothing() -> None:
    staging = spiffe_identity("spiffe://staging.example.com/ns/checkout/sa/cart")
    assert reason(decide(JSON_ONLY, staging, ORDERS_GET)) is DenyReason.NO_MATCHING_BINDING


def test_only_checkout_api_charges_payments() -> None:
    charge = route("payments.internal.example.com", "/v1/charges", "POST")
    assert decide(WITH_REGO, CHECKOUT_API, charge) == Grant(
        PAYMENTS,
        ("payments:charge", "payments:read"),
        300,
        "checkout-api-charges/payments-charger+rego",
    )
    assert reason(decide(JSON_ONLY, CART, charge)) is DenyReason.ROUTE_NOT_ALLOWED
    refund = route("payments.internal.example.com", "/v1/refunds", "POST")
    assert reason(decide(JSON_ONLY, CHECKOUT_API, refund)) is DenyReason.ROUTE_NOT_ALLOWED


def test_platform_workloads_at_any_depth_read_orders() -> None:
    job = spiffe_identity("spiffe://prod.example.com/ns/platform/jobs/nightly/reindex")
    decision = decide(WITH_REGO, job, route("x", "/", audience=ORDERS))
    assert isinstance(decision, Grant)
    assert decision.rule == "platform-batch-reads-orders/orders-reader+rego"
    platform_root = spiffe_identity("spiffe://prod.example.com/ns/platform")
    assert reason(decide(JSON_ONLY, platform_root, ORDERS_GET)) is DenyReason.NO_MATCHING_BINDING


def test_prod_deploy_from_main_through_the_shared_workflow() -> None:
    # GitHub's documented example token: octo-repo, environment prod, main, workflow_dispatch.
    assert decide(JSON_ONLY, github_identity(), DEPLOY_SHOP) == Grant(
        DEPLOY, ("deploy:read", "deploy:write"), 600, "octo-repo-deploys-prod/deployer"
    )
    # example.rego keeps CI tokens to 5 minutes.
    assert decide(WITH_REGO, github_identity(), DEPLOY_SHOP) == Grant(
        DEPLOY, ("deploy:read", "deploy:write"), 300, "octo-repo-deploys-prod/deployer+rego"
    )


def test_dry_run_is_narrowed_to_read() -> None:
    dry_run = route("deploy.internal.example.com", "/api/deployments/shop?dry_run=true", "POST")
    decision = decide(WITH_REGO, github_identity(), dry_run)
    assert isinstance(decision, Grant)
    assert decision.scopes == ("deploy:read",)


def test_ci_writes_one_service_at_a_time() -> None:
    all_services = route("deploy.internal.example.com", "/api/deployments", "POST")
    assert reason(decide(WITH_REGO, github_identity(), all_services)) is DenyReason.REGO_DENIED


def test_token_exchange_endpoint_is_allowed() -> None:
    token = route("keymint.example.com", "/token", "POST")
    decision = decide(WITH_REGO, github_identity(), token, audience=DEPLOY)
    assert isinstance(decision, Grant)
    assert decision.audience == DEPLOY


@pytest.mark.parametrize(
    "claims",
    [
        {"repository_id": "1234"},  # a recycled octo-org/octo-repo: same names, another id
        {"repository_owner_id": "66", "repository_id": "1234"},
        {"ref": "refs/heads/main-evil"},
        {"ref": "refs/heads/feature"},
        {"event_name": "pull_request"},
        {"environment": "dev"},
        {"job_workflow_ref": "octo-org/octo-repo/.github/workflows/deploy.yml@refs/heads/main"},
        {"job_workflow_ref": "octo-org/octo-automation/.github/workflows/a/b.yml@refs/heads/main"},
    ],
)
def test_near_miss_github_identities_get_nothing(claims: dict[str, str]) -> None:
    decision = decide(JSON_ONLY, github_identity(**claims), DEPLOY_SHOP)
    assert reason(decision) is DenyReason.NO_MATCHING_BINDING


def test_org_repositories_deploy_previews_to_staging_only() -> None:
    preview = github_identity(
        repository="octo-org/other", repository_id="80", environment="staging"
    )
    release = github_identity(
        repository_id="80", environment="staging", ref="refs/heads/release/v2"
    )
    for identity in (preview, release):
        decision = decide(JSON_ONLY, identity, DEPLOY_SHOP)
        assert isinstance(decision, Grant)
        assert decision.scopes == ("deploy:preview", "deploy:read")
    write = decide(JSON_ONLY, preview, DEPLOY_SHOP, scopes=("deploy:write",))
    assert reason(write) is DenyReason.SCOPE_NOT_ALLOWED
    assert reason(decide(JSON_ONLY, preview, ORDERS_GET)) is DenyReason.AUDIENCE_NOT_ALLOWED


def test_json_policy_decisions_are_what_the_engine_returns() -> None:
    req = request(CART, ORDERS_GET)
    assert JSON_ONLY.evaluate(req) == evaluate_policy(POLICY, req, LIMITS)


# --- every kind of workload, and engineers (policy/issuers.example.json names the issuers) ------

ISSUERS = {c.name: c for c in load_issuers_file(REPO / "policy" / "issuers.example.json")}
BINDING_KINDS = {
    "github_actions": "github_actions",
    "gitlab_ci": "gitlab_ci",
    "kubernetes": "kubernetes",
    "oidc": "oidc",
}


def token_identity(
    kind: IdentityKind, issuer: str, claims: dict[str, str], **lists: tuple[str, ...]
) -> Identity:
    return Identity(
        kind=kind,
        subject=f"{issuer}#sub={claims['sub']}",
        issuer=issuer,
        credential_hash="ab" * 32,
        expires_at=1_900_000_000,
        evidence=Evidence("oidc_token", b"h.p.s"),
        claims=claims,
        claim_lists=lists,
    )


def test_every_token_binding_names_a_configured_issuer_of_its_kind() -> None:
    """A binding whose issuer is not configured would never match: the two files agree."""
    configured = {(c.preset.name, c.issuer) for c in ISSUERS.values()}
    for binding in POLICY.bindings:
        issuer = getattr(binding.match, "issuer", None)
        if issuer is None:
            continue
        kind = getattr(binding.match, "kind", IdentityKind.GITHUB_ACTIONS).value
        assert (BINDING_KINDS[kind], issuer) in configured, binding.name


def test_the_example_issuers_are_one_of_each_preset() -> None:
    assert {c.preset.name for c in ISSUERS.values()} == {
        "github_actions",
        "kubernetes",
        "gitlab_ci",
        "spiffe_jwt",
        "oidc",
    }
    assert ISSUERS["prod-cluster"].keys == JwksPath(REPO / "policy" / "prod-cluster-jwks.json")


def test_shop_pods_read_orders() -> None:
    cluster = ISSUERS["prod-cluster"].issuer
    assert cluster is not None
    web = token_identity(
        IdentityKind.KUBERNETES,
        cluster,
        {"sub": "system:serviceaccount:shop:web", "namespace": "shop", "service_account": "web"},
    )
    decision = decide(WITH_REGO, web, ORDERS_GET)
    assert isinstance(decision, Grant)
    assert decision.rule == "shop-pods-read-orders/orders-reader+rego"
    admin = token_identity(
        IdentityKind.KUBERNETES,
        cluster,
        {
            "sub": "system:serviceaccount:shop:admin",
            "namespace": "shop",
            "service_account": "admin",
        },
    )
    assert reason(decide(JSON_ONLY, admin, ORDERS_GET)) is DenyReason.NO_MATCHING_BINDING


def test_platform_engineers_read_deploys_for_15_minutes() -> None:
    okta = ISSUERS["okta"].issuer
    assert okta is not None
    ada = token_identity(
        IdentityKind.OIDC,
        okta,
        {"sub": "00u-ada", "email": "ada@example.com"},
        groups=("Everyone", "platform"),
    )
    on = route("deploy.internal.example.com", "/api/deployments/shop")
    assert decide(JSON_ONLY, ada, on, ttl_seconds=3600) == Grant(
        DEPLOY, ("deploy:read",), 900, "platform-engineers-read-deploys/engineer-deploy-reader"
    )
    assert reason(decide(JSON_ONLY, ada, on, scopes=("deploy:write",))) is (
        DenyReason.SCOPE_NOT_ALLOWED
    )
    contractor = token_identity(
        IdentityKind.OIDC,
        okta,
        {"sub": "00u-c", "email": "c@contractor.test"},
        groups=("platform",),
    )
    assert reason(decide(JSON_ONLY, contractor, on)) is DenyReason.NO_MATCHING_BINDING


def test_gitlab_main_deploys_previews() -> None:
    gitlab = ISSUERS["gitlab"].issuer
    assert gitlab is not None
    claims = {
        "sub": "project_path:my-group/my-project:ref_type:branch:ref:main",
        "project_id": "20",
        "namespace_id": "72",
        "ref": "main",
        "ref_protected": "true",
        "environment": "staging",
    }
    decision = decide(
        JSON_ONLY, token_identity(IdentityKind.GITLAB_CI, gitlab, claims), DEPLOY_SHOP
    )
    assert isinstance(decision, Grant)
    assert decision.rule == "gitlab-main-previews/deploy-previewer"
    unprotected = {**claims, "ref_protected": "false"}
    denied = decide(
        JSON_ONLY, token_identity(IdentityKind.GITLAB_CI, gitlab, unprotected), DEPLOY_SHOP
    )
    assert reason(denied) is DenyReason.NO_MATCHING_BINDING
