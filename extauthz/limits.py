"""Per-identity rate limits and revocation of tokens and subjects, both honoured at once."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    """A token bucket per key (the caller's credential hash), bounded in how many keys it tracks."""

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
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        retry_after = 0 if allowed else max(1, int((1.0 - tokens) / self._rate + 0.999))
        return allowed, retry_after


class Revocations:
    """Revoked token ids (until the token would have expired) and subjects (until a set time)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._jtis: dict[str, float] = {}
        self._subjects: dict[str, float] = {}

    def revoke_jti(self, jti: str, until: float) -> None:
        self._jtis[jti] = until

    def revoke_subject(self, subject: str, until: float) -> None:
        self._subjects[subject] = until

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
