"""The signer's own revocation list: read at start, re-read on change, never lost to a typo."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from signer.revocations import RevocationFile, RevocationFileError, parse_revocations

SUBJECT = "spiffe://prod.test/ns/shop/sa/web"


class Clocks:
    def __init__(self) -> None:
        self.wall = 1_900_000_000.0
        self.monotonic = 0.0


def write(path: Path, subjects: dict[str, float], *, bump: int = 0) -> None:
    path.write_text(json.dumps({"subjects": subjects, "jtis": {}}))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump * 1_000_000_000))


def revocations(path: Path, clocks: Clocks) -> RevocationFile:
    return RevocationFile(
        path, clock=lambda: clocks.wall, monotonic=lambda: clocks.monotonic, poll_seconds=1.0
    )


def test_a_subject_is_revoked_until_the_time_it_names(tmp_path: Path) -> None:
    clocks = Clocks()
    path = tmp_path / "revocations.json"
    write(path, {SUBJECT: clocks.wall + 60})
    listed = revocations(path, clocks)

    assert listed.subject_revoked(SUBJECT)
    assert not listed.subject_revoked("spiffe://prod.test/ns/shop/sa/other")
    clocks.wall += 60
    assert not listed.subject_revoked(SUBJECT)


def test_an_edit_is_seen_at_the_next_poll(tmp_path: Path) -> None:
    clocks = Clocks()
    path = tmp_path / "revocations.json"
    write(path, {})
    listed = revocations(path, clocks)
    write(path, {SUBJECT: clocks.wall + 60}, bump=1)

    assert not listed.subject_revoked(SUBJECT)  # not polled yet
    clocks.monotonic += 1.0
    assert listed.subject_revoked(SUBJECT)


def test_a_broken_edit_keeps_the_list_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clocks = Clocks()
    path = tmp_path / "revocations.json"
    write(path, {SUBJECT: clocks.wall + 60})
    listed = revocations(path, clocks)
    path.write_text('{"subjects": {"x": ')
    clocks.monotonic += 1.0

    with caplog.at_level(logging.ERROR):
        assert listed.subject_revoked(SUBJECT)
    assert "the one in force stays" in caplog.text


def test_a_missing_file_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RevocationFileError, match="cannot read"):
        RevocationFile(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[]", "must be a JSON object"),
        (b"{", "is not JSON"),
        (b'{"subjects": {}, "users": {}}', "unknown members"),
        (b'{"subjects": ["a"]}', "subjects must map"),
        (b'{"subjects": {"a": "tomorrow"}}', "not a unix time"),
        (b'{"subjects": {"a": true}}', "not a unix time"),
        (b'{"jtis": {"a": null}}', "not a unix time"),
        (b'{"subjects": {"a": 1e999}}', "not a finite unix time"),
    ],
)
def test_a_malformed_list_names_what_is_wrong(content: bytes, problem: str) -> None:
    with pytest.raises(RevocationFileError, match=problem):
        parse_revocations(content, Path("revocations.json"))
