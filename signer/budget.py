"""How many tokens one piece of evidence may back: a signer-local budget per credential.

A compromised gateway sees every credential that passes through it. Without a budget, one OIDC
token or one certificate it has seen would back an unlimited number of mints for as long as the
credential lives. Each signer counts, per credential, the signature shares it agreed to in a
sliding window and refuses past `limit`. Honest traffic stays far below: the gateway caches a token
per (credential, audience, scopes) and re-mints near the end of its lifetime.

Since a token needs t shares and each of the n signers keeps its own count, a party that holds the
gateway gets at most floor(n * limit / t) tokens per credential per window.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from signer.errors import SignerError

DEFAULT_LIMIT = 32
DEFAULT_WINDOW_SECONDS = 900
MAX_TRACKED = 100_000  # credentials remembered at once; the oldest are forgotten first


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    limit: int = DEFAULT_LIMIT
    window_seconds: float = DEFAULT_WINDOW_SECONDS

    def __post_init__(self) -> None:
        if type(self.limit) is not int or self.limit <= 0:
            raise SignerError("the evidence budget must be a positive integer")
        if not self.window_seconds > 0:
            raise SignerError("the evidence budget window must be positive")


class EvidenceBudget:
    """Signature shares per credential in a sliding window; `spend` says whether one more fits."""

    def __init__(
        self,
        settings: BudgetSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self.settings = settings or BudgetSettings()
        self._clock = clock
        self._max_tracked = max_tracked
        self._spent: OrderedDict[bytes, deque[float]] = OrderedDict()

    def spend(self, credential: bytes, now: float | None = None) -> bool:
        """Count one share for `credential` (a digest naming it) if the budget allows it."""
        now = self._clock() if now is None else now
        times = self._spent.get(credential)
        if times is None:
            times = self._spent[credential] = deque()
        else:
            self._spent.move_to_end(credential)
        horizon = now - self.settings.window_seconds
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) >= self.settings.limit:
            return False
        times.append(now)
        # Least recently used first: a credential with no share left in the window counts for
        # nothing and is forgotten (one seen once, like a CI step's token, does not stay until
        # the bound pushes it out).
        while len(self._spent) > self._max_tracked or (
            self._spent and next(iter(self._spent.values()))[-1] <= horizon
        ):
            self._spent.popitem(last=False)
        return True

    @property
    def tracked(self) -> int:
        """Credentials with shares counted in the window (or not yet forgotten)."""
        return len(self._spent)

    def remaining(self, credential: bytes, now: float | None = None) -> int:
        now = self._clock() if now is None else now
        horizon = now - self.settings.window_seconds
        used = sum(1 for t in self._spent.get(credential, ()) if t > horizon)
        return max(0, self.settings.limit - used)
