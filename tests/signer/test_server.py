"""The signer process's settings: its own revocation list and evidence budget, checked at start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from signer.devca import dns_name, signer_name
from signer.proto import signer_pb2, signer_pb2_grpc
from signer.server import SignerSettings, SignerSettingsError, load_revocations
from signer.tls import CHANNEL_OPTIONS
from tests.signer.harness import REPO, SignerCluster

BASE = {
    "KEYMINT_SIGNER_ID": "1",
    "KEYMINT_TLS_DIR": "/nonexistent/pki",
    "KEYMINT_ISSUER": "https://keymint.test",
    "KEYMINT_EVIDENCE_CHECKER": "benchmarks.standin_signing:factory",
}


def test_the_budget_defaults_to_32_shares_per_credential_per_15_minutes() -> None:
    settings = SignerSettings.from_env(BASE)

    assert (settings.budget.limit, settings.budget.window_seconds) == (32, 900)
    assert settings.revocations_file is None


def test_the_budget_and_revocation_list_come_from_the_environment() -> None:
    settings = SignerSettings.from_env(
        {
            **BASE,
            "KEYMINT_EVIDENCE_BUDGET": "5",
            "KEYMINT_EVIDENCE_BUDGET_WINDOW_SECONDS": "60",
            "KEYMINT_SIGNER_REVOCATIONS_FILE": "/etc/keymint/revocations.json",
        }
    )

    assert (settings.budget.limit, settings.budget.window_seconds) == (5, 60)
    assert settings.revocations_file == Path("/etc/keymint/revocations.json")


@pytest.mark.parametrize("value", ["0", "-3", "lots"])
def test_a_bad_budget_names_its_variable(value: str) -> None:
    with pytest.raises(SignerSettingsError, match="KEYMINT_EVIDENCE_BUDGET"):
        SignerSettings.from_env({**BASE, "KEYMINT_EVIDENCE_BUDGET": value})


def test_a_malformed_revocation_list_names_its_variable(tmp_path: Path) -> None:
    path = tmp_path / "revocations.json"
    path.write_text('{"subjects": {"spiffe://x": "never"}}')

    with pytest.raises(SignerSettingsError, match=r"KEYMINT_SIGNER_REVOCATIONS_FILE: .*unix time"):
        load_revocations(path)


def test_a_signer_with_an_unreadable_revocation_list_does_not_start(tmp_path: Path) -> None:
    cluster = SignerCluster(tmp_path, 2, 3)
    env = {
        **cluster.signers[1].env,
        "KEYMINT_SIGNER_REVOCATIONS_FILE": str(tmp_path / "absent.json"),
        "KEYMINT_SIGNER_LISTEN": "127.0.0.1:0",
    }

    result = subprocess.run(
        [sys.executable, "-m", "signer.cli", "serve"],
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert b"KEYMINT_SIGNER_REVOCATIONS_FILE" in result.stderr
    assert b"Traceback" not in result.stderr


def test_a_signer_whose_gateway_settings_are_wrong_says_which_without_a_traceback(
    tmp_path: Path,
) -> None:
    cluster = SignerCluster(tmp_path, 2, 3)
    env = {
        **cluster.signers[1].env,
        "KEYMINT_EVIDENCE_CHECKER": "extauthz.guard_checker:from_env",
        "POLICY_FILE": str(tmp_path / "policy.json"),
        "KEYMINT_OIDC_AUDIENCES": "https://keymint.test/ci",
        "TOKEN_DEFAULT_TTL_SECONDS": "soon",
        "KEYMINT_SIGNER_LISTEN": "127.0.0.1:0",
    }

    result = subprocess.run(
        [sys.executable, "-m", "signer.cli", "serve"],
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert b"TOKEN_DEFAULT_TTL_SECONDS: 'soon' is not an integer" in result.stderr
    assert b"Traceback" not in result.stderr


def test_a_coordinators_keepalive_pings_do_not_get_it_disconnected(tmp_path: Path) -> None:
    """An idle coordinator pings (`signer.tls.CHANNEL_OPTIONS`); a server that finds the pings too
    frequent sends GOAWAY `too_many_pings` and the next mint waits for a new connection."""
    cluster = SignerCluster(tmp_path, 2, 3)
    signer = cluster.signers[1]
    signer.start()
    try:

        async def idle_state() -> grpc.ChannelConnectivity:
            ca, cert, key = cluster.coordinator_tls.read()
            options = [
                (name, 5_000 if name == "grpc.keepalive_time_ms" else value)
                for name, value in CHANNEL_OPTIONS
            ]
            options.append(("grpc.ssl_target_name_override", dns_name(signer_name(1))))
            credentials = grpc.ssl_channel_credentials(ca, key, cert)
            async with grpc.aio.secure_channel(signer.address, credentials, options) as channel:
                await signer_pb2_grpc.SignerStub(channel).GetInfo(signer_pb2.InfoRequest())
                await asyncio.sleep(17)  # three pings: enough strikes for a default server
                return channel.get_state()

        assert asyncio.run(idle_state()) == grpc.ChannelConnectivity.READY
    finally:
        signer.stop()
