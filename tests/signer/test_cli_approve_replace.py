"""`signer approve-replace`: the local approval a signer host's operator writes, without network."""

from __future__ import annotations

from pathlib import Path

import pytest

from signer.ceremony.approvals import Approval, ReplaceApprovals
from signer.cli import main

KID = "Rk9PYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo"
OTHER_KID = "T1RIRVJrZXlpZGVudGlmaWVyMDEyMzQ1Njc4OWFiY2Q"


def test_it_writes_one_approval_per_kid_that_the_signer_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["approve-replace", "--state-dir", str(tmp_path), "--kid", KID, "--kid", OTHER_KID]
    assert main([*argv, "--valid-for", "120"]) == 0
    approvals = ReplaceApprovals(tmp_path)
    assert approvals.require([KID, OTHER_KID]) == tuple(sorted([KID, OTHER_KID]))
    approval = Approval.decode(approvals.path(KID).read_bytes())
    assert (approval.expires_at - approval.created_at).total_seconds() == 120
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].startswith(f"approved: a ceremony may replace key {KID} on this signer until ")
    assert out[0].endswith(f"({approvals.path(KID)})")


def test_the_state_directory_defaults_to_the_signers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYMINT_SIGNER_STATE_DIR", str(tmp_path))
    assert main(["approve-replace", "--kid", KID]) == 0
    assert ReplaceApprovals(tmp_path).require([KID]) == (KID,)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--kid", "../share.sealed"], "signer: '../share.sealed' is not a key id"),
        (["--kid", KID, "--valid-for", "90000"], "signer: an approval is valid for 1 to 86400"),
    ],
)
def test_a_bad_request_is_a_message_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["approve-replace", "--state-dir", str(tmp_path), *extra]) == 2
    assert capsys.readouterr().err.startswith(message)
    assert not (tmp_path / "approvals").exists()


def test_without_a_state_directory_it_says_which_is_needed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KEYMINT_SIGNER_STATE_DIR", raising=False)
    assert main(["approve-replace", "--kid", KID]) == 2
    assert "--state-dir (or KEYMINT_SIGNER_STATE_DIR) is required" in capsys.readouterr().err


def test_a_kid_that_begins_with_a_dash_is_approved_as_the_refusal_says(tmp_path: Path) -> None:
    kid = "-" + KID[1:]  # base64url: one kid in 64 begins with "-"
    hint = ReplaceApprovals(tmp_path).command(kid)

    assert main(["approve-replace", "--state-dir", str(tmp_path), f"--kid={kid}"]) == 0
    assert f"--kid={kid}" in hint
    assert ReplaceApprovals(tmp_path).path(kid).exists()
