"""Rego alone through the real front Envoy: no JSON policy anywhere, the gateway process watching
its Rego file, three signer processes running the same Rego alone, envoy/envoy.yaml with
envoy/README.md's Rego settings and audience and scopes configured on its orders route
(tests/policy/opa_envoy/alone.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from extauthz.dev.stack import LocalStack, local_stack
from tests.envoy.harness import with_rego_settings
from tests.policy.opa_envoy import POLICIES, Case, case_id
from tests.policy.opa_envoy.alone import SETTINGS, UNSET, cases, with_routes
from tests.policy.opa_envoy.harness import assert_minted, called, signed_by, use


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    directory = tmp_path_factory.mktemp("opa-envoy-alone-e2e")
    rego = directory / "policy.rego"
    rego.write_text((POLICIES / "boolean.rego").read_text())
    with local_stack(
        directory,
        extra_env={"REGO_FILE": str(rego), **SETTINGS},
        unset=UNSET,
        front_config=lambda rendered: with_routes(with_rego_settings(rendered)),
    ) as running:
        yield running


def test_neither_the_gateway_nor_a_signer_has_a_json_policy(stack: LocalStack) -> None:
    assert "POLICY_FILE" not in stack.gateway.env
    assert stack.gateway.env["KEYMINT_REGO_ALONE"] == "true"
    for signer in stack.cluster.signers.values():
        assert "POLICY_FILE" not in signer.env
        assert signer.env["KEYMINT_REGO_ALONE"] == "true"
    assert "KEYMINT_POLICY_CREDENTIAL_HEADERS" not in stack.env  # the default: none readable


def minted_record(stack: LocalStack, jti: str) -> dict[str, object]:
    """The gateway's audit record of the mint of `jti`."""
    text = Path(stack.env["KEYMINT_AUDIT_LOG"]).read_text()
    records = [json.loads(line) for line in text.splitlines()]
    (record,) = [r for r in records if r["event"] == "mint" and r["data"]["jti"] == jti]
    data: dict[str, object] = record["data"]
    return data


@pytest.mark.parametrize(("policy", "case"), cases(), ids=list(map(case_id, cases())))
def test_rego_alone_through_envoy(stack: LocalStack, policy: str, case: Case) -> None:
    use(stack, policy)
    reply, bearer = called(stack, case)
    assert reply.status == case.status, reply.body
    if case.error is not None:
        assert reply.json()["error"] == case.error
    if case.status != 200:
        return
    assert case.minted is not None  # every allow here says what its token must be
    (authorization,) = reply.echoed()["authorization"]
    token = authorization.removeprefix("Bearer ")
    claims = stack.decode(token, case.minted.audience)  # verified against the served JWKS
    assert_minted(claims, case.minted, bearer)
    assert minted_record(stack, claims["jti"])["rule"] == "rego:data.envoy.authz.allow"
    # The signers' guards, deciding with the same Rego alone, agreed: a quorum signed.
    assert len(signed_by(stack.cluster, claims["jti"])) >= 2
