"""Revoked subjects, as this signer knows them: a file operators maintain, re-read when it changes.

The gateway's own revocation list lives in the gateway, so a compromised gateway could ignore it.
Each signer therefore reads a list of its own (`KEYMINT_SIGNER_REVOCATIONS_FILE`), in the shape the
gateway's `GET /admin/revocations` answers, so an operator can copy one into the other:

    {"subjects": {"spiffe://prod.test/ns/shop/sa/web": 1767225600}, "jtis": {}}

Each entry holds until the unix time it names. A signer refuses to sign for a revoked subject.
`jtis` is accepted and ignored: a signer signs new tokens, never an existing jti. The file is
checked for changes at most every `poll_seconds`; a broken edit is logged and the list in force
stays (a signer never forgets a revocation because of a typo).

With KEYMINT_REDIS_URL, a signer also follows the revocations every gateway replica writes to Redis
(`RedisRevocationFollower`) and keeps what it learns in a file of its own (`LearnedRevocations`),
which only grows until entries expire: Redis can make a signer refuse, never make it sign.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from signer.errors import SignerError
from signer.files import write_atomically
from signer.redisconn import EVENTS_CHANNEL, REVOKED_KEYS, REVOKED_VERSION_KEY

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)
# An announced revocation is in force at once; the file learned ones are kept in is written at most
# this long after it (one write for a burst). A signer killed in between relearns it from Redis.
SAVE_DELAY_SECONDS = 0.1


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


class LearnedRevocations:
    """Revoked subjects this signer learned from the gateways' shared Redis, kept in a file of its
    own (`<state dir>/learned-revocations.json`) until each one expires.

    It only grows: a later answer from Redis that no longer holds an entry (a flush, a restart, a
    lie) lifts nothing. So Redis can make this signer refuse (deny service), never sign for a
    subject it once saw revoked. At most `max_entries` are held; past that new ones are refused
    with an error in the log (a flood is a denial of service, not a way in).
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        max_entries: int = 100_000,
    ) -> None:
        self.path = path
        self._clock = clock
        self._max = max_entries
        self._subjects: dict[str, float] = {}
        if path.exists():
            try:
                self._subjects = dict(parse_revocations(path.read_bytes(), path))
            except (OSError, RevocationFileError) as exc:
                raise RevocationFileError(path, f"cannot read learned revocations: {exc}") from None

    def subject_revoked(self, subject: str) -> bool:
        until = self._subjects.get(subject)
        return until is not None and until > self._clock()

    def merge(self, subjects: Mapping[str, float], *, persist: bool = True) -> int:
        """Hold every subject until the later of its times: in force when it returns, and
        persisted by then too unless `persist` is False (the caller then calls `save` soon)."""
        now = self._clock()
        added = 0
        for subject, until in subjects.items():
            if until <= now or self._subjects.get(subject, -math.inf) >= until:
                continue
            if subject not in self._subjects and len(self._subjects) >= self._max:
                log.error("learned revocations full (%d): %r not held", self._max, subject)
                continue
            self._subjects[subject] = until
            added += 1
        if added:
            self._subjects = {s: u for s, u in self._subjects.items() if u > now}
            if persist:
                self.save()
        return added

    def save(self) -> None:
        document = json.dumps({"subjects": self._subjects, "jtis": {}}, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, document.encode())


class AnyRevocations:
    """Revoked if any of the lists says so (the operators' file, what Redis taught this signer)."""

    def __init__(self, *lists: RevocationSource) -> None:
        self._lists = lists

    def subject_revoked(self, subject: str) -> bool:
        return any(source.subject_revoked(subject) for source in self._lists)


class RevocationSource(Protocol):
    def subject_revoked(self, subject: str) -> bool: ...


class RedisRevocationFollower:
    """Learns the subjects the gateways revoke: Redis announcements as they are published, and
    the whole sorted set whenever its version marker changes (polled every `poll_seconds`, so a
    missed announcement is caught within that). Needs only read access: ZRANGEBYSCORE and GET on
    keymint:revoked:*, SUBSCRIBE to keymint:events (an ACL user of its own; see
    docs/operations.md)."""

    def __init__(
        self,
        client: Redis,
        learned: LearnedRevocations,
        *,
        where: str,
        poll_seconds: float = 0.5,
    ) -> None:
        self._client = client
        self._learned = learned
        self._where = where
        self._poll_seconds = poll_seconds
        self._seen: object = b"\0never"
        self._failing = False
        self._save_pending: asyncio.TimerHandle | None = None
        from redis.exceptions import RedisError  # an optional dependency: only with Redis

        self._failures: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

    async def poll_once(self) -> bool:
        try:
            version = await self._client.get(REVOKED_VERSION_KEY)
            if version != self._seen:
                entries: list[Any] = await self._client.zrangebyscore(
                    REVOKED_KEYS["subject"], self._learned_floor(), "+inf", withscores=True
                )
                self._learned.merge({_text(v): float(u) for v, u in entries})
                self._seen = version
        except self._failures as exc:
            if not self._failing:
                log.warning("revocations from %s unreachable: %s", self._where, exc)
            self._failing = True
            return False
        if self._failing:
            log.warning("revocations from %s reachable again", self._where)
        self._failing = False
        return True

    def _learned_floor(self) -> str:
        return f"({time.time()}"

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen())
        try:
            while True:
                await self.poll_once()
                await asyncio.sleep(self._poll_seconds)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            if self._save_pending is not None:  # what was announced last is kept too
                self._save_pending.cancel()
                self._save_now()

    async def _listen(self) -> None:
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(EVENTS_CHANNEL)
                self._seen = b"\0resync"  # what was announced while unsubscribed: re-read
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self._apply(message.get("data"))
            except self._failures as exc:
                log.debug("revocation announcements from %s interrupted: %s", self._where, exc)
            finally:
                with contextlib.suppress(*self._failures):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(self._poll_seconds)

    def _save_later(self) -> None:
        """One write of the file for a burst of announcements: each write is the whole file
        (7.5 ms with 6,000 entries), and one per announcement stalled signing in a burst."""
        if self._save_pending is None:
            loop = asyncio.get_running_loop()
            self._save_pending = loop.call_later(SAVE_DELAY_SECONDS, self._save_now)

    def _save_now(self) -> None:
        self._save_pending = None
        try:
            self._learned.save()
        except OSError as exc:  # in force in memory all the same; the next burst tries again
            log.warning("learned revocations not written to %s: %s", self._learned.path, exc)

    def _apply(self, data: object) -> None:
        try:
            document = json.loads(data)  # type: ignore[arg-type]
            if document.get("kind") != "subject":
                return
            value, until = document["value"], float(document["until"])
        except (ValueError, TypeError, KeyError, AttributeError):
            return
        fresh = isinstance(value, str) and math.isfinite(until)
        if fresh and self._learned.merge({value: until}, persist=False):
            self._save_later()


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
