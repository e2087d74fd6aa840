"""`keymint dev`: its arguments and what it prints (tests/test_wheel.py runs it whole)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from extauthz.dev.cli import shell_exports
from extauthz.keymint_cli import main


def test_a_directory_with_something_in_it_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "left-over").write_text("a previous run's key")
    assert main(["dev", "--dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert f"--dir {tmp_path} must be an empty directory or not exist" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["left-over"]


def test_a_file_in_place_of_the_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    assert main(["dev", "--dir", str(tmp_path / "file")]) == 2
    assert "must be an empty directory" in capsys.readouterr().err


@pytest.mark.parametrize(("signers", "threshold"), [(3, 1), (3, 4), (1, 1)])
def test_a_threshold_one_signer_could_meet_or_no_quorum_could_meet_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], signers: int, threshold: int
) -> None:
    directory = tmp_path / "stack"
    args = ["dev", "--dir", str(directory), "--signers", str(signers)]
    assert main([*args, "--threshold", str(threshold)]) == 2
    assert f"--threshold {threshold} with --signers {signers}" in capsys.readouterr().err
    assert not directory.exists()  # refused before anything was made


def test_help_says_it_is_for_development_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["dev", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "for development only" in shown
    assert "--trusted-dealer" in shown


def test_the_exports_survive_a_shell_whatever_the_values() -> None:
    values = {"KEYMINT_DEV_A": "/tmp/with space/ca.pem", "KEYMINT_DEV_B": "x'; rm -rf ~; '"}
    script = shell_exports(values) + "".join(f'printf "%s\\n" "${name}"\n' for name in values)
    printed = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert printed == list(values.values())
    assert all(line.startswith(("#", "export ")) for line in shell_exports(values).splitlines())
    assert shlex.split(shell_exports(values).splitlines()[1])[1].startswith("KEYMINT_DEV_A=")


def test_check_passes_a_request_through_envoy_with_a_3_of_4_key_made_by_dkg(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "stack"
    args = ["dev", "--dir", str(directory), "--signers", "4", "--threshold", "3", "--check"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "through Envoy: 200 the API behind Envoy received a keymint token" in out
    assert sorted(p.name for p in directory.glob("signer-*") if p.is_dir()) == [
        f"signer-{i}" for i in range(1, 5)
    ]
    assert (directory / "env.sh").read_text() in out
