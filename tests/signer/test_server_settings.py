"""Signer settings for ceremonies: operator identities, the dev dealer switch, the state dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from signer.devca import spiffe_id
from signer.server import SignerSettings, SignerSettingsError

REPO = Path(__file__).resolve().parents[2]
OPERATOR = spiffe_id("operator")
COORDINATOR = spiffe_id("coordinator")


def _env(**extra: str) -> dict[str, str]:
    return {
        "KEYMINT_SIGNER_ID": "2",
        "KEYMINT_TLS_DIR": "/etc/keymint/tls",
        "KEYMINT_ISSUER": "https://keymint.test",
        "KEYMINT_EVIDENCE_CHECKER": "benchmarks.standin_signing:factory",
        **extra,
    }


def _refusal(env: dict[str, str]) -> SignerSettingsError:
    with pytest.raises(SignerSettingsError) as refused:
        SignerSettings.from_env(env)
    return refused.value


def test_operator_ids_are_a_comma_or_space_separated_list() -> None:
    second = "spiffe://ops.example/alice"
    settings = SignerSettings.from_env(_env(KEYMINT_OPERATOR_IDS=f" {OPERATOR},{second} "))
    assert settings.operator_ids == {OPERATOR, second}
    spaced = SignerSettings.from_env(_env(KEYMINT_OPERATOR_IDS=f"{OPERATOR} {second}"))
    assert spaced.operator_ids == {OPERATOR, second}


def test_without_operator_ids_no_one_may_drive_a_ceremony() -> None:
    assert SignerSettings.from_env(_env()).operator_ids == frozenset()


@pytest.mark.parametrize(
    ("coordinator", "operators"),
    [
        ({}, f"{OPERATOR},{COORDINATOR}"),
        ({}, COORDINATOR.upper().replace("SPIFFE://", "spiffe://")),
        (
            {"KEYMINT_COORDINATOR_ID": "spiffe://prod.example/gateway"},
            "spiffe://prod.example/gateway",
        ),
    ],
)
def test_the_coordinator_is_never_an_operator(coordinator: dict[str, str], operators: str) -> None:
    refused = _refusal(_env(KEYMINT_OPERATOR_IDS=operators, **coordinator))
    assert refused.setting == "KEYMINT_OPERATOR_IDS"
    assert "is the coordinator's identity (KEYMINT_COORDINATOR_ID)" in str(refused)
    assert "must never drive key ceremonies" in str(refused)


@pytest.mark.parametrize("operator", ["operator", "https://ops.example/alice", "spiffe://"])
def test_an_operator_id_that_is_not_a_spiffe_id_is_refused(operator: str) -> None:
    refused = _refusal(_env(KEYMINT_OPERATOR_IDS=operator))
    assert str(refused) == (
        f"KEYMINT_OPERATOR_IDS: {operator!r} is not a SPIFFE ID "
        "(for example KEYMINT_OPERATOR_IDS=spiffe://keymint.internal/keymint/operator)"
    )


@pytest.mark.parametrize(
    ("raw", "allowed"), [("", False), ("false", False), ("0", False), ("true", True), ("YES", True)]
)
def test_the_trusted_dealer_is_off_unless_switched_on(raw: str, allowed: bool) -> None:
    env = _env(KEYMINT_DEV_ALLOW_TRUSTED_DEALER=raw) if raw else _env()
    assert SignerSettings.from_env(env).allow_trusted_dealer is allowed


def test_a_dealer_switch_that_is_not_a_boolean_is_refused() -> None:
    refused = _refusal(_env(KEYMINT_DEV_ALLOW_TRUSTED_DEALER="sometimes"))
    assert str(refused) == (
        "KEYMINT_DEV_ALLOW_TRUSTED_DEALER: 'sometimes' is not a boolean (true/false) "
        "(for example KEYMINT_DEV_ALLOW_TRUSTED_DEALER=false)"
    )


def test_the_state_directory_holds_the_approvals() -> None:
    assert SignerSettings.from_env(_env()).state_dir == Path("state/signer-2")
    settings = SignerSettings.from_env(_env(KEYMINT_SIGNER_STATE_DIR="/var/lib/keymint"))
    assert settings.state_dir == Path("/var/lib/keymint")


def test_a_signer_whose_operator_is_the_coordinator_refuses_to_start() -> None:
    env = {**os.environ, **_env(KEYMINT_OPERATOR_IDS=COORDINATOR), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "signer.cli", "serve"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"  KEYMINT_OPERATOR_IDS: {COORDINATOR} is the coordinator's identity" in done.stderr
    assert "Traceback" not in done.stderr
    assert "ready" not in done.stdout


def test_the_minimum_threshold_is_the_deployments_frost_t_and_two_without_it() -> None:
    assert SignerSettings.from_env(_env()).min_threshold == 2
    assert SignerSettings.from_env(_env(FROST_T="3")).min_threshold == 3


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("1", "FROST_T: 1 is below 2, FROST's minimum threshold (for example FROST_T=2)"),
        ("two", "FROST_T: 'two' is not an integer (for example FROST_T=2)"),
    ],
)
def test_a_frost_t_that_is_no_threshold_is_refused(raw: str, problem: str) -> None:
    assert str(_refusal(_env(FROST_T=raw))) == problem
