"""The composition root's wiring of policy: any reload, JSON or Rego, flushes the hot cache."""

from __future__ import annotations

import json
from pathlib import Path

from extauthz.config import GatewaySettings
from extauthz.policy import ReloadOutcome
from extauthz.server.app import build_policy_engine
from tests.extauthz.policy import policy_document

ALLOW = "package keymint.authz\n\nallow := true\n"
DENY = "package keymint.authz\n\nallow := false\n"


def settings(tmp_path: Path) -> GatewaySettings:
    (tmp_path / "policy.json").write_text(json.dumps(policy_document()))
    (tmp_path / "policy.rego").write_text(ALLOW)
    return GatewaySettings.from_env(
        {
            "KEYMINT_ISSUER": "https://keymint.test",
            "POLICY_FILE": str(tmp_path / "policy.json"),
            "REGO_FILE": str(tmp_path / "policy.rego"),
            "KEYMINT_OIDC_AUDIENCES": "https://keymint.test/ci",
        }
    )


def test_any_policy_reload_json_or_rego_flushes_the_hot_cache(tmp_path: Path) -> None:
    flushes: list[str] = []
    _engine, policy, rego = build_policy_engine(settings(tmp_path), lambda: flushes.append("x"))
    assert rego is not None

    (tmp_path / "policy.rego").write_text(DENY)
    assert rego.reload().outcome is ReloadOutcome.SWAPPED
    assert len(flushes) == 1  # a Rego reload used to leave cached allows in place

    document = policy_document()
    document["bindings"] = document["bindings"][:1]
    (tmp_path / "policy.json").write_text(json.dumps(document))
    assert policy.reload().outcome is ReloadOutcome.SWAPPED
    assert len(flushes) == 2

    # Nothing changed, or nothing that compiles: the policy in force stays, so does the cache.
    assert rego.reload().outcome is ReloadOutcome.UNCHANGED
    (tmp_path / "policy.rego").write_text("package keymint.authz\n\nallow := \n")
    assert rego.reload().outcome is ReloadOutcome.REJECTED
    assert len(flushes) == 2


def test_the_engine_reads_the_configured_policy_headers(tmp_path: Path) -> None:
    engine, _policy, _rego = build_policy_engine(settings(tmp_path))
    headers = {"x-tenant": "shop", "x-request-id": "r-1", "authorization": "Bearer x"}
    assert engine.readable_headers(headers) == (("x-tenant", "shop"),)
