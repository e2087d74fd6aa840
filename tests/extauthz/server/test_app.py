"""The composition root: its wiring of policy (any reload, JSON or Rego, flushes the hot cache)
and the check of the active key's threshold against FROST_T."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from extauthz.config import GatewaySettings
from extauthz.policy import ReloadOutcome
from extauthz.server.app import KeyThresholdError, build_policy_engine, check_threshold
from signer.frost import trusted_dealer_keygen
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


def test_an_active_key_below_frost_t_is_refused() -> None:
    _, package, _ = trusted_dealer_keygen(2, 2)
    with pytest.raises(KeyThresholdError) as caught:
        check_threshold(3, "kid-1", package)
    assert str(caught.value) == (
        "the active key kid-1 needs 2 signer(s) to sign, fewer than FROST_T (3): not minting "
        "with it"
    )


def test_an_active_key_at_or_above_frost_t_is_accepted_and_a_higher_one_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, three, _ = trusted_dealer_keygen(3, 5)
    with caplog.at_level(logging.WARNING, logger="extauthz.server.app"):
        check_threshold(3, "kid-1", three)
        assert caplog.records == []
        check_threshold(2, "kid-1", three)
    assert caplog.messages == [
        "FROST_T is 2 but the active key kid-1 needs 3 signers; every signature takes 3"
    ]
