"""Append-only, hash-chained audit log: one JSON record per line, each linked to the one before.

A record is `{"seq", "ts", "prev", "event", "data", "hash"}`: `seq` counts from 1, `prev` is the
previous record's `hash` (`GENESIS_HASH` for the first), and `hash` is the hex SHA-256 of the
record's canonical JSON without `hash` (sorted keys, no spaces, UTF-8). Lines are written in
that same canonical form. Editing, deleting, inserting or reordering a record breaks the chain
where it happened; `verify_log` says where. Cutting records off the end leaves a valid shorter
chain: detecting that needs the head (`last_hash`) kept somewhere else.

`append` returns only after the line is fsynced, so a crash loses no acknowledged record. A
crash mid-write leaves a final line without its newline, which was never acknowledged:
verification reports it, and opening the log for append cuts it off (with a warning). A write that
fails (disk full, file system read-only) is cut off the same way and raises; each later append
first checks that the file again ends on the last acknowledged record, and only then writes, so
the log resumes by itself once the disk does.

Record data passes through `scrub` first. Values often come from whoever sent a request, so one
shaped like a secret (a token, a private key) becomes a reference and the record is still
written: no request can keep its own record out of the log. Keys are the program's, and one
naming a secret is refused as a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

from signer.errors import SignerError
from signer.metrics import AUDIT_WRITE_FAILURES

GENESIS_HASH = "0" * 64
_FIELDS = frozenset({"seq", "ts", "prev", "event", "data", "hash"})
_EVENT = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_HEX_HASH = re.compile(r"[0-9a-f]{64}")
# Secrets have no business in an audit record; refer to a token by `token_ref(token)`.
_SECRET_WORDS = frozenset({"token", "share", "nonce", "secret", "pin", "password"})
_SAFE_SUFFIXES = frozenset({"ref", "hash", "sha256", "id", "ids", "index", "count", "kind", "type"})
_TOKEN_SHAPED = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")  # a compact JWS
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
MAX_DEPTH = 16  # records are shallow; anything deeper came from someone else's data
_TAIL_BLOCK = 64 * 1024
_log = logging.getLogger(__name__)


class AuditError(SignerError):
    """The audit log cannot be written or read as a chain; the message says where and why."""


def token_ref(token: bytes | str) -> str:
    """How a token appears in logs: `sha256:` and the first 16 hex digits of its digest."""
    raw = token.encode("utf-8") if isinstance(token, str) else token
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


def canonical_json(value: object) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    ts: str
    prev: str
    event: str
    data: Mapping[str, object]
    hash: str

    def body(self) -> dict[str, object]:
        """The record without `hash`: what `hash` is computed over."""
        return {
            "seq": self.seq,
            "ts": self.ts,
            "prev": self.prev,
            "event": self.event,
            "data": dict(self.data),
        }

    def line(self) -> bytes:
        return canonical_json({**self.body(), "hash": self.hash}) + b"\n"


def _digest(body: Mapping[str, object]) -> str:
    return hashlib.sha256(canonical_json(body)).hexdigest()


def _timestamp(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def redacted(secret: str) -> str:
    """What stands in a record for a value shaped like a secret: a reference, never the value."""
    return f"[redacted {token_ref(secret)}]"


def scrub(data: object, path: str = "data", depth: int = 0) -> object:
    """A copy of `data` safe to write, whatever a caller's request put into it.

    Values are data, often from whoever sent the request: a token or private key inside a
    string, text that is not valid Unicode, a number JSON cannot hold, or nesting deeper than
    `MAX_DEPTH` is replaced by a marker, so the record is still written and the secret is not.
    Keys are the program's: a key naming a secret (`token`, `key_share`, `private_key`, `pin`...)
    unless it names a reference to one (`token_ref`, `share_index`), a key that is not a string,
    or a value that is not JSON at all is the program's bug, refused with AuditError.
    """
    if isinstance(data, Mapping):
        if depth >= MAX_DEPTH:
            return f"[nested deeper than {MAX_DEPTH} levels]"
        copy: dict[str, object] = {}
        for key, value in data.items():
            if not isinstance(key, str):
                raise AuditError(f"{path}: keys must be strings, found {key!r}")
            if _names_a_secret(key):
                raise AuditError(f"{path}.{key}: refusing a secret in the audit log; use token_ref")
            copy[_scrub_text(key)] = scrub(value, f"{path}.{key}", depth + 1)
        return copy
    if isinstance(data, list | tuple):
        if depth >= MAX_DEPTH:
            return f"[nested deeper than {MAX_DEPTH} levels]"
        return [scrub(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(data)]
    if isinstance(data, str):
        return _scrub_text(data)
    if isinstance(data, float) and not math.isfinite(data):
        return f"[not a JSON number: {data!r}]"
    if data is None or isinstance(data, bool | int | float):
        return data
    raise AuditError(f"{path}: {type(data).__name__} is not JSON")


def _names_a_secret(key: str) -> bool:
    words = [w for w in re.split(r"[^a-z0-9]+", key.lower()) if w]
    secret = any(w in _SECRET_WORDS for w in words) or "private_key" in "_".join(words)
    return secret and (not words or words[-1] not in _SAFE_SUFFIXES)


def _scrub_text(text: str) -> str:
    if _PRIVATE_KEY.search(text):
        return redacted(text)
    text = _TOKEN_SHAPED.sub(lambda match: redacted(match.group()), text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON's \ud800 escape can carry
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class AuditLog:
    """The writer, shared by threads. One per file: a second `AuditLog` on the same file, in
    this process or another, is refused, since two writers would fork the chain."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time):
        self.path = os.fspath(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._failure: str | None = None
        created = not os.path.exists(self.path)
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        try:
            self._fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot open: {exc.strerror}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise AuditError(f"{self.path}: already open for append by another writer") from None
        try:
            if created:
                _fsync_directory(self.path)
            self._size, self._seq, self._hash = self._continue_chain()
        except BaseException:
            os.close(self._fd)
            raise

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def last_hash(self) -> str:
        """The chain's head: publish it elsewhere to detect records cut off the end."""
        return self._hash

    def append(self, event: str, data: Mapping[str, object] | None = None) -> AuditRecord:
        """Write one record and fsync it; thread-safe. Raises AuditError if it is not durable."""
        return self.append_batch([(event, data)])[0]

    def append_batch(
        self, entries: Sequence[tuple[str, Mapping[str, object] | None]]
    ) -> list[AuditRecord]:
        """Write several records with one fsync (group commit); all are durable on return."""
        return self._append_prepared([_prepare(event, data) for event, data in entries])

    def _append_prepared(self, prepared: Sequence[tuple[str, dict[str, Any]]]) -> list[AuditRecord]:
        """`append_batch` of records `_prepare` already made (AsyncAuditLog prepares each one as
        it is appended, on the event loop, so its writer thread only chains, writes and syncs)."""
        with self._lock:
            if self._fd < 0:
                raise AuditError(f"{self.path}: closed")
            if self._failure is not None:
                self._recover()
            records = []
            seq, head = self._seq, self._hash
            for event, plain in prepared:
                unsealed = AuditRecord(
                    seq=seq + 1,
                    ts=_timestamp(self._clock()),
                    prev=head,
                    event=event,
                    data=plain,
                    hash="",
                )
                record = dataclasses.replace(unsealed, hash=_digest(unsealed.body()))
                records.append(record)
                seq, head = record.seq, record.hash
            lines = b"".join(r.line() for r in records)
            try:
                _write_all(self._fd, lines)
                os.fdatasync(self._fd)  # the data and the file size: all a reader needs
            except OSError as exc:
                raise self._failed_write(exc) from exc
            self._size += len(lines)
            self._seq, self._hash = seq, head
            return records

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)  # also releases the flock
                self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _failed_write(self, exc: OSError) -> AuditError:
        # Cut back any partial line, so the file still ends on an acknowledged record; the next
        # append makes sure of that before it writes (`_recover`).
        self._failure = exc.strerror or str(exc)
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self._size)
        return AuditError(f"{self.path}: write failed: {self._failure}")

    def _recover(self) -> None:
        """After a failed write: cut the file back to the last acknowledged record, make that
        durable, and read the record back as the chain's head. Raises AuditError (the log stays
        stopped) unless all of that works."""
        lost = AuditError(
            f"{self.path}: an earlier write failed ({self._failure}) and the file no longer "
            "ends on the last acknowledged record; run the audit verifier"
        )
        try:
            if os.fstat(self._fd).st_size < self._size:
                raise lost
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
            start = _last_newline(self._fd, self._size - 1) + 1 if self._size else 0
            tail = os.pread(self._fd, self._size - start, start)
        except OSError as exc:
            raise AuditError(
                f"{self.path}: an earlier write failed ({self._failure}) and the log cannot be "
                f"cut back to its last record: {exc.strerror or exc}"
            ) from None
        try:
            head = parse_record(tail).hash if tail else GENESIS_HASH
        except BadRecordError:
            raise lost from None
        if head != self._hash:
            raise lost
        _log.warning("%s: writable again after a failed write (%s)", self.path, self._failure)
        self._failure = None

    def _continue_chain(self) -> tuple[int, int, str]:
        """(size, last seq, last hash) from the tail, after dropping a torn final line."""
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            cut = _last_newline(self._fd, size) + 1
            _log.warning(
                "%s: dropping a torn final line (%d bytes, no newline: written during a crash, "
                "never acknowledged)",
                self.path,
                size - cut,
            )
            os.ftruncate(self._fd, cut)
            os.fsync(self._fd)
            size = cut
        if size == 0:
            return 0, 0, GENESIS_HASH
        start = _last_newline(self._fd, size - 1) + 1
        try:
            record = parse_record(os.pread(self._fd, size - start, start))
        except BadRecordError as exc:
            raise AuditError(
                f"{self.path}: refusing to append after a broken last record (byte {start}): "
                f"{exc.detail}; run the audit verifier"
            ) from None
        return size, record.seq, record.hash


def _prepare(event: str, data: Mapping[str, object] | None) -> tuple[str, dict[str, Any]]:
    if not _EVENT.fullmatch(event):
        raise AuditError(f"event {event!r} is not 1-64 of A-Z a-z 0-9 _ . : -")
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise AuditError(f"data must be an object, not {type(data).__name__}")
    try:
        plain: dict[str, Any] = json.loads(canonical_json(scrub(data)))  # exactly what is on disk
    except (TypeError, ValueError) as exc:
        raise AuditError(f"data is not JSON: {exc}") from None
    return event, plain


class AsyncAuditLog:
    """Appends from the event loop with group commit: one fsync, in a thread, per batch.

    Records that arrive while a batch is being made durable wait for the next one, so under load
    many requests share an fsync, and the event loop never blocks on the disk.

    `append` hands the record to the writer thread before it returns its future, not when the
    caller first awaits: a caller can start the record, do other work while the disk syncs (the
    signer's guard and signing), and await it last.
    """

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._pending: list[tuple[tuple[str, dict[str, Any]], asyncio.Future[AuditRecord]]] = []
        self._writing: asyncio.AbstractEventLoop | None = None  # the loop a write reports to

    def append(
        self, event: str, data: Mapping[str, object] | None = None
    ) -> asyncio.Future[AuditRecord]:
        """The record's future: its AuditRecord once durable, or the AuditError that kept it
        from being written (a record refused by `_prepare` is refused here, never inside someone
        else's batch). Must be called from the event loop's thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AuditRecord] = loop.create_future()
        try:
            prepared = _prepare(event, data)
        except AuditError as exc:
            future.set_exception(exc)
            return future
        self._pending.append((prepared, future))
        if self._writing is not None and self._writing.is_closed():
            self._writing = None  # its report can never arrive; the log's lock orders the writes
        if self._writing is None:
            self._write_pending(loop)
        return future

    def _write_pending(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending, []
        self._writing = loop
        # The thread reports back itself (`_write_batch`): the waiters wake one pass of the
        # event loop after the fsync, not three (an executor future, its callback, then theirs).
        loop.run_in_executor(None, self._write_batch, loop, batch)

    def _write_batch(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[tuple[str, dict[str, Any]], asyncio.Future[AuditRecord]]],
    ) -> None:
        """In the writer thread: chain, write and sync the batch, then hand the outcome to the
        event loop."""
        outcome: list[AuditRecord] | BaseException
        try:
            outcome = self.log._append_prepared([prepared for prepared, _ in batch])
        except BaseException as exc:  # every waiter learns it, on the loop
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(self._written, loop, batch, outcome)

    def _written(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[tuple[str, dict[str, Any]], asyncio.Future[AuditRecord]]],
        outcome: list[AuditRecord] | BaseException,
    ) -> None:
        self._writing = None
        if isinstance(outcome, BaseException):  # every waiter learns its record is not durable
            AUDIT_WRITE_FAILURES.inc(len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(outcome)
        else:
            for (_, future), record in zip(batch, outcome, strict=True):
                if not future.done():
                    future.set_result(record)
        if self._pending:
            self._write_pending(loop)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_directory(path: str) -> None:
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _last_newline(fd: int, end: int) -> int:
    """Offset of the last b"\\n" before `end`, or -1."""
    while end > 0:
        start = max(0, end - _TAIL_BLOCK)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            return start + found
        end = start
    return -1


class ProblemKind(StrEnum):
    TORN_LINE = "torn_line"  # the last line has no newline: a crash during a write
    INVALID_JSON = "invalid_json"
    BAD_RECORD = "bad_record"  # JSON, but not a record (fields, types)
    HASH_MISMATCH = "hash_mismatch"  # the record was altered
    SEQ_MISMATCH = "seq_mismatch"  # a record is missing, duplicated or out of order
    PREV_MISMATCH = "prev_mismatch"  # the link to the record before is broken


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    line: int
    seq: int | None
    kind: ProblemKind
    detail: str

    def __str__(self) -> str:
        seq = "" if self.seq is None else f" (seq {self.seq})"
        return f"line {self.line}{seq}: {self.kind.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    records: int  # lines that parsed as records
    last_seq: int
    last_hash: str
    problems: tuple[VerifyProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> VerifyProblem | None:
        return self.problems[0] if self.problems else None

    def __str__(self) -> str:
        head = f"{self.records} records, last seq {self.last_seq}, head {self.last_hash}"
        if self.ok:
            return f"OK: {head}"
        found = "\n".join(f"  {problem}" for problem in self.problems)
        return f"BROKEN: {len(self.problems)} problem(s) ({head})\n{found}"


class BadRecordError(AuditError):
    """One line that is not a valid record; `kind` and `seq` say how and which."""

    def __init__(
        self, kind: ProblemKind, detail: str, seq: int | None = None, stored_hash: str | None = None
    ) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.seq, self.stored_hash = kind, detail, seq, stored_hash


def parse_record(line: bytes) -> AuditRecord:
    """One line (without or with its newline) as a record whose own hash is right."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRecordError(ProblemKind.INVALID_JSON, f"not a JSON line: {exc}") from None
    if not isinstance(obj, dict) or set(obj) != _FIELDS:
        detail = f"expected exactly the fields {', '.join(sorted(_FIELDS))}"
        raise BadRecordError(ProblemKind.BAD_RECORD, detail)
    seq, ts, prev, event, data, stored = (
        obj[k] for k in ("seq", "ts", "prev", "event", "data", "hash")
    )
    if not (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1):
        raise BadRecordError(ProblemKind.BAD_RECORD, f"seq {seq!r} is not a positive integer")
    if not all(isinstance(v, str) for v in (ts, prev, event, stored)) or not isinstance(data, dict):
        raise BadRecordError(
            ProblemKind.BAD_RECORD, "ts, prev, event, hash must be strings, data an object", seq
        )
    if not (_HEX_HASH.fullmatch(prev) and _HEX_HASH.fullmatch(stored)):
        raise BadRecordError(
            ProblemKind.BAD_RECORD, "prev and hash must be 64 lower-case hex digits", seq
        )
    record = AuditRecord(seq=seq, ts=ts, prev=prev, event=event, data=data, hash=stored)
    computed = _digest(record.body())
    if computed != stored:
        detail = (
            f"content altered: stored hash {stored[:16]}..., content hashes to {computed[:16]}..."
        )
        raise BadRecordError(ProblemKind.HASH_MISMATCH, detail, seq, stored)
    return record


def verify_log(path: str | os.PathLike[str]) -> VerifyResult:
    """Check every record and every link; report each break with its line and seq."""
    try:
        with open(path, "rb") as handle:
            return _verify_lines(handle)
    except OSError as exc:
        raise AuditError(f"{os.fspath(path)}: cannot read: {exc.strerror}") from None


def _verify_lines(lines: Iterable[bytes]) -> VerifyResult:
    problems: list[VerifyProblem] = []
    records, last_seq, last_hash = 0, 0, GENESIS_HASH
    # What the next record must carry; None after a line too broken to anchor on.
    expected_seq: int | None = 1
    expected_prev: str | None = GENESIS_HASH
    for number, raw in enumerate(lines, start=1):
        if not raw.endswith(b"\n"):
            detail = f"no newline after the last {len(raw)} bytes: a crash during a write"
            problems.append(VerifyProblem(number, None, ProblemKind.TORN_LINE, detail))
            break
        try:
            record = parse_record(raw)
        except BadRecordError as exc:
            problems.append(VerifyProblem(number, exc.seq, exc.kind, exc.detail))
            # An altered record still anchors the next: it links to the hash as stored.
            expected_seq = None if exc.seq is None else exc.seq + 1
            expected_prev = exc.stored_hash
            continue
        if expected_seq is not None and record.seq != expected_seq:
            detail = (
                f"seq {record.seq} where {expected_seq} was expected: "
                "a record is missing, duplicated or out of order"
            )
            problems.append(VerifyProblem(number, record.seq, ProblemKind.SEQ_MISMATCH, detail))
        if expected_prev is not None and record.prev != expected_prev:
            detail = (
                "prev is not the hash of the record before: one of them was altered, "
                "or a record was removed or inserted here"
            )
            problems.append(VerifyProblem(number, record.seq, ProblemKind.PREV_MISMATCH, detail))
        records += 1
        last_seq, last_hash = record.seq, record.hash
        expected_seq, expected_prev = record.seq + 1, record.hash
    return VerifyResult(records, last_seq, last_hash, tuple(problems))
