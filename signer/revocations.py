"""Revoked subjects, as this signer knows them: a file operators maintain, re-read when it changes.

The gateway's own revocation list lives in the gateway, so a compromised gateway could ignore it.
Each signer therefore reads a list of its own (`KEYMINT_SIGNER_REVOCATIONS_FILE`), in the shape the
gateway's `GET /admin/revocations` answers, so an operator can copy one into the other:

    {"subjects": {"spiffe://prod.test/ns/shop/sa/web": 1767225600}, "jtis": {}}

Each entry holds until the unix time it names. A signer refuses to sign for a revoked subject.
`jtis` is accepted and ignored: a signer signs new tokens, never an existing jti. The file is
checked for changes at most every `poll_seconds`; a broken edit is logged and the list in force
stays (a signer never forgets a revocation because of a typo).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from signer.errors import SignerError

log = logging.getLogger(__name__)


class RevocationFileError(SignerError):
    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"revocation list {path}: {problem}")


def parse_revocations(content: bytes, path: Path) -> Mapping[str, float]:
    """Revoked subjects and until when, from the file's bytes; RevocationFileError if malformed."""
    try:
        document = json.loads(content)
    except (ValueError, RecursionError):
        raise RevocationFileError(path, "is not JSON") from None
    if not isinstance(document, dict):
        raise RevocationFileError(path, "must be a JSON object")
    unknown = sorted(set(document) - {"subjects", "jtis"})
    if unknown:
        raise RevocationFileError(path, f"unknown members {unknown}: expected subjects and jtis")
    subjects = document.get("subjects", {})
    for name in ("subjects", "jtis"):
        table = document.get(name, {})
        if not isinstance(table, dict):
            raise RevocationFileError(path, f"{name} must map each value to a unix time")
        for key, until in table.items():
            if isinstance(until, bool) or not isinstance(until, int | float):
                raise RevocationFileError(path, f"{name}[{key!r}] is not a unix time")
            if not math.isfinite(until):
                raise RevocationFileError(path, f"{name}[{key!r}] is not a finite unix time")
    return MappingProxyType({str(k): float(v) for k, v in subjects.items()})


class RevocationFile:
    """The revoked subjects in `path`, re-read when the file's mtime or size changes."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        poll_seconds: float = 1.0,
    ) -> None:
        self.path = path
        self._clock = clock
        self._monotonic = monotonic
        self._poll_seconds = poll_seconds
        try:
            self._stat, content = self._read()
        except OSError as exc:
            raise RevocationFileError(path, f"cannot read: {exc.strerror}") from None
        self._subjects = parse_revocations(content, path)
        self._checked_at = monotonic()

    def subject_revoked(self, subject: str) -> bool:
        self._maybe_reload()
        until = self._subjects.get(subject)
        return until is not None and until > self._clock()

    def _maybe_reload(self) -> None:
        if self._monotonic() - self._checked_at < self._poll_seconds:
            return
        self._checked_at = self._monotonic()
        try:
            stat = _stat(self.path)
            if stat == self._stat:
                return
            self._stat, content = self._read()
            self._subjects = parse_revocations(content, self.path)
        except (OSError, RevocationFileError) as exc:
            log.error("revocation list not reloaded, the one in force stays: %s", exc)
            return
        log.info("revocation list %s reloaded: %d subjects", self.path, len(self._subjects))

    def _read(self) -> tuple[tuple[int, int], bytes]:
        with open(self.path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            return (stat.st_mtime_ns, stat.st_size), handle.read()


def _stat(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size
