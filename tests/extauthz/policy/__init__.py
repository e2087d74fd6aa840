"""Builders shared by the policy tests (also used by tests/policy): identities, routes, a policy."""

from __future__ import annotations

import json
from typing import Any

from extauthz.identity import github_subject
from extauthz.model import Evidence, Identity, IdentityKind, Route, SpiffeId
from extauthz.policy import AuthzRequest
from tests.conftest import VECTORS

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
ORDERS = "https://orders.example.com"
DEPLOY = "https://deploy.example.com"
EXPIRES_AT = 1_900_000_000


def spiffe_identity(uri: str) -> Identity:
    trust_domain, _, path = uri.removeprefix("spiffe://").partition("/")
    return Identity(
        kind=IdentityKind.SPIFFE,
        subject=uri,
        issuer=trust_domain,
        credential_hash="ab" * 32,
        expires_at=EXPIRES_AT,
        evidence=Evidence(kind="certificate", value=b"-----BEGIN CERTIFICATE-----"),
        spiffe_id=SpiffeId(trust_domain=trust_domain, path=f"/{path}" if path else ""),
        certificate_sha256=b"\x01" * 32,
    )


def example_github_claims() -> dict[str, str]:
    """The string claims of GitHub's documented example token (ids are strings there too)."""
    document = json.loads((VECTORS / "github-oidc" / "example-token-claims.json").read_text())
    payload = document["payload"]
    return {key: value for key, value in payload.items() if isinstance(value, str)}


def github_identity(**overrides: str) -> Identity:
    claims = {**example_github_claims(), **overrides}
    issuer = claims.pop("iss")
    return Identity(
        kind=IdentityKind.GITHUB_ACTIONS,
        subject=github_subject(issuer, claims["repository_owner_id"], claims["repository_id"]),
        issuer=issuer,
        credential_hash="cd" * 32,
        expires_at=EXPIRES_AT,
        evidence=Evidence(kind="oidc_token", value=b"header.payload.signature"),
        claims=claims,
    )


def route(host: str, path: str = "/", method: str = "GET", **context_extensions: str) -> Route:
    return Route(host=host, path=path, method=method, context_extensions=context_extensions)


def request(identity: Identity, on: Route, **fields: Any) -> AuthzRequest:
    return AuthzRequest(identity=identity, route=on, **fields)


def policy_document() -> dict[str, Any]:
    """A fresh, valid policy document; tests break one field at a time."""
    return {
        "version": 1,
        "roles": {
            "reader": {"scopes": ["orders:read"], "max_ttl_seconds": 600},
            "writer": {"scopes": ["orders:read", "orders:write"], "max_ttl_seconds": 300},
            "deployer": {"scopes": ["deploy:read", "deploy:write"], "max_ttl_seconds": 3600},
        },
        "audiences": {
            ORDERS: {"hosts": ["orders.example.com"], "route_keys": ["orders"]},
            DEPLOY: {"hosts": ["deploy.example.com"], "path_prefixes": ["/api"]},
        },
        "bindings": [
            {
                "name": "web-reads",
                "role": "reader",
                "match": {"kind": "spiffe", "ids": ["spiffe://prod.test/ns/web/sa/*"]},
                "routes": {"audiences": [ORDERS]},
            },
            {
                "name": "frontend-writes",
                "role": "writer",
                "match": {
                    "kind": "spiffe",
                    "ids": [
                        "spiffe://prod.test/ns/web/sa/frontend",
                        "spiffe://prod.test/ns/billing/sa/api",
                    ],
                },
                "routes": {
                    "audiences": [ORDERS],
                    "methods": ["GET", "POST"],
                    "path_prefixes": ["/orders"],
                },
            },
            {
                "name": "batch",
                "role": "reader",
                "match": {"kind": "spiffe", "ids": ["spiffe://prod.test/batch/**"]},
            },
            {
                "name": "deploy-main",
                "role": "deployer",
                "match": {
                    "kind": "github_actions",
                    "issuer": GITHUB_ISSUER,
                    "claims": {
                        "repository_id": "74",
                        "ref": "regex:refs/heads/main",
                        "environment": "prod",
                        "job_workflow_ref": (
                            "glob:octo-org/octo-automation/.github/workflows/*.yml@refs/heads/main"
                        ),
                    },
                },
                "routes": {"audiences": [DEPLOY]},
            },
        ],
    }
