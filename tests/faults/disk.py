"""A small file system for one process's audit log, so a test can fill it or make it read-only.

A tmpfs mounted over a directory (root only: mounting needs CAP_SYS_ADMIN). `fill()` writes a
filler file until the file system says ENOSPC; `free()` deletes it. `read_only()` remounts it
read-only, which Linux allows only while no file on it is open for writing (so: while the process
that writes there is stopped); `writable()` undoes that.
"""

from __future__ import annotations

import errno
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

FILLER = ".filler"


class DiskError(RuntimeError):
    pass


def can_mount() -> bool:
    return os.geteuid() == 0


@dataclass
class SmallDisk:
    path: Path
    size: str = "64m"
    mounted: bool = False

    def mount(self) -> None:
        if not can_mount():
            raise DiskError(
                f"mounting a tmpfs at {self.path} needs root (CAP_SYS_ADMIN): run the audit-disk "
                "faults as root"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        _run("mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700", "tmpfs", str(self.path))
        self.mounted = True

    def fill(self) -> int:
        """Write a filler until the file system is full; the bytes it took."""
        written = 0
        chunk = b"\0" * (1 << 20)
        with open(self.path / FILLER, "ab", buffering=0) as filler:
            while chunk:
                try:
                    written += filler.write(chunk) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    chunk = chunk[: len(chunk) // 2]  # then smaller pieces, down to one byte
        return written

    def free(self) -> None:
        (self.path / FILLER).unlink(missing_ok=True)

    def read_only(self) -> None:
        _run("mount", "-o", "remount,ro", str(self.path))

    def writable(self) -> None:
        _run("mount", "-o", "remount,rw", str(self.path))

    def unmount(self) -> None:
        if self.mounted:
            _run("umount", "--lazy", str(self.path))
            self.mounted = False


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DiskError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
