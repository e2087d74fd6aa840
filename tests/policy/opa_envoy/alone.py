"""Rego deciding alone, as an unchanged opa-envoy-plugin deployment runs: `KEYMINT_REGO_ALONE=true`
and no `POLICY_FILE` at all, for the gateway and the signers alike. policy/README.md ("The grant",
"Alone") says where the token's audience, scopes and lifetime then come from; the cases below hold
each answer to it:

- a policy that names none of them (boolean.rego, object.rego): the route's `context_extensions`
  (its `audience` and `scopes`), for TOKEN_DEFAULT_TTL_SECONDS, or until the caller's own
  credential expires if that is sooner. A route that names no audience grants
  nothing;
- a policy that names them (grant.rego): what it names, and never an audience other than the one
  the route pins.

None of them reads `input.identity`: every caller keymint verifies is granted, whoever it is.

This stack also keeps the default for credentials: policy cannot read `authorization`. So
jwt.rego, which lets octocat's CI token through beside the JSON policy (where the header is
readable), finds no token here and denies.
"""

from __future__ import annotations

from typing import Any

import yaml

from extauthz.dev.settings import DEPLOY, ORDERS
from tests.policy.opa_envoy import Case, Minted

SETTINGS = {
    "KEYMINT_REGO_ALONE": "true",
    "KEYMINT_REGO_QUERY": "envoy/authz/allow",
    # Not the built-in 900, so that a lifetime of 600 can only have come from this setting.
    "TOKEN_DEFAULT_TTL_SECONDS": "600",
}
UNSET = ("POLICY_FILE",)  # the stack's JSON policy: an opa-envoy-plugin deployment has none

# Envoy's routes, by route key: what each adds to its `context_extensions` beyond the key. The
# deploy route names neither audience nor scopes, so only a policy that names them grants there.
ROUTES: dict[str, dict[str, str]] = {
    "orders": {"audience": ORDERS, "scopes": "orders:read"},
}

ORDERS_READ = Minted(ORDERS, "orders:read", 600)

FEATURES: dict[str, tuple[Case, ...]] = {
    "boolean.rego": (
        Case(
            "a read: the route's audience and scopes, the default lifetime",
            "GET",
            "/orders/v1/orders/1",
            200,
            minted=ORDERS_READ,
        ),
        Case(
            "a caller the policy never looks at: another namespace",
            "GET",
            "/orders/v1/orders/2",
            200,
            svid="/ns/elsewhere/sa/batch",
            minted=ORDERS_READ,
        ),
        Case(
            "a caller the policy never looks at: a CI job, whose token expires first",
            "GET",
            "/orders/v1/orders/3",
            200,
            caller="ci",
            minted=Minted(ORDERS, "orders:read", None),
        ),
        Case("a delete is denied", "DELETE", "/orders/v1/orders/1", 403, error="rego_denied"),
        Case(
            "no credential: no identity, so no decision",
            "GET",
            "/orders/v1/orders/1",
            401,
            caller="none",
            error="missing_credential",
        ),
    ),
    "object.rego": (
        Case("allowed: true", "GET", "/orders/v1/orders/1", 200, minted=ORDERS_READ),
        Case("allowed: false", "PUT", "/orders/v1/orders/1", 403, error="rego_denied"),
        Case(
            "allowed on a route that names no audience: nothing to grant",
            "GET",
            "/deploy/v1/releases",
            403,
            error="no_audience",
        ),
    ),
    "grant.rego": (
        Case(
            "the audience, scopes and lifetime the policy names",
            "GET",
            "/deploy/v1/releases",
            200,
            minted=Minted(DEPLOY, "deploy:read", 120),
        ),
        Case(
            "an audience other than the one the route pins",
            "GET",
            "/orders/v1/orders/1",
            403,
            error="audience_not_allowed",
        ),
    ),
    "jwt.rego": (
        Case(
            "octocat's token, which policy may not read: no claims, no allow",
            "POST",
            "/orders/v1/orders",
            403,
            caller="ci",
            error="rego_denied",
        ),
    ),
}


def cases() -> list[tuple[str, Case]]:
    """(policy, case) pairs, each policy's cases together, for parametrize."""
    return [(name, case) for name, feature in FEATURES.items() for case in feature]


def with_routes(rendered: str) -> str:
    """A rendered envoy.yaml whose API routes send ROUTES' `context_extensions` (an operator
    configuring audience and scopes per route, as policy/README.md's migration step 3 says)."""
    config = yaml.safe_load(rendered)
    changed = set()
    for route in _routes(config):
        per_filter = route.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_authz")
        extensions = (per_filter or {}).get("check_settings", {}).get("context_extensions")
        if extensions is not None and extensions.get("route") in ROUTES:
            extensions.update(ROUTES[extensions["route"]])
            changed.add(extensions["route"])
    assert changed == set(ROUTES), f"envoy.yaml has no route for {set(ROUTES) - changed}"
    text: str = yaml.safe_dump(config, sort_keys=False)
    return text


def _routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    (manager,) = [
        f
        for f in config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
        if f["name"] == "envoy.filters.network.http_connection_manager"
    ]
    routes: list[dict[str, Any]] = []
    for host in manager["typed_config"]["route_config"]["virtual_hosts"]:
        routes.extend(host["routes"])
    return routes
