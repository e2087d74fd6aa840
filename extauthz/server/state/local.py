"""State under KEYMINT_STATE_DIR: one replica's revocations and key ring survive its restarts, and
its workers (`extauthz serve --workers N`) share them.

    revocations.json    {"subjects": {value: until}, "jtis": {...}}: the shape of
                        GET /admin/revocations and of a signer's KEYMINT_SIGNER_REVOCATIONS_FILE
    keyring.json        the key ring (extauthz.server.keyring), public, re-verified when read
    ratelimits.sqlite3  token buckets, only when several workers share them
    .state.lock         flock(2) around every read-modify-write

Writes go to a temporary file, fsync, rename: a crash leaves the old file or the new one. Other
workers notice a change by the files' inode, size and modification time, polled by `SharedState`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from extauthz.server.limits import KIND_OF, KINDS, StateUnavailable
from extauthz.server.state.base import Event, KeyRingConflict, RevocationSnapshot, Versions
from signer.files import write_atomically

REVOCATIONS_FILE = "revocations.json"
KEYRING_FILE = "keyring.json"
BUCKETS_FILE = "ratelimits.sqlite3"
LOCK_FILE = ".state.lock"
MAX_REVOCATIONS = 1_000_000


class LocalStore:
    def __init__(
        self,
        directory: Path,
        *,
        keyring_name: str = KEYRING_FILE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self._keyring_name = keyring_name
        self._now = clock
        directory.mkdir(parents=True, exist_ok=True)
        self._buckets: _Buckets | None = None

    @property
    def shared(self) -> bool:
        return False

    @property
    def where(self) -> str:
        return str(self.directory)

    @property
    def keyring_path(self) -> Path:
        return self.directory / self._keyring_name

    @property
    def revocations_path(self) -> Path:
        return self.directory / REVOCATIONS_FILE

    # --- revocations ------------------------------------------------------------------------------

    async def add_revocation(self, kind: str, value: str, until: float) -> None:
        name = KIND_OF[kind]
        try:
            with self._locked():
                snapshot = self._read_revocations()
                table = snapshot[name]
                table[value] = max(until, table.get(value, -math.inf))
                now = self._now()
                live = {k: {v: u for v, u in snapshot[k].items() if u > now} for k in KINDS}
                if sum(len(t) for t in live.values()) > MAX_REVOCATIONS:
                    raise StateUnavailable(f"{self.revocations_path} holds too many revocations")
                _write(self.revocations_path, json.dumps(live, sort_keys=True, indent=1))
        except OSError as exc:
            raise StateUnavailable(f"cannot write {self.revocations_path}: {exc}") from None

    async def revocations(self) -> RevocationSnapshot:
        try:
            return self._read_revocations()
        except OSError as exc:
            raise StateUnavailable(f"cannot read {self.revocations_path}: {exc}") from None

    def _read_revocations(self) -> RevocationSnapshot:
        try:
            document = json.loads(self.revocations_path.read_bytes())
        except FileNotFoundError:
            return {name: {} for name in KINDS}
        except ValueError:
            raise OSError(f"{self.revocations_path} is not JSON") from None
        if not isinstance(document, dict):
            raise OSError(f"{self.revocations_path} is not a JSON object")
        snapshot: RevocationSnapshot = {}
        for name in KINDS:
            table = document.get(name, {})
            if not isinstance(table, dict):
                raise OSError(f"{self.revocations_path}: {name} is not an object")
            snapshot[name] = {
                str(value): float(until)
                for value, until in table.items()
                if isinstance(until, int | float) and not isinstance(until, bool)
            }
        return snapshot

    # --- the key ring -----------------------------------------------------------------------------

    async def load_keyring(self) -> tuple[str | None, str]:
        try:
            text = self.keyring_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, ""
        except (OSError, UnicodeDecodeError) as exc:
            raise StateUnavailable(f"cannot read {self.keyring_path}: {exc}") from None
        return text, _digest(text)

    async def save_keyring(self, document: str, expected_version: str) -> str:
        try:
            with self._locked():
                _current, version = await self.load_keyring()
                if version != expected_version:
                    raise KeyRingConflict(
                        f"{self.keyring_path} changed since this process read it (another worker "
                        "rotated the key): retry"
                    )
                _write(self.keyring_path, document)
        except OSError as exc:
            raise StateUnavailable(f"cannot write {self.keyring_path}: {exc}") from None
        return _digest(document)

    # --- change detection -------------------------------------------------------------------------

    async def versions(self) -> Versions:
        return Versions(_signature(self.revocations_path), _signature(self.keyring_path))

    def events(self) -> AsyncIterator[Event] | None:
        return None

    # --- rate limits ------------------------------------------------------------------------------

    async def take(self, key: str, want: int, rate: float, burst: int) -> tuple[int, float]:
        if self._buckets is None:
            self._buckets = _Buckets(self.directory / BUCKETS_FILE)
        try:
            return await asyncio.to_thread(self._buckets.take, key, want, rate, burst, self._now())
        except sqlite3.Error as exc:
            raise StateUnavailable(f"rate-limit buckets: {exc}") from None

    async def close(self) -> None:
        if self._buckets is not None:
            self._buckets.close()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.directory / LOCK_FILE, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


class _Buckets:
    """Token buckets in SQLite: a transaction per take, so workers on one host share them."""

    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(path, timeout=0.5, check_same_thread=False)
        self._lock = threading.Lock()
        self._takes = 0
        with self._lock:
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=OFF")  # buckets need no durability
            self._connection.execute(
                "CREATE TABLE IF NOT EXISTS buckets "
                "(key TEXT PRIMARY KEY, tokens REAL NOT NULL, ts REAL NOT NULL)"
            )
            self._connection.commit()

    def take(self, key: str, want: int, rate: float, burst: int, now: float) -> tuple[int, float]:
        with self._lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                row = connection.execute(
                    "SELECT tokens, ts FROM buckets WHERE key = ?", (key,)
                ).fetchone()
                tokens, last = (float(burst), now) if row is None else row
                tokens = min(float(burst), tokens + max(0.0, now - last) * rate)
                granted = min(want, int(tokens))
                tokens -= granted
                connection.execute(
                    "INSERT INTO buckets (key, tokens, ts) VALUES (?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET tokens = excluded.tokens, ts = excluded.ts",
                    (key, tokens, now),
                )
                self._takes += 1
                if self._takes % 10_000 == 0:  # full buckets are the same as no row
                    connection.execute(
                        "DELETE FROM buckets WHERE ts < ?", (now - burst / rate - 60.0,)
                    )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return granted, 0.0 if granted else (1.0 - tokens) / rate

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def _signature(path: Path) -> str:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return ""
    return f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write(path: Path, text: str) -> None:
    write_atomically(path, text.encode())
