"""Rego through regopy: OPA-Envoy input, allow/deny, narrowing only, failures deny."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from extauthz.model import Grant
from extauthz.policy import (
    Decision,
    Denial,
    DenyReason,
    Limits,
    PolicyEngine,
    PolicyError,
    PolicyHeaders,
    RegoPolicy,
    build_input,
)
from extauthz.policy.loader import compile_policy
from tests.extauthz.policy import (
    DEPLOY,
    ORDERS,
    github_identity,
    policy_document,
    request,
    route,
    spiffe_identity,
)

LIMITS = Limits(
    allowed_scopes=frozenset({"orders:read", "orders:write", "deploy:read", "deploy:write"})
)
POLICY = compile_policy(policy_document(), "policy.json")
WEB = spiffe_identity("spiffe://prod.test/ns/web/sa/search")
FRONTEND = spiffe_identity("spiffe://prod.test/ns/web/sa/frontend")

# Written the way OPA-Envoy policies are: parsed_path, parsed_query, source.principal.
OPA_ENVOY_STYLE = """
package envoy.authz

import rego.v1

default allow := false

allow if {
    input.attributes.request.http.method == "GET"
    input.parsed_path[0] == "orders"
    startswith(input.attributes.source.principal, "spiffe://prod.test/ns/web/")
}

allow if {
    input.attributes.request.http.method == "POST"
    input.parsed_path == ["api", "deployments", input.parsed_query.service[0]]
    input.identity.claims.environment == "prod"
}

reason := "not on this path" if not allow
"""

NARROWING = """
package keymint.authz

import rego.v1

allow := true

scopes := ["orders:read", "orders:admin"] if input.parsed_query.mode == ["read"]

ttl_seconds := 60 if input.parsed_query.short == ["1"]

ttl_seconds := 100000 if input.parsed_query.long == ["1"]

audience := input.parsed_query.aud[0] if input.parsed_query.aud
"""

ALONE = """
package keymint.authz

import rego.v1

default allow := false

allow if input.identity.kind == "spiffe"

scopes := ["orders:read", "orders:write", "admin:all"] if allow

ttl_seconds := 120 if input.parsed_query.short == ["1"]

audience := "https://orders.example.com" if input.parsed_query.fixed == ["1"]
"""


def combined(rego_source: str, query: str = "data.keymint.authz") -> PolicyEngine:
    rego = RegoPolicy.compile(rego_source, "test.rego", query=query)
    return PolicyEngine(limits=LIMITS, policy=POLICY, rego=rego)


def rego_alone(rego_source: str) -> PolicyEngine:
    return PolicyEngine(limits=LIMITS, rego=RegoPolicy.compile(rego_source, "alone.rego"))


def denied(decision: Decision, reason: DenyReason) -> Denial:
    assert isinstance(decision, Denial), decision
    assert decision.reason is reason, decision
    return decision


def test_opa_envoy_style_policy_allows_on_parsed_path() -> None:
    engine = combined(OPA_ENVOY_STYLE, query="data.envoy.authz")
    decision = engine.evaluate(request(WEB, route("orders.example.com", "/orders/42")))
    assert decision == Grant(ORDERS, ("orders:read",), 600, "web-reads/reader+rego")
    deploy = route("deploy.example.com", "/api/deployments/shop?service=shop", "POST")
    assert isinstance(engine.evaluate(request(github_identity(), deploy)), Grant)


def test_opa_envoy_style_policy_denies_with_its_reason() -> None:
    engine = combined(OPA_ENVOY_STYLE, query="data.envoy.authz")
    # The JSON policy grants this one; Rego must also allow, and does not.
    elsewhere = request(WEB, route("orders.example.com", "/customers/42"))
    denial = denied(engine.evaluate(elsewhere), DenyReason.REGO_DENIED)
    assert denial.detail == "not on this path"
    assert denial.rule == "web-reads/reader"
    other_service = route("deploy.example.com", "/api/deployments/shop?service=bank", "POST")
    denied(engine.evaluate(request(github_identity(), other_service)), DenyReason.REGO_DENIED)


def test_json_policy_denial_stands_whatever_rego_says() -> None:
    engine = combined('package keymint.authz\nallow := true\nscopes := ["deploy:write"]\n')
    decision = engine.evaluate(request(WEB, route("orders.example.com"), audience=DEPLOY))
    denied(decision, DenyReason.AUDIENCE_NOT_ALLOWED)


def test_rego_narrows_scopes_but_cannot_add_any() -> None:
    engine = combined(NARROWING)
    on = route("orders.example.com", "/orders?mode=read", "POST")
    decision = engine.evaluate(request(FRONTEND, on, scopes=("orders:read",)))
    assert isinstance(decision, Grant)
    assert decision.scopes == ("orders:read",)  # not orders:admin, which Rego named
    refused = engine.evaluate(request(FRONTEND, on, scopes=("orders:write",)))
    assert denied(refused, DenyReason.SCOPE_NOT_ALLOWED).detail.endswith("orders:write")


def test_rego_shortens_ttl_but_cannot_lengthen_it() -> None:
    engine = combined(NARROWING)
    short = engine.evaluate(request(WEB, route("orders.example.com", "/?short=1")))
    long = engine.evaluate(request(WEB, route("orders.example.com", "/?long=1")))
    assert isinstance(short, Grant)
    assert isinstance(long, Grant)
    assert (short.ttl_seconds, long.ttl_seconds) == (60, 600)


def test_rego_cannot_change_the_audience() -> None:
    engine = combined(NARROWING)
    same = engine.evaluate(request(WEB, route("orders.example.com", f"/?aud={ORDERS}")))
    assert isinstance(same, Grant)
    other = engine.evaluate(request(WEB, route("orders.example.com", f"/?aud={DEPLOY}")))
    denied(other, DenyReason.AUDIENCE_NOT_ALLOWED)


def test_rego_alone_grants_what_it_names_within_allowed_scopes() -> None:
    engine = rego_alone(ALONE)
    decision = engine.evaluate(request(WEB, route("x.local", audience=ORDERS)))
    assert decision == Grant(
        ORDERS, ("orders:read", "orders:write"), 900, "rego:data.keymint.authz"
    )  # admin:all dropped: it is not in ALLOWED_SCOPES
    asked = engine.evaluate(request(WEB, route("x.local", audience=ORDERS), scopes=("admin:all",)))
    assert "ALLOWED_SCOPES" in denied(asked, DenyReason.SCOPE_NOT_ALLOWED).detail


def test_rego_alone_ttl_is_capped_by_the_default_and_its_answer() -> None:
    engine = rego_alone(ALONE)
    on = route("x.local", audience=ORDERS)
    long = engine.evaluate(request(WEB, on, ttl_seconds=3600))
    short = engine.evaluate(request(WEB, route("x.local", "/?short=1", audience=ORDERS)))
    assert isinstance(long, Grant)
    assert isinstance(short, Grant)
    assert (long.ttl_seconds, short.ttl_seconds) == (900, 120)
    denied(engine.evaluate(request(WEB, on, ttl_seconds=-1)), DenyReason.INVALID_TTL)


def test_rego_alone_audience_rules() -> None:
    engine = rego_alone(ALONE)
    denied(engine.evaluate(request(WEB, route("x.local"))), DenyReason.NO_AUDIENCE)
    fixed = engine.evaluate(request(WEB, route("x.local", "/?fixed=1")))
    assert isinstance(fixed, Grant)
    assert fixed.audience == ORDERS
    clash = request(WEB, route("x.local", "/?fixed=1"), audience=DEPLOY)
    denied(engine.evaluate(clash), DenyReason.AUDIENCE_NOT_ALLOWED)
    denied(engine.evaluate(request(github_identity(), route("x.local"))), DenyReason.REGO_DENIED)


def test_rego_alone_must_name_scopes() -> None:
    engine = rego_alone("package keymint.authz\nallow := true\n")
    decision = engine.evaluate(request(WEB, route("x.local", audience=ORDERS)))
    denied(decision, DenyReason.NO_SCOPES)


@pytest.mark.parametrize(
    "body",
    [
        'scopes := ["a"] if input.parsed_query.x\nscopes := ["b"] if input.parsed_query.x',
        'allow := "yes" if input.parsed_query.x',
        "ttl_seconds := -5 if input.parsed_query.x",
    ],
)
def test_evaluation_faults_deny(body: str) -> None:
    engine = combined(f"package keymint.authz\nimport rego.v1\n{body}\n")
    decision = engine.evaluate(request(WEB, route("orders.example.com", "/?x=1")))
    denied(decision, DenyReason.REGO_ERROR)


def test_syntax_error_is_a_policy_error_with_its_line() -> None:
    with pytest.raises(PolicyError) as caught:
        RegoPolicy.compile("package keymint.authz\n\nallow if {{{\n", "bad.rego")
    assert str(caught.value).startswith("bad.rego: line 3, column")


def test_query_must_resolve() -> None:
    answers = r"no rule answers data.keymint.authz \(its packages: other\)"
    with pytest.raises(PolicyError, match=answers):
        RegoPolicy.compile("package other\nallow := true\n", "p.rego")
    with pytest.raises(PolicyError, match="neither a path"):
        RegoPolicy.compile("package keymint.authz\n", "p.rego", query="data.keymint[")


def test_input_is_opa_envoy_shaped_and_holds_no_credentials() -> None:
    on = route("orders.example.com", "/a/b%20c/?x=1&x=2&empty=", "POST", route="orders")
    headers = {
        "Authorization": "Bearer secret",
        "x-forwarded-client-cert": "Hash=abc",
        "cookie": "session=1",
        "proxy-authorization": "Basic x",
        "X-Tenant": "t-1",
    }
    document: dict[str, Any] = build_input(request(WEB, on, headers=headers))
    http = document["attributes"]["request"]["http"]
    assert http == {
        "method": "POST",
        "path": "/a/b%20c/?x=1&x=2&empty=",
        "host": "orders.example.com",
        "headers": {"x-tenant": "t-1"},
    }
    assert document["attributes"]["source"]["principal"] == "spiffe://prod.test/ns/web/sa/search"
    assert document["attributes"]["context_extensions"] == {"route": "orders"}
    assert document["parsed_path"] == ["a", "b c", ""]
    assert document["parsed_query"] == {"x": ["1", "2"], "empty": [""]}
    assert document["identity"]["spiffe_id"] == "spiffe://prod.test/ns/web/sa/search"
    assert document["grant"] is None
    assert "secret" not in repr(document)
    assert build_input(request(WEB, route("h", "/")))["parsed_path"] == [""]


PER_REQUEST = {
    "x-request-id": "r-1",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "tracestate": "congo=t61rcWkgMzE",
    "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
    "x-b3-spanid": "e457b5a2e4d86bd1",
    "x-envoy-expected-rq-timeout-ms": "250",
    "x-datadog-trace-id": "1",
}


def test_per_request_headers_are_out_of_the_input_a_policy_reads() -> None:
    """What the hot cache ignores, a policy cannot read: request ids and trace contexts."""
    headers = {**PER_REQUEST, "X-Tenant": "t-1", "x-b3": "not a prefix match"}
    document: dict[str, Any] = build_input(request(WEB, route("h", "/"), headers=headers))
    assert document["attributes"]["request"]["http"]["headers"] == {
        "x-tenant": "t-1",
        "x-b3": "not a prefix match",
    }


def test_policy_headers_select_exactly_what_the_input_holds() -> None:
    selection = PolicyHeaders.ignoring(["X-Tenant", "x-trace-*"])
    headers = {"x-tenant": "a", "x-trace-id": "1", "x-request-id": "r", "cookie": "c", "B": "2"}
    selected = selection.select(headers)
    assert selected == (("b", "2"), ("x-request-id", "r"))
    document: dict[str, Any] = build_input(
        request(WEB, route("h", "/"), headers=headers), headers=selection
    )
    assert document["attributes"]["request"]["http"]["headers"] == dict(selected)
    assert selection.select(dict(selected)) == selected  # selecting twice changes nothing


@pytest.mark.parametrize("entry", ["", "x y", "a*b", "*", "x-\u00e9", "x:y"])
def test_ignored_header_entries_must_be_header_names(entry: str) -> None:
    with pytest.raises(ValueError, match="is not a header name"):
        PolicyHeaders.ignoring([entry])


def test_token_query_parameters_are_removed_from_the_input() -> None:
    on = route("h", "/cb?access_token=sekrit&state=1&id_token=sekrit2#frag")
    document: dict[str, Any] = build_input(request(WEB, on))
    assert document["parsed_query"] == {"state": ["1"]}
    assert document["attributes"]["request"]["http"]["path"] == "/cb?state=1"
    assert "sekrit" not in repr(document)


def test_github_identity_in_input() -> None:
    document: dict[str, Any] = build_input(request(github_identity(), route("h")))
    assert document["identity"]["kind"] == "github_actions"
    assert document["identity"]["claims"]["repository_id"] == "74"
    assert document["attributes"]["source"]["principal"] == ""


def test_strings_compare_to_policy_literals_despite_escaping() -> None:
    # rego-cpp keeps strings in escaped form; quotes, backslashes and non-ASCII must still
    # compare equal to the same literals in a policy.
    source = (
        "package keymint.authz\nimport rego.v1\n"
        'allow if {\n  input.attributes.request.http.headers["x-tag"] == "a\\"b\\\\c"\n'
        '  input.identity.claims.environment == "prüf-😀"\n}\n'
    )
    engine = combined(source)
    identity = github_identity(environment="prod")
    deploy = route("deploy.example.com", "/api/x", "POST")
    tagged = request(identity, deploy, headers={"x-tag": 'a"b\\c'})
    denied(engine.evaluate(tagged), DenyReason.REGO_DENIED)  # environment differs
    rego = RegoPolicy.compile(source, "esc.rego")
    other = dataclasses.replace(identity, claims={**identity.claims, "environment": "prüf-😀"})
    assert rego.decide(build_input(request(other, deploy, headers={"x-tag": 'a"b\\c'}))).allow


# --- opa-envoy-plugin's decisions (issue 13) -----------------------------------------------

BOOLEAN = """
package envoy.authz

import rego.v1

default allow := false

allow if input.attributes.request.http.method == "GET"
"""

NO_DEFAULT = """
package envoy.authz

import rego.v1

allow if input.attributes.request.http.method == "GET"
"""

OBJECT = """
package envoy.authz

import rego.v1

default allow := {
    "allowed": false,
    "http_status": 429,
    "body": "slow down",
    "headers": {"x-why": "busy"},
}

allow := {
    "allowed": true,
    "headers": {"x-validated-by": "opa"},
    "dynamic_metadata": {"tenant": input.parsed_query.tenant[0]},
} if input.attributes.request.http.method == "GET"
"""


def opa_envoy(source: str, **engine: Any) -> PolicyEngine:
    rego = RegoPolicy.compile(source, "envoy.rego", query="envoy/authz/allow")
    return PolicyEngine(limits=LIMITS, rego=rego, **{"policy": POLICY, **engine})


def test_a_default_false_boolean_is_a_denial_not_undefined() -> None:
    """rego-cpp answers a query whose value is false as undefined: read through a binding,
    OPA-Envoy's `default allow := false` is the plain denial it is."""
    engine = opa_envoy(BOOLEAN)
    assert isinstance(engine.evaluate(request(WEB, route("orders.example.com"))), Grant)
    post = engine.evaluate(request(WEB, route("orders.example.com", "/", "POST")))
    assert denied(post, DenyReason.REGO_DENIED).detail == (
        "the Rego policy does not allow this request"
    )


def test_an_undefined_decision_loads_and_denies_with_its_own_reason() -> None:
    engine = opa_envoy(NO_DEFAULT)  # no default: undefined for a POST, and still a policy
    post = engine.evaluate(request(WEB, route("orders.example.com", "/", "POST")))
    assert denied(post, DenyReason.REGO_UNDEFINED).detail == (
        "data.envoy.authz.allow is undefined for this request"
    )


def test_an_object_decision_shapes_the_response_where_it_stands() -> None:
    engine = opa_envoy(OBJECT)
    allowed = engine.judge(request(WEB, route("orders.example.com", "/?tenant=shop")))
    assert isinstance(allowed.decision, Grant)
    assert allowed.response is not None
    assert allowed.response.headers == (("x-validated-by", "opa"),)
    assert allowed.response.dynamic_metadata == {"tenant": "shop"}
    refused = engine.judge(request(WEB, route("orders.example.com", "/", "PUT")))
    denied(refused.decision, DenyReason.REGO_DENIED)
    assert refused.response is not None
    assert (refused.response.http_status, refused.response.body) == (429, "slow down")


def test_decorations_for_an_allow_are_dropped_when_keymint_denies_anyway() -> None:
    """Rego allowed with headers for the upstream, but the JSON grant is narrowed to nothing:
    the caller gets keymint's denial, not the upstream's headers."""
    source = OBJECT.replace(
        '"headers": {"x-validated-by": "opa"},',
        '"headers": {"x-validated-by": "opa"},\n    "scopes": ["orders:admin"],',
    )
    verdict = opa_envoy(source).judge(request(WEB, route("orders.example.com", "/?tenant=t")))
    denied(verdict.decision, DenyReason.NO_SCOPES)
    assert verdict.response is None


def test_a_reason_or_metadata_never_carries_a_readable_credential() -> None:
    source = """
package envoy.authz

import rego.v1

auth := input.attributes.request.http.headers.authorization

allow := {"allowed": false, "dynamic_metadata": {"seen": auth}, "reason": sprintf("bad %s", [auth])}
"""
    readable = PolicyHeaders.default(credentials=["authorization"])
    engine = opa_envoy(source, headers=readable)
    basic = "Basic YWxpY2U6cGFzc3dvcmQ="  # alice:password
    asked = request(WEB, route("orders.example.com"), headers={"authorization": basic})
    verdict = engine.judge(asked)
    assert denied(verdict.decision, DenyReason.REGO_DENIED).detail == "bad [redacted]"
    assert verdict.response is not None
    assert verdict.response.dynamic_metadata == {"seen": "[redacted]"}


def test_rego_alone_with_a_boolean_grants_what_the_route_configures() -> None:
    engine = PolicyEngine(
        limits=LIMITS, rego=RegoPolicy.compile(BOOLEAN, "b.rego", query="envoy/authz/allow")
    )
    on = route("x.local", audience=ORDERS, scopes="orders:read orders:write")
    assert engine.evaluate(request(WEB, on)) == Grant(
        ORDERS, ("orders:read", "orders:write"), 900, "rego:data.envoy.authz.allow"
    )
    narrowed = engine.evaluate(request(WEB, on, scopes=("orders:read",)))
    assert isinstance(narrowed, Grant)
    assert narrowed.scopes == ("orders:read",)
    # The caller can only pick among what the route configures, never add to it.
    wider = engine.evaluate(request(WEB, on, scopes=("deploy:write",)))
    denied(wider, DenyReason.SCOPE_NOT_ALLOWED)
    # At /token there is no route configuration: a yes-or-no policy grants nothing there.
    token = route("", "/token", "GET")
    chosen = engine.evaluate(request(WEB, token, audience=ORDERS, scopes=("orders:read",)))
    denied(chosen, DenyReason.NO_AUDIENCE)
    no_scopes = engine.evaluate(request(WEB, route("x.local", audience=ORDERS)))
    denied(no_scopes, DenyReason.NO_SCOPES)


def test_a_package_without_the_decision_rule_is_refused_naming_its_rules() -> None:
    with pytest.raises(PolicyError) as caught:
        RegoPolicy.compile(
            "package envoy.authz\nallowed := true\nhelper := 1\n",
            "p.rego",
            query="envoy/authz/allow",
        )
    assert str(caught.value) == (
        "p.rego: package envoy.authz has no rule allow to answer data.envoy.authz.allow "
        "(its rules: allowed, helper)"
    )


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (
            'http.send({"method": "GET", "url": "https://opa.example"}).status_code == 200',
            "http.send",
        ),
        ('net.cidr_contains("10.0.0.0/8", "10.1.1.1")', "net.cidr_contains"),
        ('count(net.lookup_ip_addr("example.com")) > 0', "net.lookup_ip_addr"),
        ('trace("here")', "trace"),
        ('graphql.is_valid("{a}", "type Query {a: Int}")', "graphql.is_valid"),
        ("rego.metadata.rule()", "rego.metadata.rule"),
        ("no.such.function(1)", "no.such.function"),
    ],
)
def test_builtins_the_engine_lacks_are_refused_at_load_by_name(call: str, named: str) -> None:
    source = f"package envoy.authz\nimport rego.v1\ndefault allow := false\nallow if {{ {call} }}\n"
    with pytest.raises(PolicyError) as caught:
        RegoPolicy.compile(source, "p.rego", query="envoy/authz/allow")
    assert str(caught.value) == (
        f"p.rego: calls {named}, which keymint's Rego engine (rego-cpp) does not provide: "
        "every call would be undefined, silently, where OPA has an answer"
    )


def test_print_is_refused_at_load_for_the_gateway() -> None:
    source = "package envoy.authz\nimport rego.v1\nallow if { print(input); true }\n"
    with pytest.raises(PolicyError, match="calls print, whose output goes to the gateway"):
        RegoPolicy.compile(source, "p.rego", query="envoy/authz/allow")
    assert RegoPolicy.compile(source, "p.rego", query="envoy/authz/allow", allow_print=True)


def test_a_policy_that_crashes_the_engine_is_refused_and_the_gateway_lives() -> None:
    """rego-cpp aborts its process on this module (std::terminate): compiled in a child first,
    it costs the child, and the policy is refused with the engine's own words."""
    source = (
        "package envoy.authz\nimport rego.v1\ndefault allow := false\n"
        'v := {"a": 1}\ntest_a if { allow with input as v }\n'
    )
    with pytest.raises(PolicyError) as caught:
        RegoPolicy.compile(source, "crash.rego", query="envoy/authz/allow")
    assert "crash.rego: the Rego engine crashed compiling it" in str(caught.value)
    assert "std::runtime_error" in str(caught.value)
