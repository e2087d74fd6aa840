"""A JSON policy's `examples`: requests and the decisions they must get, run like tests.

    "examples": [
      {"name": "checkout reads orders",
       "identity": {"spiffe_id": "spiffe://prod.example.com/ns/checkout/sa/cart"},
       "request": {"host": "orders.internal.example.com", "path": "/v1/orders/1"},
       "expect": {"allow": true, "audience": "https://orders...", "scopes": ["orders:read"]}},
      {"name": "...", "identity": {"github_actions": {"issuer": "...", "claims": {...}}},
       "request": {...}, "expect": {"deny": "route_not_allowed"}}
    ]

`identity` is one of `spiffe_id` (an X.509-SVID's ID) or `github_actions` (an issuer and the
token's string claims; `repository_id` and `repository_owner_id` name the subject). `request` may
give `host`, `path`, `method` (GET), `context_extensions`, `headers`, `body`, `audience`, `scopes`
and `ttl_seconds`. `expect` is `{"allow": true}` with any of `audience`, `scopes`, `ttl_seconds`
and `rule` to compare, or `{"deny": "<reason>"}`. The gateway ignores examples; `extauthz policy
test` runs them through the same engine, with the Rego policy too when one is given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from extauthz.identity import github_subject
from extauthz.model import Evidence, Grant, Identity, IdentityKind, Route, SpiffeId
from extauthz.policy.attributes import RequestAttributes
from extauthz.policy.engine import PolicyEngine
from extauthz.policy.model import AuthzRequest, Denial, PolicyError

FAR_FUTURE = 4_102_444_800  # 2100-01-01: an example's credential never expires under it


@dataclass(frozen=True, slots=True)
class Example:
    name: str
    request: AuthzRequest
    expect: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class ExampleResult:
    name: str
    passed: bool
    detail: str  # what was decided, and what was expected when it differs


def parse_examples(document: object, source: str) -> list[Example]:
    """The `examples` of a parsed JSON policy document; PolicyError names the bad one."""
    if not isinstance(document, dict):
        return []
    raw = document.get("examples", [])
    if not isinstance(raw, list):
        raise PolicyError("must be an array", source=source, location="examples")
    examples = []
    for index, item in enumerate(raw):
        where = f"examples[{index}]"
        if not isinstance(item, dict):
            raise PolicyError("must be an object", source=source, location=where)
        unknown = set(item) - {"name", "description", "identity", "request", "expect"}
        if unknown:
            raise PolicyError(f"unknown keys {sorted(unknown)}", source=source, location=where)
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise PolicyError("`name` must be a non-empty string", source=source, location=where)
        try:
            identity = _identity(item.get("identity"))
            request = _request(identity, item.get("request", {}))
            expect = _expect(item.get("expect"))
        except ValueError as exc:
            raise PolicyError(str(exc), source=source, location=where) from None
        examples.append(Example(name, request, expect))
    return examples


def run_examples(engine: PolicyEngine, examples: Sequence[Example]) -> list[ExampleResult]:
    results = []
    for example in examples:
        decision = engine.evaluate(example.request)
        got = _describe(decision)
        wrong = _mismatch(decision, example.expect)
        detail = got if wrong is None else f"{got}; expected {wrong}"
        results.append(ExampleResult(example.name, wrong is None, detail))
    return results


def _identity(value: object) -> Identity:
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError('`identity` must be {"spiffe_id": ...} or {"github_actions": {...}}')
    ((kind, given),) = value.items()
    digest = hashlib.sha256(repr(value).encode()).hexdigest()
    if kind == "spiffe_id" and isinstance(given, str) and given.startswith("spiffe://"):
        trust_domain, _, path = given.removeprefix("spiffe://").partition("/")
        return Identity(
            kind=IdentityKind.SPIFFE,
            subject=given,
            issuer=trust_domain,
            credential_hash=digest,
            expires_at=FAR_FUTURE,
            evidence=Evidence("certificate", b""),
            spiffe_id=SpiffeId(trust_domain, f"/{path}" if path else ""),
            certificate_sha256=bytes.fromhex(digest),
        )
    if kind == "github_actions" and isinstance(given, dict):
        issuer, claims = given.get("issuer"), given.get("claims", {})
        if not isinstance(issuer, str) or not isinstance(claims, dict):
            raise ValueError("`github_actions` needs an `issuer` and `claims` (an object)")
        if not all(isinstance(v, str) for v in claims.values()):
            raise ValueError("`github_actions.claims` values must be strings, as GitHub's ids are")
        owner, repository = claims.get("repository_owner_id"), claims.get("repository_id")
        if not owner or not repository:
            raise ValueError("`github_actions.claims` needs repository_owner_id and repository_id")
        return Identity(
            kind=IdentityKind.GITHUB_ACTIONS,
            subject=github_subject(issuer, owner, repository),
            issuer=issuer,
            credential_hash=digest,
            expires_at=FAR_FUTURE,
            evidence=Evidence("oidc_token", b""),
            claims=dict(claims),
        )
    raise ValueError(f"`identity.{kind}` is not an identity this gateway knows")


def _request(identity: Identity, value: object) -> AuthzRequest:
    if not isinstance(value, dict):
        raise ValueError("`request` must be an object")
    known = {
        "host",
        "path",
        "method",
        "context_extensions",
        "headers",
        "body",
        "audience",
        "scopes",
        "ttl_seconds",
    }
    unknown = set(value) - known
    if unknown:
        raise ValueError(f"`request` has unknown keys {sorted(unknown)}")
    strings = {k: value.get(k, d) for k, d in (("host", ""), ("path", "/"), ("method", "GET"))}
    extensions = value.get("context_extensions", {})
    headers = value.get("headers", {})
    for name, mapping in (("context_extensions", extensions), ("headers", headers)):
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise ValueError(f"`request.{name}` must be an object of strings")
    scopes = value.get("scopes", [])
    ttl = value.get("ttl_seconds")
    audience, body = value.get("audience"), value.get("body", "")
    if not all(isinstance(v, str) for v in (*strings.values(), body)):
        raise ValueError("`request` host, path, method and body must be strings")
    if audience is not None and not isinstance(audience, str):
        raise ValueError("`request.audience` must be a string")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ValueError("`request.scopes` must be an array of strings")
    if ttl is not None and (type(ttl) is not int or ttl <= 0):
        raise ValueError("`request.ttl_seconds` must be a positive integer")
    route = Route(strings["host"], strings["path"], strings["method"], dict(extensions))
    return AuthzRequest(
        identity,
        route,
        audience=audience,
        scopes=tuple(scopes),
        ttl_seconds=ttl,
        headers={name.lower(): v for name, v in headers.items()},
        attributes=RequestAttributes(body=body),
    )


def _expect(value: object) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ValueError('`expect` must be {"allow": true, ...} or {"deny": "<reason>"}')
    if "deny" in value:
        if set(value) != {"deny"} or not isinstance(value["deny"], str):
            raise ValueError('`expect.deny` is a reason code, alone: {"deny": "rego_denied"}')
        return value
    if value.get("allow") is not True:
        raise ValueError('`expect` must be {"allow": true, ...} or {"deny": "<reason>"}')
    unknown = set(value) - {"allow", "audience", "scopes", "ttl_seconds", "rule"}
    if unknown:
        raise ValueError(f"`expect` has unknown keys {sorted(unknown)}")
    return value


def _describe(decision: Grant | Denial) -> str:
    if isinstance(decision, Denial):
        return f"deny {decision.reason}: {decision.detail}"
    return (
        f"allow {decision.audience} [{' '.join(decision.scopes)}] "
        f"{decision.ttl_seconds}s by {decision.rule}"
    )


def _mismatch(decision: Grant | Denial, expect: Mapping[str, object]) -> str | None:
    """What was expected, if the decision differs from it; None when it matches."""
    if "deny" in expect:
        reason = expect["deny"]
        if isinstance(decision, Denial) and decision.reason == reason:
            return None
        return f"deny {reason}"
    if isinstance(decision, Denial):
        return "allow"
    got: dict[str, object] = {
        "audience": decision.audience,
        "scopes": sorted(decision.scopes),
        "ttl_seconds": decision.ttl_seconds,
        "rule": decision.rule,
    }
    for key, wanted in expect.items():
        if key == "allow":
            continue
        value = sorted(wanted) if key == "scopes" and isinstance(wanted, list) else wanted
        if got[key] != value:
            return f"{key} {wanted!r}"
    return None
