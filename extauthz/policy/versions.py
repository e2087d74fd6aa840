"""The policy versions a signer's guard honours: the one in force, and those just replaced.

The gateway names the version it decided under (`PolicySnapshot.digest`) in every sign request,
and the guard decides under that same version or refuses. Gateways and signers read their policy
files independently, so during a rollout they disagree for a while, in either order:
- the gateway has the new version first: the signer re-reads its files at once and finds it;
- the signer has it first: it keeps the version it replaced for `overlap_seconds`.
Either way no mint fails while the files converge. The price is that a gateway may keep using a
replaced policy for `overlap_seconds` after the signers have the new one; a revocation, not a
policy edit, is the tool for an emergency.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from extauthz.policy.engine import PolicyEngine, PolicySnapshot

log = logging.getLogger(__name__)

DEFAULT_OVERLAP_SECONDS = 300.0
DEFAULT_POLL_SECONDS = 2.0


@dataclass(slots=True)
class _Replaced:
    snapshot: PolicySnapshot
    until: float


class PolicyVersions:
    """Snapshots of `engine` by digest: the current one, and replaced ones for a while."""

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if overlap_seconds < 0 or poll_seconds <= 0:
            raise ValueError("overlap_seconds must be >= 0 and poll_seconds > 0")
        self._engine = engine
        self._overlap = overlap_seconds
        self._poll_seconds = poll_seconds
        self._clock = clock
        self._current = engine.snapshot()
        self._replaced: dict[str, _Replaced] = {}
        self._polled_at = clock()

    @property
    def current(self) -> PolicySnapshot:
        return self._current

    def snapshot_for(self, digest: str) -> PolicySnapshot | None:
        """The snapshot named `digest`, re-reading the files if it is not known yet; or None."""
        self._refresh(force=False)
        found = self._find(digest)
        if found is None and digest:
            self._refresh(force=True)  # the gateway may have read a new file before us
            found = self._find(digest)
        return found

    def _find(self, digest: str) -> PolicySnapshot | None:
        if digest == self._current.digest:
            return self._current
        replaced = self._replaced.get(digest)
        if replaced is None or replaced.until <= self._clock():
            return None
        return replaced.snapshot

    def _refresh(self, *, force: bool) -> None:
        now = self._clock()
        if not force and now - self._polled_at < self._poll_seconds:
            return
        self._polled_at = now
        self._engine.poll()
        latest = self._engine.snapshot()
        if latest.digest != self._current.digest:
            log.info(
                "policy version %s in force; %s honoured for %.0fs more",
                latest.digest[:12],
                self._current.digest[:12],
                self._overlap,
            )
            self._replaced[self._current.digest] = _Replaced(self._current, now + self._overlap)
            self._replaced.pop(latest.digest, None)
            self._current = latest
        for digest in [d for d, r in self._replaced.items() if r.until <= now]:
            del self._replaced[digest]
