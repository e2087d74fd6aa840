"""Hold the current compiled policy and replace it when its file changes, never with a bad one.

Readers take `store.current`: one reference to an immutable, fully compiled object, so a request
is decided entirely by the old policy or entirely by the new one. A reload compiles the new file
first and swaps the reference only if that succeeded; a bad edit is reported and the old policy
stays in force.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from extauthz.policy.model import PolicyError

T = TypeVar("T")
_log = logging.getLogger(__name__)


class ReloadOutcome(StrEnum):
    UNCHANGED = "unchanged"  # same content as the policy in force
    SWAPPED = "swapped"  # the new content compiled and is now in force
    REJECTED = "rejected"  # unreadable or does not compile: the old policy stays


@dataclass(frozen=True, slots=True)
class ReloadResult:
    outcome: ReloadOutcome
    sha256: str  # of the content read (the rejected content, on REJECTED; "" if unreadable)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Loaded(Generic[T]):
    value: T
    sha256: str


class PolicyStore(Generic[T]):
    """A policy file compiled by `load(content, source)`, reloaded by hand or by polling.

    The first load happens here and raises `PolicyError`: a gateway must not start without a
    policy. Later loads never raise; they return a `ReloadResult` (also passed to `on_reload`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        load: Callable[[bytes, str], T],
        on_reload: Callable[[ReloadResult], None] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._load = load
        self._on_reload = on_reload
        self._lock = threading.Lock()
        self._last_error: str | None = None
        try:
            stat, content = self._read()
        except OSError as exc:
            raise PolicyError(f"cannot read policy: {exc.strerror}", source=self.path) from None
        self._seen_stat = stat
        self._loaded = _Loaded(load(content, self.path), _sha256(content))

    @property
    def current(self) -> T:
        return self._loaded.value

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the file content in force, for audit records and metrics."""
        return self._loaded.sha256

    def loaded(self) -> tuple[T, str]:
        """The value in force and the SHA-256 of its content, read together (one reference)."""
        loaded = self._loaded
        return loaded.value, loaded.sha256

    def reload(self) -> ReloadResult:
        """Re-read the file now, whatever its mtime says."""
        with self._lock:
            return self._reload_locked(force=True)

    def poll(self) -> ReloadResult:
        """Reload if the file's mtime or size moved since it was last read."""
        with self._lock:
            return self._reload_locked(force=False)

    async def watch(
        self,
        *,
        interval_seconds: float = 2.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Poll until `stop` is set (or the task is cancelled); reading and compiling run in a
        worker thread so the event loop keeps serving with the policy in force."""
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        while stop is None or not stop.is_set():
            await sleep(interval_seconds)
            await asyncio.to_thread(self.poll)

    def _reload_locked(self, *, force: bool) -> ReloadResult:
        try:
            if not force and _stat(self.path) == self._seen_stat:
                return ReloadResult(ReloadOutcome.UNCHANGED, self._loaded.sha256)
            stat, content = self._read()
        except OSError as exc:
            return self._report(ReloadResult(ReloadOutcome.REJECTED, "", _os_error(exc)))
        self._seen_stat = stat  # a rejected edit is reported once, not on every poll
        digest = _sha256(content)
        if digest == self._loaded.sha256:
            self._last_error = None
            return ReloadResult(ReloadOutcome.UNCHANGED, digest)
        try:
            value = self._load(content, self.path)
        except PolicyError as exc:
            return self._report(ReloadResult(ReloadOutcome.REJECTED, digest, str(exc)))
        self._loaded = _Loaded(value, digest)  # the one atomic swap
        return self._report(ReloadResult(ReloadOutcome.SWAPPED, digest))

    def _report(self, result: ReloadResult) -> ReloadResult:
        repeated = result.error is not None and result.error == self._last_error
        self._last_error = result.error
        if repeated:  # e.g. a missing file, seen on every poll: say it once
            return result
        if result.outcome is ReloadOutcome.REJECTED:
            _log.error("policy %s not reloaded, the old one stays: %s", self.path, result.error)
        else:
            _log.info("policy %s reloaded (sha256 %s)", self.path, result.sha256)
        if self._on_reload is not None:
            self._on_reload(result)
        return result

    def _read(self) -> tuple[tuple[int, int], bytes]:
        # The content compiled is exactly the content hashed: one read, no second open.
        with open(self.path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            return (stat.st_mtime_ns, stat.st_size), handle.read()


def _stat(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _os_error(exc: OSError) -> str:
    return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
