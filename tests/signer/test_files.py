"""Atomic writes: the whole new content or the old, the mode from the first byte, errors raised."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from signer.files import write_atomically


def test_the_content_and_mode_are_the_new_ones(tmp_path: Path) -> None:
    target = tmp_path / "share.sealed"
    target.write_bytes(b"old")

    write_atomically(target, b"new", mode=0o600)

    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["share.sealed"]


def test_a_failed_write_raises_and_leaves_the_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "keyring.json"
    target.write_bytes(b"old")

    def full_disk(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, b"new")

    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keyring.json"]
