"""Each opa-envoy-plugin-style policy through the gateway's Check: the gateway in this process,
three signer processes running the same policy on the same input, a real OIDC issuer. Each
policy is put in force by a reload of the Rego file, as an operator would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from extauthz.config import GatewaySettings
from extauthz.model import Route
from extauthz.policy import (
    AuthzRequest,
    Denial,
    DenyReason,
    Limits,
    PolicyEngine,
    PolicyError,
    PolicyHeaders,
    RegoPolicy,
    ReloadOutcome,
)
from extauthz.server.app import build_policy_engine
from tests.extauthz.policy import spiffe_identity
from tests.policy.opa_envoy import (
    CALLER,
    JSON,
    POLICIES,
    REFUSED,
    SETTINGS,
    Case,
    basic,
    case_id,
    cases,
)
from tests.policy.opa_envoy.harness import Arena, asked_to_sign, check_arena, outcome


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    with check_arena(tmp_path_factory.mktemp("opa-envoy-check"), SETTINGS) as running:
        yield running


@pytest.mark.parametrize(("policy", "case"), cases(), ids=list(map(case_id, cases())))
def test_through_check(arena: Arena, policy: str, case: Case) -> None:
    arena.use(policy)
    got = outcome(arena.check(case))
    assert got["status"] == case.status, got
    if case.status == 200:
        assert got["upstream"]["authorization"].startswith("Bearer ")  # keymint's token
        for name, value in case.upstream_has.items():
            assert got["upstream"][name] == value
        for name in case.upstream_lacks:
            assert name in got["removed"]
    for name, value in case.reply_has.items():
        assert got["reply"][name] == value
    if case.body_is is not None:
        assert got["body"] == case.body_is
    if case.error is not None:
        assert json.loads(got["body"])["error"] == case.error


def test_an_object_decisions_metadata_reaches_envoys_access_log(arena: Arena) -> None:
    arena.use("object.rego")
    response = arena.check(Case("a read", "GET", "/orders/v1/orders/1", 200))
    metadata = response.dynamic_metadata
    assert metadata.fields["policy"].string_value == "object.rego"
    assert metadata.fields["method"].string_value == "GET"
    assert metadata.fields["keymint"].struct_value.fields["decision"].string_value == "allow"


def test_a_policy_with_http_send_is_refused_at_load_and_the_one_in_force_stays(
    arena: Arena,
) -> None:
    arena.use("boolean.rego")
    assert arena.stack.gateway.rego is not None
    with open(arena.stack.env["REGO_FILE"], "w", encoding="utf-8") as handle:
        handle.write((POLICIES / REFUSED).read_text())
    result = arena.stack.gateway.rego.reload()
    assert result.outcome is ReloadOutcome.REJECTED
    assert result.error is not None
    assert (
        "calls http.send, which keymint's Rego engine (rego-cpp) does not provide" in result.error
    )
    read = Case("a read", "GET", "/orders/v1/orders/1", 200)
    assert outcome(arena.check(read))["status"] == 200  # boolean.rego still decides
    # Nor does a gateway or a signer start with it: both build their policy engine this way.
    with pytest.raises(PolicyError, match=r"calls http\.send"):
        build_policy_engine(GatewaySettings.from_env(arena.stack.env))
    arena.use("boolean.rego")


def test_credentials_stay_out_of_the_input_unless_the_operator_lets_policy_read_them() -> None:
    """basic_auth.rego under the default settings sees no authorization header: its rules
    cannot match, and the guest is denied. The operator's setting lets it read the header."""
    rego = RegoPolicy.compile(
        (POLICIES / "basic_auth.rego").read_text(), "basic_auth.rego", query="envoy/authz/allow"
    )
    route = Route("api.internal", "/orders/v1/orders", "GET", {"audience": "a", "scopes": "r"})
    request = AuthzRequest(
        spiffe_identity(CALLER), route, headers={"authorization": basic("alice", "password")}
    )
    decisions = [
        PolicyEngine(
            limits=Limits(frozenset({"r"})), rego=rego, headers=PolicyHeaders.default(readable)
        ).evaluate(request)
        for readable in ((), ("authorization",))
    ]
    assert [type(d).__name__ for d in decisions] == ["Denial", "Grant"]
    assert isinstance(decisions[0], Denial)
    assert decisions[0].reason is DenyReason.REGO_DENIED


def test_after_a_mint_the_gateway_alone_decides_a_new_body_that_grants_the_same(
    arena: Arena,
) -> None:
    """The hot cache keys on what policy reads, so a new body is a miss and the gateway's policy
    decides it; the token cache keys on (credential, audience, scopes), so when that decision
    grants what the token minted before carries, the token is served again and no signer is
    asked, so no signer's policy sees the new body. A body the gateway denies is denied there,
    and no signer hears of it either."""
    arena.use("parsed_body.rego")
    svid = arena.stack.svid("/ns/shop/sa/web")  # one caller, one credential throughout

    def refund(amount: int) -> dict[str, Any]:
        body = json.dumps({"kind": "refund", "amount": amount})
        case = Case("a refund", "POST", "/orders/v1/refunds", 200, headers=JSON, body=body)
        response, _ = arena.called(case, svid)
        got = outcome(response)
        if got["status"] == 200:
            fields = response.dynamic_metadata.fields["keymint"].struct_value.fields
            got["jti"] = fields["jti"].string_value
            got["cache"] = fields["cache"].string_value
        return got

    first = refund(40)
    asked = asked_to_sign(arena.stack.cluster)
    assert (first["status"], first["cache"]) == (200, "miss")
    assert asked.count(first["jti"]) >= 2  # minted: a quorum decided this body too
    again = refund(60)
    assert (again["status"], again["cache"], again["jti"]) == (200, "hit", first["jti"])
    assert again["upstream"]["authorization"] == first["upstream"]["authorization"]
    assert asked_to_sign(arena.stack.cluster) == asked  # no signer saw the second body
    assert refund(4000)["status"] == 403
    assert asked_to_sign(arena.stack.cluster) == asked  # a denial is the gateway's alone
