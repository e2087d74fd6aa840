"""Rego alone through the gateway's Check: no JSON policy anywhere, the gateway in this process
and three signer processes running the same Rego alone (tests/policy/opa_envoy/alone.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.policy.opa_envoy import Case, case_id
from tests.policy.opa_envoy.alone import ROUTES, SETTINGS, UNSET, cases
from tests.policy.opa_envoy.harness import Arena, assert_minted, check_arena, outcome, signed_by


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    directory = tmp_path_factory.mktemp("opa-envoy-alone-check")
    with check_arena(directory, SETTINGS, unset=UNSET, routes=ROUTES) as running:
        yield running


def test_neither_the_gateway_nor_a_signer_has_a_json_policy(arena: Arena) -> None:
    assert arena.stack.gateway.policy is None
    assert arena.stack.gateway.settings.rego_alone
    for signer in arena.stack.cluster.signers.values():
        assert "POLICY_FILE" not in signer.env
        assert signer.env["KEYMINT_REGO_ALONE"] == "true"
    assert "KEYMINT_POLICY_CREDENTIAL_HEADERS" not in arena.stack.env  # the default: none readable


@pytest.mark.parametrize(("policy", "case"), cases(), ids=list(map(case_id, cases())))
def test_rego_alone_through_check(arena: Arena, policy: str, case: Case) -> None:
    arena.use(policy)
    response, bearer = arena.called(case)
    got = outcome(response)
    assert got["status"] == case.status, got
    if case.error is not None:
        assert json.loads(got["body"])["error"] == case.error
    if case.status != 200:
        return
    assert case.minted is not None  # every allow here says what its token must be
    token = got["upstream"]["authorization"].removeprefix("Bearer ")
    claims = arena.claims(token, case.minted.audience)  # signed by the group's key
    assert_minted(claims, case.minted, bearer)
    keymint = response.dynamic_metadata.fields["keymint"].struct_value.fields
    assert keymint["rule"].string_value == "rego:data.envoy.authz.allow"
    assert keymint["cache"].string_value == "miss"  # minted for this request, not served again
    # The signers' guards, deciding with the same Rego alone, agreed: a quorum signed.
    assert len(signed_by(arena.stack.cluster, claims["jti"])) >= 2
