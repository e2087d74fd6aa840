"""Bindings for every token issuer: GitLab CI, Kubernetes, JWT-SVIDs and any OIDC provider.

Each binding kind matches only its own identities of its own issuer, with the rule language that
exists (exact, glob, anchored regex) on any verified claim, list claims by any element, and
`present` for a claim whatever its value. The loader refuses bindings that would match too much.
"""

from __future__ import annotations

from typing import Any

import pytest

from extauthz.model import Evidence, Grant, Identity, IdentityKind, SpiffeId
from extauthz.policy import Denial, DenyReason, Limits, PolicyError, evaluate_policy
from extauthz.policy.loader import compile_policy
from tests.extauthz.policy import DEPLOY, EXPIRES_AT, request, route

K8S = "https://oidc.prod-cluster.example"
GITLAB = "https://gitlab.example.com"
IDP = "https://login.example.com"
LIMITS = Limits(allowed_scopes=frozenset({"deploy:read", "deploy:write"}))
ON_DEPLOY = route("deploy.example.com", "/api/x")
ASK = {"audience": DEPLOY}


def token_identity(
    kind: IdentityKind,
    issuer: str,
    claims: dict[str, str],
    lists: dict[str, tuple[str, ...]] | None = None,
    spiffe_id: SpiffeId | None = None,
) -> Identity:
    return Identity(
        kind=kind,
        subject=f"{issuer}#sub={claims.get('sub', '')}",
        issuer=issuer,
        credential_hash="ef" * 32,
        expires_at=EXPIRES_AT,
        evidence=Evidence("oidc_token", b"h.p.s"),
        spiffe_id=spiffe_id,
        claims=claims,
        claim_lists=lists or {},
    )


def service_account(namespace: str = "shop", name: str = "web", issuer: str = K8S) -> Identity:
    return token_identity(
        IdentityKind.KUBERNETES,
        issuer,
        {
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "namespace": namespace,
            "service_account": name,
            "pod": f"{name}-7d4b9c-x2x9q",
        },
    )


def gitlab_job(**claims: str) -> Identity:
    base = {
        "sub": "project_path:my-group/my-project:ref_type:branch:ref:main",
        "project_id": "20",
        "namespace_id": "72",
        "project_path": "my-group/my-project",
        "ref": "main",
        "ref_protected": "true",
        "environment": "production",
    }
    return token_identity(IdentityKind.GITLAB_CI, GITLAB, {**base, **claims})


def engineer(groups: tuple[str, ...] = ("platform", "eng"), **claims: str) -> Identity:
    base = {"sub": "00u1ab2cd3", "email": "ada@example.com"}
    return token_identity(IdentityKind.OIDC, IDP, {**base, **claims}, {"groups": groups})


def jwt_svid(path: str = "/ns/shop/sa/web") -> Identity:
    uri = f"spiffe://prod.test{path}"
    return token_identity(
        IdentityKind.SPIFFE_JWT,
        "spiffe://prod.test",
        {"sub": uri},
        spiffe_id=SpiffeId("prod.test", path),
    )


def x509_svid(path: str = "/ns/shop/sa/web") -> Identity:
    identity = jwt_svid(path)
    return Identity(
        kind=IdentityKind.SPIFFE,
        subject=identity.subject,
        issuer="prod.test",
        credential_hash="01" * 32,
        expires_at=EXPIRES_AT,
        evidence=Evidence("certificate", b"PEM"),
        spiffe_id=identity.spiffe_id,
        certificate_sha256=b"\x01" * 32,
    )


def policy_with(match: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "roles": {"deployer": {"scopes": ["deploy:read", "deploy:write"], "max_ttl_seconds": 900}},
        "audiences": {DEPLOY: {"hosts": ["deploy.example.com"]}},
        "bindings": [{"name": "the-binding", "role": "deployer", "match": match}],
    }


def decide(match: dict[str, Any], identity: Identity) -> Grant | Denial:
    policy = compile_policy(policy_with(match), "test.json")
    return evaluate_policy(policy, request(identity, ON_DEPLOY, **ASK), LIMITS)


def granted(match: dict[str, Any], identity: Identity) -> bool:
    decision = decide(match, identity)
    if isinstance(decision, Denial):
        assert decision.reason is DenyReason.NO_MATCHING_BINDING, decision
        return False
    assert decision.rule == "the-binding/deployer"
    return True


def refused(match: dict[str, Any]) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        compile_policy(policy_with(match), "test.json")
    return caught.value


# --- Kubernetes ------------------------------------------------------------------------------

K8S_SHOP = {
    "kind": "kubernetes",
    "issuer": K8S,
    "claims": {"namespace": "shop", "service_account": ["web", "glob:batch-*"]},
}


def test_kubernetes_binding_on_namespace_and_service_account() -> None:
    assert granted(K8S_SHOP, service_account("shop", "web"))
    assert granted(K8S_SHOP, service_account("shop", "batch-nightly"))
    assert not granted(K8S_SHOP, service_account("shop", "api"))
    assert not granted(K8S_SHOP, service_account("billing", "web"))


def test_kubernetes_binding_is_for_its_cluster_only() -> None:
    """Two clusters both have a `shop/web`; the binding names one issuer."""
    assert not granted(K8S_SHOP, service_account(issuer="https://oidc.other-cluster.example"))


def test_a_binding_kind_matches_only_its_own_identities() -> None:
    """An oidc binding on the same issuer URL and claims does not match a service account."""
    oidc = {**K8S_SHOP, "kind": "oidc"}
    assert not granted(oidc, service_account("shop", "web"))
    same_claims = token_identity(IdentityKind.OIDC, K8S, dict(service_account().claims))
    assert granted(oidc, same_claims)
    assert not granted(K8S_SHOP, same_claims)


def test_regex_is_anchored() -> None:
    match = {"kind": "kubernetes", "issuer": K8S, "claims": {"namespace": "regex:shop|billing"}}
    assert granted(match, service_account("billing"))
    assert not granted(match, service_account("shop-evil"))


# --- GitLab CI -------------------------------------------------------------------------------

GITLAB_MAIN = {
    "kind": "gitlab_ci",
    "issuer": GITLAB,
    "claims": {"project_id": "20", "ref": "main", "ref_protected": "true"},
}


def test_gitlab_binding_pins_the_project_id() -> None:
    assert granted(GITLAB_MAIN, gitlab_job())
    assert not granted(GITLAB_MAIN, gitlab_job(project_id="21"))  # same path, another project
    assert not granted(GITLAB_MAIN, gitlab_job(ref_protected="false"))
    by_namespace = {"kind": "gitlab_ci", "issuer": GITLAB, "claims": {"namespace_id": "72"}}
    assert granted(by_namespace, gitlab_job(project_id="99"))


@pytest.mark.parametrize(
    "claims",
    [
        {"project_path": "my-group/my-project"},
        {"project_id": "glob:2*"},
        {"project_id": "regex:20"},
        {"namespace_id": "my-group"},
    ],
)
def test_gitlab_binding_by_name_or_id_pattern_is_refused(claims: dict[str, str]) -> None:
    error = refused({"kind": "gitlab_ci", "issuer": GITLAB, "claims": claims})
    assert "project_id" in str(error) or "namespace_id must be exact numeric ids" in str(error)


# --- people ----------------------------------------------------------------------------------


def test_people_by_group_any_element_matches() -> None:
    match = {"kind": "oidc", "issuer": IDP, "claims": {"groups": "platform"}}
    assert granted(match, engineer(groups=("eng", "platform")))
    assert not granted(match, engineer(groups=("eng", "platform-readonly")))
    assert not granted(match, engineer(groups=()))
    globbed = {"kind": "oidc", "issuer": IDP, "claims": {"groups": "glob:team-*"}}
    assert granted(globbed, engineer(groups=("eng", "team-payments")))


def test_people_by_email_and_sub() -> None:
    by_email = {"kind": "oidc", "issuer": IDP, "claims": {"email": "glob:*@example.com"}}
    assert granted(by_email, engineer())
    assert not granted(by_email, engineer(email="ada@example.com.evil.test"))
    # The verifier drops an unverified email: such an identity has none, and matches nothing.
    unverified = token_identity(IdentityKind.OIDC, IDP, {"sub": "00u1ab2cd3"})
    assert not granted(by_email, unverified)
    by_sub = {"kind": "oidc", "issuer": IDP, "claims": {"sub": ["00u1ab2cd3", "00u9"]}}
    assert granted(by_sub, engineer())


def test_present_requires_a_claim_whatever_its_value() -> None:
    match = {"kind": "oidc", "issuer": IDP, "present": ["email", "groups"]}
    assert granted(match, engineer())
    assert not granted(match, engineer(groups=()))
    assert not granted(
        match, token_identity(IdentityKind.OIDC, IDP, {"sub": "x"}, {"groups": ("a",)})
    )
    with_github = {
        "kind": "github_actions",
        "issuer": "https://token.actions.githubusercontent.com",
        "claims": {"repository_id": "74"},
        "present": ["environment"],
    }
    compile_policy(policy_with(with_github), "test.json")


def test_a_binding_that_names_no_claim_is_refused() -> None:
    """It would match everyone the issuer vouches for: every employee, every pod."""
    for kind in ("oidc", "kubernetes"):
        error = refused({"kind": kind, "issuer": IDP})
        assert "would match every identity" in str(error)


def test_email_verified_cannot_be_matched() -> None:
    error = refused({"kind": "oidc", "issuer": IDP, "claims": {"email_verified": "true"}})
    assert "only when the IdP verified it" in str(error)


@pytest.mark.parametrize("issuer", ["http://login.example.com", "login.example.com", ""])
def test_token_binding_issuer_is_https(issuer: str) -> None:
    assert "https://" in str(refused({"kind": "oidc", "issuer": issuer, "claims": {"sub": "x"}}))


@pytest.mark.parametrize("present", [[], ["groups", "groups"], ["not a claim"], "groups"])
def test_present_is_a_list_of_claim_names(present: object) -> None:
    refused({"kind": "oidc", "issuer": IDP, "present": present})


# --- SPIFFE: X.509-SVIDs and JWT-SVIDs -------------------------------------------------------


def test_spiffe_binding_accepts_jwt_svids_only_when_it_says_so() -> None:
    ids = ["spiffe://prod.test/ns/shop/sa/*"]
    default = {"kind": "spiffe", "ids": ids}
    assert granted(default, x509_svid())
    assert not granted(default, jwt_svid())
    both = {"kind": "spiffe", "ids": ids, "svids": ["x509", "jwt"]}
    assert granted(both, x509_svid())
    assert granted(both, jwt_svid())
    jwt_only = {"kind": "spiffe", "ids": ids, "svids": ["jwt"]}
    assert granted(jwt_only, jwt_svid())
    assert not granted(jwt_only, x509_svid())
    assert not granted(jwt_only, jwt_svid("/ns/billing/sa/web"))


@pytest.mark.parametrize("svids", [[], ["x509", "x509"], ["JWT"], ["cert"], "jwt"])
def test_svids_is_x509_or_jwt(svids: object) -> None:
    refused({"kind": "spiffe", "ids": ["spiffe://prod.test/a"], "svids": svids})
