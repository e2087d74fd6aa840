"""The ceremony commands: arguments, a run against real signers, output, and errors at the edge."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from signer.ceremony.cli import add_commands, render, run_ceremony
from signer.endorsement import TrustRoot
from tests.signer.ceremony.support import dev_pki, every_quorum_signs, running_signers


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signer")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def _signer_args(addresses: dict[int, str]) -> list[str]:
    return [arg for i, address in addresses.items() for arg in ("--signer", f"{i}={address}")]


def test_commands_are_registered_with_their_options() -> None:
    parser = _parser()
    args = parser.parse_args(
        ["reshare", "--signer", "1=a:1", "--signer", "4=b:2", "-t", "3", "--recipients", "1,2,4"]
    )
    assert args.signers == [(1, "a:1"), (4, "b:2")]
    assert (args.threshold, args.recipients, args.dealers) == (3, [1, 2, 4], None)
    assert args.identity == "operator"  # never the coordinator, which the gateway holds
    for command in ("dkg", "refresh", "deal"):
        assert callable(parser.parse_args([command, "--signer", "1=a:1"]).handler)
    with pytest.raises(SystemExit):
        parser.parse_args(["dkg", "--signer", "one=a:1"])


def test_dkg_then_reshare_from_the_command_line(tmp_path: Path) -> None:
    pki = dev_pki(tmp_path / "pki")
    parser = _parser()

    async def scenario() -> None:
        async with running_signers(pki, [1, 2, 3]) as cluster:
            common = [*_signer_args(cluster.addresses()), "--tls-dir", str(tmp_path / "pki")]
            made = await run_ceremony(parser.parse_args(["dkg", *common, "-t", "2"]))
            await cluster.start(4)
            common = [*_signer_args(cluster.addresses()), "--tls-dir", str(tmp_path / "pki")]
            args = parser.parse_args(["reshare", *common, "-t", "3", "--recipients", "1,2,3,4"])
            reshared = await run_ceremony(args)
            assert reshared.group_public_key == made.group_public_key
            every_quorum_signs(cluster, [1, 2, 3, 4], threshold=3)
            text = render(reshared, as_json=False)
            assert f"kid: {made.kid}" in text
            assert made.group_public_key.hex() in text
            as_json = json.loads(render(reshared, as_json=True))
            assert (as_json["kid"], as_json["threshold"], as_json["signers"]) == (
                made.kid,
                3,
                [1, 2, 3, 4],
            )

    asyncio.run(scenario())


def test_a_failed_ceremony_is_a_message_and_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev_pki(tmp_path / "pki")
    parser = _parser()
    # Nothing listens on port 1 of loopback: every signer is unreachable.
    args = parser.parse_args(
        [
            "dkg",
            "--signer",
            "1=127.0.0.1:1",
            "--signer",
            "2=127.0.0.1:1",
            "--signer",
            "3=127.0.0.1:1",
            "--tls-dir",
            str(tmp_path / "pki"),
            "--timeout",
            "5",
        ]
    )
    assert args.handler(args) == 1
    assert "signer dkg: ceremony" in capsys.readouterr().err
    missing = parser.parse_args(["refresh", "--signer", "1=127.0.0.1:1"])
    missing.tls_dir = None
    assert missing.handler(missing) == 1
    assert "--tls-dir" in capsys.readouterr().err


def test_the_first_dkg_writes_the_trust_root_operators_pin(tmp_path: Path) -> None:
    pki = dev_pki(tmp_path / "pki")
    parser = _parser()
    out = tmp_path / "trust-root.json"

    async def scenario() -> bytes:
        async with running_signers(pki, [1, 2, 3]) as cluster:
            args = parser.parse_args(
                [
                    "dkg",
                    *_signer_args(cluster.addresses()),
                    "--tls-dir",
                    str(tmp_path / "pki"),
                    "--trust-root-out",
                    str(out),
                    "--issuer",
                    "https://keymint.test",
                ]
            )
            assert await asyncio.to_thread(args.handler, args) == 0
            (key,) = {cluster.key(i)[1].group_public_key for i in (1, 2, 3)}
            return key

    group_key = asyncio.run(scenario())

    root = TrustRoot.from_document(json.loads(out.read_text()))
    assert root == TrustRoot("https://keymint.test", (group_key,))


def test_a_trust_root_without_an_issuer_is_refused_before_any_ceremony(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parser().parse_args(
        ["dkg", "--signer", "1=127.0.0.1:1", "--trust-root-out", str(tmp_path / "root.json")]
    )
    args.issuer = None

    assert args.handler(args) == 2
    assert "--trust-root-out needs --issuer" in capsys.readouterr().err
    assert not (tmp_path / "root.json").exists()
