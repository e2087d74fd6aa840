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
