"""`keymint`: the one command. Each subcommand is the `extauthz` or `signer` command of that
name, run through the installed console script as a user types it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from extauthz.cli import build_parser
from signer.audit import AuditLog
from tests.conftest import REPO

KEYMINT = Path(sys.executable).with_name("keymint")


def keymint(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert KEYMINT.is_file(), "the keymint console script is missing: `make setup` installs it"
    return subprocess.run(
        [str(KEYMINT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env if env is not None else {"PATH": os.environ["PATH"]},
    )


def test_it_is_a_console_script_beside_its_aliases() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["keymint"] == "extauthz.keymint_cli:main"
    assert {"extauthz", "signer"} <= set(scripts)


def test_help_lists_every_extauthz_command_and_signer() -> None:
    result = keymint("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: keymint")
    extauthz_commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command in [*extauthz_commands, "signer"]:
        assert f"\n    {command}" in result.stdout, command


def test_an_audit_log_verifies_as_with_extauthz(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, clock=lambda: 1_700_000_000.0) as log:
        log.append("mint", {"jti": "a", "token_ref": "sha256:0123456789abcdef"})
        log.append("deny", {"reason": "no_matching_binding"})
    assert keymint("audit", "verify", str(path)).stdout.startswith("OK: 2 records")
    path.write_text(path.read_text().replace("no_matching_binding", "allowed"))
    edited = keymint("audit", "verify", str(path))
    assert edited.returncode == 1
    assert edited.stdout.startswith("BROKEN:")


def test_settings_problems_name_the_command_as_typed() -> None:
    result = keymint("check-config")
    assert result.returncode == 2
    assert result.stderr.startswith("keymint check-config: ")
    assert "KEYMINT_ISSUER" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["signer", "--help"], "usage: keymint signer"),
        (["signer", "dkg", "--help"], "usage: keymint signer dkg"),
    ],
)
def test_signer_subcommands_are_the_signer_commands(args: list[str], expected: str) -> None:
    result = keymint(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(expected)


def test_signer_settings_problems_name_the_command_as_typed() -> None:
    result = keymint("signer", "check-config")
    assert result.returncode == 2
    assert result.stderr.startswith("keymint signer check-config: "), result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_command_is_a_usage_error() -> None:
    result = keymint("signer", "nosuch")
    assert result.returncode == 2
    assert "keymint signer: error: argument command: invalid choice: 'nosuch'" in result.stderr
    assert keymint("nosuch").returncode == 2
