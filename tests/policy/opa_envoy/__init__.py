"""Policies in opa-envoy-plugin's style, one per feature (policies/), and what each must do.

The same cases run through the gateway's Check (test_check.py: the gateway in-process, real
signer processes running the same policy) and through the real front Envoy (test_envoy.py: the
gateway process, envoy/envoy.yaml with envoy/README.md's `with_request_body` and header rules).
Both gateways run `KEYMINT_REGO_QUERY=envoy/authz/allow` and let policy read `authorization`
(`basic_auth.rego` and `jwt.rego` need it), beside the test stack's JSON policy, which grants:
SVIDs of `ns/shop` read orders (`/orders/...`), the CI repository deploys (`/deploy/...`).
alone.py's cases run the same way (test_alone_check.py, test_alone_envoy.py) with Rego deciding
alone. harness.py is how a case reaches either gateway.
"""

from __future__ import annotations

import base64
import hashlib
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

POLICIES = Path(__file__).parent / "policies"
SETTINGS = {
    "KEYMINT_REGO_QUERY": "envoy/authz/allow",
    "KEYMINT_POLICY_CREDENTIAL_HEADERS": "authorization",
}
CALLER = "spiffe://prod.test/ns/shop/sa/web"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass(frozen=True)
class Minted:
    """What the minted token must say. `lifetime` is exp - iat; None when the caller's own
    credential expires first, so the token's exp is the credential's."""

    audience: str
    scope: str
    lifetime: int | None


@dataclass(frozen=True)
class Case:
    """One request and what must come of it. `caller` is "svid" (an X.509-SVID for `svid`, by
    default ns/shop's, over mTLS), "ci" (the CI job's OIDC token as a bearer token, with `claims`
    overriding) or "none" (no credential at all)."""

    name: str
    method: str
    path: str
    status: int  # 200: through to the upstream
    caller: str = "svid"
    svid: str = "/ns/shop/sa/web"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    claims: Mapping[str, str] = field(default_factory=dict)
    upstream_has: Mapping[str, str] = field(default_factory=dict)  # what the API receives
    upstream_lacks: tuple[str, ...] = ()
    reply_has: Mapping[str, str] = field(default_factory=dict)  # what the caller receives
    body_is: str | None = None  # a policy's own denial body
    error: str | None = None  # keymint's JSON denial: its `error`
    minted: Minted | None = None  # the token the upstream receives, when it matters


JSON = {"content-type": "application/json"}

FEATURES: dict[str, tuple[Case, ...]] = {
    "boolean.rego": (
        Case("a read is allowed", "GET", "/orders/v1/orders/1", 200),
        Case("a delete is denied", "DELETE", "/orders/v1/orders/1", 403, error="rego_denied"),
    ),
    "object.rego": (
        Case("allowed: true", "GET", "/orders/v1/orders/1", 200),
        Case("allowed: false", "PUT", "/orders/v1/orders/1", 403, error="rego_denied"),
    ),
    "headers.rego": (
        Case(
            "headers added for the upstream and the caller, one removed",
            "GET",
            "/orders/v1/orders/1",
            200,
            headers={"x-internal-debug": "1", "x-tenant": "shop"},
            upstream_has={"x-ext-auth-allow": "yes", "x-ext-auth-caller": CALLER},
            upstream_lacks=("x-internal-debug",),
            reply_has={"x-ext-auth-policy": "headers.rego"},
        ),
    ),
    "status_body.rego": (
        Case(
            "the key opens",
            "GET",
            "/orders/v1/orders/1",
            200,
            headers={"x-api-key": "open-sesame"},
        ),
        Case(
            "no key: the policy's own 401",
            "GET",
            "/orders/v1/orders/1",
            401,
            reply_has={"www-authenticate": 'ApiKey realm="orders"'},
            body_is="Unauthorized Request",
        ),
    ),
    "parsed_path.rego": (
        Case("a public page", "GET", "/orders/public/menu", 200),
        Case("a private page", "GET", "/orders/private/ledger", 403, error="rego_denied"),
        Case("too deep", "GET", "/orders/public/menu/2", 403, error="rego_denied"),
    ),
    "parsed_query.rego": (
        Case("the summary", "GET", "/orders/v1/orders?view=summary", 200),
        Case("the full view", "GET", "/orders/v1/orders?view=full", 403, error="rego_denied"),
        Case(
            "both views",
            "GET",
            "/orders/v1/orders?view=summary&view=full",
            403,
            error="rego_denied",
        ),
    ),
    "parsed_body.rego": (
        Case(
            "a small refund",
            "POST",
            "/orders/v1/refunds",
            200,
            headers=JSON,
            body='{"kind": "refund", "amount": 40}',
        ),
        Case(
            "a large refund",
            "POST",
            "/orders/v1/refunds",
            403,
            headers=JSON,
            body='{"kind": "refund", "amount": 4000}',
            error="rego_denied",
        ),
        Case(
            "a small refund with a long note, within with_request_body's 8192 bytes",
            "POST",
            "/orders/v1/refunds",
            200,
            headers=JSON,
            body=json.dumps({"kind": "refund", "amount": 40, "note": "n" * 8000}),
        ),
        Case(
            "the same past 8192 bytes: Envoy sends part of it, truncated_body",
            "POST",
            "/orders/v1/refunds",
            403,
            headers=JSON,
            body=json.dumps({"kind": "refund", "amount": 40, "note": "n" * 8200}),
            error="rego_denied",
        ),
    ),
    "basic_auth.rego": (
        Case(
            "a guest reads",
            "GET",
            "/orders/v1/orders",
            200,
            headers={"authorization": basic("alice", "password")},
        ),
        Case(
            "a guest may not write",
            "POST",
            "/orders/v1/orders",
            403,
            headers={"authorization": basic("alice", "password")},
            error="rego_denied",
        ),
        Case(
            "an admin writes",
            "POST",
            "/orders/v1/orders",
            200,
            headers={"authorization": basic("bob", "s3cret")},
        ),
        Case(
            "a wrong password",
            "GET",
            "/orders/v1/orders",
            403,
            headers={"authorization": basic("alice", "guess")},
            error="rego_denied",
        ),
    ),
    "jwt.rego": (
        Case("octocat deploys", "POST", "/deploy/v1/releases", 200, caller="ci"),
        Case(
            "another actor does not",
            "POST",
            "/deploy/v1/releases",
            403,
            caller="ci",
            claims={"actor": "mallory"},
            error="rego_denied",
        ),
        Case(
            "nor does a read", "GET", "/deploy/v1/releases", 403, caller="ci", error="rego_denied"
        ),
    ),
}
REFUSED = "http_send.rego"  # refused at load: calls http.send


def policy_text(name: str, *, jwks: str, audience: str) -> str:
    """A policy's text; jwt.rego gets the CI issuer's keys and keymint's OIDC audience."""
    text = (POLICIES / name).read_text()
    if name == "jwt.rego":
        text = string.Template(text).substitute(ISSUER_JWKS=jwks, AUDIENCE=audience)
    return text


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cases() -> list[tuple[str, Case]]:
    """(policy, case) pairs, each policy's cases together, for parametrize."""
    return [(name, case) for name, feature in FEATURES.items() for case in feature]


def case_id(pair: tuple[str, Case]) -> str:
    return f"{pair[0]}: {pair[1].name}"
