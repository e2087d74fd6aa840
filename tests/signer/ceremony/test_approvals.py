"""Local approvals to destroy a key: written by the host's operator, checked and used up here."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pytest

from signer.ceremony.approvals import (
    MAX_VALIDITY,
    Approval,
    ReplaceApprovals,
    ReplaceNotApproved,
)
from signer.ceremony.errors import CeremonyError

START = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.UTC)
KID = "Rk9PYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo"
OTHER_KID = "T1RIRVJrZXlpZGVudGlmaWVyMDEyMzQ1Njc4OWFiY2Q"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def approvals(tmp_path: Path, clock: Clock) -> ReplaceApprovals:
    return ReplaceApprovals(tmp_path / "state", clock=clock)


def _refusal(approvals: ReplaceApprovals, kid: str = KID) -> ReplaceNotApproved:
    with pytest.raises(ReplaceNotApproved) as refused:
        approvals.require([kid])
    assert refused.value.kid == kid
    assert refused.value.command == approvals.command(kid)
    assert approvals.command(kid) in str(refused.value)
    return refused.value


def test_an_approval_allows_its_kid_until_it_expires(
    approvals: ReplaceApprovals, clock: Clock
) -> None:
    path, approval = approvals.approve(KID, valid_for=datetime.timedelta(minutes=10))
    assert path == approvals.state_dir / "approvals" / f"replace-{KID}.json"
    assert Approval.decode(path.read_bytes()) == approval
    assert approval.expires_at == START + datetime.timedelta(minutes=10)
    assert approvals.require([KID]) == (KID,)
    assert approvals.require([]) == ()
    clock.now += datetime.timedelta(minutes=10)
    assert "expired at 2030-06-01T12:10:00Z" in _refusal(approvals).problem


def test_a_missing_approval_names_its_path_and_the_command(approvals: ReplaceApprovals) -> None:
    refusal = _refusal(approvals)
    assert refusal.problem == f"no approval at {approvals.path(KID)}"
    assert f"signer approve-replace --state-dir {approvals.state_dir} --kid={KID}" in str(refusal)


def test_an_approval_for_another_kid_does_not_count(approvals: ReplaceApprovals) -> None:
    approvals.approve(OTHER_KID)
    refusal = _refusal(approvals)
    assert refusal.problem.endswith(f"(approvals here name only ['{OTHER_KID}'])")


def test_every_destroyed_kid_needs_its_own_approval(approvals: ReplaceApprovals) -> None:
    approvals.approve(KID)
    with pytest.raises(ReplaceNotApproved) as refused:
        approvals.require([KID, OTHER_KID])
    assert refused.value.kid == OTHER_KID


def test_an_approval_file_renamed_to_another_kid_is_refused(approvals: ReplaceApprovals) -> None:
    path, _ = approvals.approve(OTHER_KID)
    path.rename(approvals.path(KID))
    refusal = _refusal(approvals)
    assert refusal.problem.endswith(f"names key {OTHER_KID}, not {KID}")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"approved!", "not JSON"),
        (b"[]", "expected exactly the fields"),
        (b'{"kid": "x"}', "expected exactly the fields"),
        (
            b'{"version": 2, "action": "replace_existing_key", "kid": "K", '
            b'"created_at": "2030-06-01T12:00:00Z", "expires_at": "2030-06-01T13:00:00Z"}',
            "not a version 1 replace_existing_key approval",
        ),
        (
            b'{"version": 1, "action": "replace_existing_key", "kid": "K", '
            b'"created_at": "2030-06-01T12:00:00Z", "expires_at": 1924000000}',
            "expires_at is not a timestamp string",
        ),
        (
            b'{"version": 1, "action": "replace_existing_key", "kid": "K", '
            b'"created_at": "2030-06-01T12:00:00Z", "expires_at": "2030-06-01T13:00:00"}',
            "has no time zone",
        ),
        (
            b'{"version": 1, "action": "replace_existing_key", "kid": "K", '
            b'"created_at": "2030-06-01T12:00:00Z", "expires_at": "2030-06-01T11:00:00Z"}',
            "expires_at is not after created_at",
        ),
        (
            b'{"version": 1, "action": "replace_existing_key", "kid": "../K", '
            b'"created_at": "2030-06-01T12:00:00Z", "expires_at": "2030-06-01T13:00:00Z"}',
            "kid is not a key id",
        ),
    ],
)
def test_a_malformed_approval_is_refused_with_what_is_wrong(
    approvals: ReplaceApprovals, content: bytes, problem: str
) -> None:
    approvals.approve(KID)
    approvals.path(KID).write_bytes(content)
    refusal = _refusal(approvals)
    assert refusal.problem.startswith(f"the approval at {approvals.path(KID)} is malformed")
    assert problem in refusal.problem


def test_an_approval_valid_for_longer_than_a_day_from_now_is_refused(
    approvals: ReplaceApprovals,
) -> None:
    path, _ = approvals.approve(KID)
    document = json.loads(path.read_bytes())
    document["expires_at"] = "2031-06-01T12:00:00Z"
    path.write_text(json.dumps(document))
    assert "longer than 86400 seconds from now" in _refusal(approvals).problem


def test_an_approval_others_could_have_written_is_refused(approvals: ReplaceApprovals) -> None:
    path, _ = approvals.approve(KID)
    os.chmod(path, 0o666)
    assert _refusal(approvals).problem.endswith("is writable by other users than its owner")


def test_a_symlink_is_not_an_approval(approvals: ReplaceApprovals, tmp_path: Path) -> None:
    elsewhere, _ = ReplaceApprovals(tmp_path / "elsewhere").approve(KID)
    approvals.directory.mkdir(parents=True)
    approvals.path(KID).symlink_to(elsewhere)
    assert _refusal(approvals).problem.endswith("is not a regular file")


def test_consuming_deletes_the_approval_once(approvals: ReplaceApprovals) -> None:
    path, _ = approvals.approve(KID)
    approvals.consume([KID])
    assert not path.exists()
    approvals.consume([KID])  # already gone: nothing to do
    assert _refusal(approvals).problem == f"no approval at {path}"


@pytest.mark.parametrize("seconds", [0, -5, int(MAX_VALIDITY.total_seconds()) + 1])
def test_an_approval_is_for_a_bounded_time(approvals: ReplaceApprovals, seconds: int) -> None:
    with pytest.raises(CeremonyError, match="an approval is valid for 1 to 86400 seconds"):
        approvals.approve(KID, valid_for=datetime.timedelta(seconds=seconds))
    assert not approvals.directory.exists()


@pytest.mark.parametrize("kid", ["../../share.sealed", "", "a/b", "k" * 129, "kid with space"])
def test_a_kid_that_is_not_a_key_id_is_refused(approvals: ReplaceApprovals, kid: str) -> None:
    with pytest.raises(CeremonyError, match="is not a key id"):
        approvals.approve(kid)
    with pytest.raises(CeremonyError, match="is not a key id"):
        approvals.require([kid])
