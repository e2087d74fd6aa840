"""Per-identity rate limits and revocation of tokens and subjects, both honoured at once.

Rate limits count per identity, not per credential (`rate_key`): a CI job that fetches a fresh OIDC
token for every step stays in one bucket. With several replicas or workers the buckets live in a
shared store (`extauthz.server.state`), taken from atomically; `SharedRateLimiter` leases a few
tokens at a time from it so that a hot identity costs a store round trip per lease, not per request,
and every request it accepts was taken from the one shared bucket: across replicas the accepted
count stays within burst + rate x time.

`Revocations` is the in-memory view the hot path reads (no I/O). It only grows until entries
expire: a revocation is never lifted early, whatever a store later says.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from extauthz.errors import ExtAuthzError
from extauthz.model import Identity, IdentityKind

log = logging.getLogger(__name__)

KINDS = ("subjects", "jtis")  # the members of a revocation snapshot, in the file's shape
KIND_OF = {"subject": "subjects", "jti": "jtis"}


class StateUnavailable(ExtAuthzError):
    """The shared store could not be reached; `detail` says which operation failed."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


def rate_key(identity: Identity) -> str:
    """Whose bucket a request counts against: for GitHub Actions the repository (by id) and the
    workflow file, so every step and every run of one workflow share a bucket; otherwise the
    subject (a SPIFFE ID, a certificate's subject)."""
    if identity.kind is IdentityKind.GITHUB_ACTIONS:
        claims = identity.claims
        workflow = claims.get("workflow_ref") or claims.get("job_workflow_ref") or ""
        workflow = workflow.partition("@")[0] or claims.get("workflow", "")
        return "\x1f".join(
            ("github", identity.issuer, claims.get("repository_id", identity.subject), workflow)
        )
    return "\x1f".join(("subject", identity.kind.value, identity.subject))


class RateLimiter:
    """A token bucket per key, in this process, bounded in how many keys it tracks."""

    def __init__(
        self,
        *,
        rate_per_second: float,
        burst: int,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate_per_second
        self._burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, key: str) -> tuple[bool, int]:
        """(allowed, seconds until a request would be allowed)."""
        granted, retry_after = self.take(key, 1)
        return granted == 1, retry_after

    def take(self, key: str, want: int) -> tuple[int, int]:
        """Up to `want` tokens for `key`: (granted, seconds until one more would be)."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        granted = min(want, int(tokens))
        tokens -= granted
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        retry_after = 0 if granted else max(1, math.ceil((1.0 - tokens) / self._rate))
        return granted, retry_after


class BucketStore(Protocol):
    """Atomic token buckets shared by every replica or worker (`extauthz.server.state`)."""

    async def take(self, key: str, want: int, rate: float, burst: int) -> tuple[int, float]:
        """Up to `want` tokens from `key`'s bucket: (granted, seconds until one more would be)."""
        ...


@dataclass
class _Lease:
    tokens: int
    expires: float
    size: int


class SharedRateLimiter:
    """Token buckets in a shared store, leased a few tokens at a time.

    A lease holds at most `max_lease` tokens for `lease_seconds`; what is left when it lapses is
    dropped, never returned, so the store's bucket bounds every replica's acceptances together.
    A lease starts at one token and doubles while the identity keeps using them up, so a quiet
    identity never holds tokens other replicas could use. When the store cannot be reached, the
    limiter falls back to `fallback`, this process's own buckets, until it answers again.
    """

    def __init__(
        self,
        store: BucketStore,
        *,
        rate_per_second: float,
        burst: int,
        fallback: RateLimiter,
        max_lease: int | None = None,
        lease_seconds: float = 0.25,
        max_keys: int = 100_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._rate = rate_per_second
        self._burst = burst
        self._fallback = fallback
        # A tenth of the burst at most: several replicas leasing at once still leave most of it.
        self._max_lease = max_lease or max(1, min(64, burst // 10))
        self._lease_seconds = lease_seconds
        self._max_keys = max_keys
        self._monotonic = monotonic
        self._leases: OrderedDict[str, _Lease] = OrderedDict()
        self._renewing: dict[str, asyncio.Future[tuple[bool, int] | None]] = {}
        self._waiting: dict[str, int] = {}  # requests waiting on each renewal
        self.store_errors = 0

    async def allow(self, key: str) -> tuple[bool, int]:
        # One store round trip per key at a time: a request that finds the lease spent while
        # another renews it waits for that renewal and spends from it, instead of leasing (and,
        # all but the last, dropping) tokens of its own; a renewal refused refuses its waiters.
        while not self._spend(key):
            renewing = self._renewing.get(key)
            if renewing is None:
                return await self._renew_once(key)
            self._waiting[key] = self._waiting.get(key, 0) + 1
            try:
                refused = await asyncio.shield(renewing)
            finally:
                if self._waiting[key] <= 1:
                    del self._waiting[key]
                else:
                    self._waiting[key] -= 1
            if refused is not None:
                return refused
        return True, 0

    async def _renew_once(self, key: str) -> tuple[bool, int]:
        done: asyncio.Future[tuple[bool, int] | None] = asyncio.get_running_loop().create_future()
        self._renewing[key] = done
        answer: tuple[bool, int] | None = None
        try:
            answer = await self._renew(key)
            return answer
        finally:
            if self._renewing.get(key) is done:
                del self._renewing[key]
            done.set_result(answer if answer is not None and not answer[0] else None)

    def _spend(self, key: str) -> bool:
        lease = self._leases.get(key)
        if lease is not None and lease.tokens > 0 and lease.expires > self._monotonic():
            lease.tokens -= 1
            return True
        return False

    async def _renew(self, key: str) -> tuple[bool, int]:
        now = self._monotonic()
        lease = self._leases.get(key)
        size = 1
        if lease is not None and lease.expires > now - self._lease_seconds:
            size = min(self._max_lease, lease.size * 2)  # used up while fresh: lease more
        # Enough for this request and those waiting on this renewal, within the lease's bound.
        size = max(size, min(self._max_lease, 1 + self._waiting.get(key, 0)))
        try:
            granted, wait = await self._store.take(key, size, self._rate, self._burst)
        except StateUnavailable:
            self.store_errors += 1
            return self._fallback.allow(key)
        self._leases.pop(key, None)
        self._leases[key] = _Lease(max(0, granted - 1), now + self._lease_seconds, size)
        if len(self._leases) > self._max_keys:
            self._leases.popitem(last=False)
        if granted:
            return True, 0
        return False, max(1, math.ceil(wait))


class Limiter(Protocol):
    async def allow(self, key: str) -> tuple[bool, int]: ...


class LocalLimiter:
    """`RateLimiter` behind the asynchronous interface the pipeline uses."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def allow(self, key: str) -> tuple[bool, int]:
        return self._limiter.allow(key)


Recorder = Callable[[str, str, float], Awaitable[None]]


class Revocations:
    """Revoked token ids and subjects, each until a set time: the hot path's view, no I/O.

    `revoke` also hands the revocation to `recorder` (the shared store), which may raise
    StateUnavailable after this view already holds it."""

    def __init__(
        self, *, clock: Callable[[], float] = time.time, recorder: Recorder | None = None
    ) -> None:
        self._clock = clock
        self._jtis: dict[str, float] = {}
        self._subjects: dict[str, float] = {}
        self.recorder = recorder

    async def revoke(self, kind: str, value: str, until: float) -> None:
        """Revoke here at once, then in the shared store (StateUnavailable if it is down)."""
        self.add(kind, value, until)
        if self.recorder is not None:
            await self.recorder(kind, value, until)

    def revoke_jti(self, jti: str, until: float) -> None:
        self.add("jti", jti, until)

    def revoke_subject(self, subject: str, until: float) -> None:
        self.add("subject", subject, until)

    def add(self, kind: str, value: str, until: float) -> bool:
        """Hold `value` revoked until `until` (the later one wins); True if that is news."""
        if kind not in KIND_OF:
            raise ValueError(f"unknown revocation kind {kind!r}")
        table = self._jtis if kind == "jti" else self._subjects
        if table.get(value, -math.inf) >= until:
            return False
        table[value] = until
        return True

    def merge(self, snapshot: Mapping[str, Mapping[str, float]]) -> int:
        """Add each entry of a snapshot {"subjects": {...}, "jtis": {...}}; how many are new."""
        added = 0
        for kind, name in KIND_OF.items():
            for value, until in snapshot.get(name, {}).items():
                added += self.add(kind, value, until)
        self.prune()
        return added

    def prune(self) -> None:
        now = self._clock()
        for table in (self._jtis, self._subjects):
            for value in [v for v, until in table.items() if until <= now]:
                del table[value]

    def jti_revoked(self, jti: str) -> bool:
        return self._live(self._jtis, jti)

    def subject_revoked(self, subject: str) -> bool:
        return self._live(self._subjects, subject)

    def snapshot(self) -> dict[str, dict[str, float]]:
        now = self._clock()
        return {
            "jtis": {k: v for k, v in self._jtis.items() if v > now},
            "subjects": {k: v for k, v in self._subjects.items() if v > now},
        }

    def _live(self, table: dict[str, float], key: str) -> bool:
        until = table.get(key)
        if until is None:
            return False
        if until <= self._clock():
            del table[key]
            return False
        return True
