"""Keeps this process's in-memory views (revocations, the key ring) in step with the store, and
says whether they are fresh enough to serve from.

Two paths bring changes in:
- announcements (Redis pub/sub): a revocation made through any replica is applied here as soon as
  it is published, in milliseconds;
- a poll every `sync_seconds` of the store's version markers, which re-reads whatever changed. It
  catches what an interrupted subscription missed, and each poll that succeeds is a sync.

`fresh()` is False once the last successful sync is more than `max_staleness_seconds` old: the
pipeline then serves nothing (503 shared_state_unavailable) rather than decide on revocations it
can no longer confirm. When the store answers again the next poll re-reads everything, pushes back
what this process holds that the store lost (a Redis restarted empty, revocations made here while it
was down), and the process serves again: no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from extauthz.server.limits import KIND_OF, Revocations, StateUnavailable
from extauthz.server.state.base import RevocationSnapshot, StateStore, Versions

log = logging.getLogger(__name__)

NEVER = Versions("\0never", "\0never")


@dataclass(frozen=True, slots=True)
class StateSettings:
    sync_seconds: float = 0.5  # KEYMINT_STATE_SYNC_SECONDS
    max_staleness_seconds: float = 5.0  # KEYMINT_STATE_MAX_STALENESS_SECONDS

    def __post_init__(self) -> None:
        if not 0 < self.sync_seconds < self.max_staleness_seconds:
            raise ValueError("the sync interval must be positive and below the staleness bound")


class SharedState:
    def __init__(
        self,
        store: StateStore,
        revocations: Revocations,
        settings: StateSettings | None = None,
        *,
        on_keyring: Callable[[], Awaitable[None]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.revocations = revocations
        self.settings = settings or StateSettings()
        self.on_keyring = on_keyring
        self._monotonic = monotonic
        self._last_sync = -math.inf
        self._seen = NEVER
        self._pending: dict[tuple[str, str], float] = {}
        self._wake = asyncio.Event()
        self._failing_since: float | None = None
        revocations.recorder = self._record

    def fresh(self) -> bool:
        return self._monotonic() - self._last_sync <= self.settings.max_staleness_seconds

    @property
    def sync_age(self) -> float:
        """Seconds since the last successful sync (inf before the first)."""
        return self._monotonic() - self._last_sync

    async def _record(self, kind: str, value: str, until: float) -> None:
        try:
            await self.store.add_revocation(kind, value, until)
        except StateUnavailable:
            # Held here already; pushed to the store by the first sync that reaches it.
            key = (kind, value)
            self._pending[key] = max(until, self._pending.get(key, -math.inf))
            raise

    async def sync_once(self) -> bool:
        """One poll; True when the store answered and this process's views are now current."""
        started = self._monotonic()
        try:
            await self._flush_pending()
            versions = await self.store.versions()
            if versions.revocations != self._seen.revocations:
                snapshot = await self.store.revocations()
                self.revocations.merge(snapshot)
                await self._push_missing(snapshot)
            if versions.keyring != self._seen.keyring and self.on_keyring is not None:
                await self._adopt_keyring()
        except StateUnavailable as exc:
            if self._failing_since is None:
                self._failing_since = started
                log.warning(
                    "shared state at %s unreachable (%s): serving from memory for at most %.1f s "
                    "after the last sync, then refusing with 503 until it answers",
                    self.store.where,
                    exc.detail,
                    self.settings.max_staleness_seconds,
                )
            return False
        self._seen = versions
        self._last_sync = started
        if self._failing_since is not None:
            log.warning(
                "shared state at %s reachable again after %.1f s",
                self.store.where,
                started - self._failing_since,
            )
            self._failing_since = None
        return True

    async def _adopt_keyring(self) -> None:
        assert self.on_keyring is not None
        try:
            await self.on_keyring()
        except StateUnavailable:
            raise
        except Exception:  # a ring that does not verify: keep the one in force, say so
            log.exception("key ring in %s not adopted; the one in force stays", self.store.where)

    async def _flush_pending(self) -> None:
        while self._pending:
            (kind, value), until = next(iter(self._pending.items()))
            await self.store.add_revocation(kind, value, until)
            del self._pending[(kind, value)]

    async def _push_missing(self, snapshot: RevocationSnapshot) -> None:
        """Give back to the store what this process holds and the store does not (it lost it)."""
        held = self.revocations.snapshot()
        for kind, name in KIND_OF.items():
            stored = snapshot.get(name, {})
            for value, until in held[name].items():
                if stored.get(value, -math.inf) < until:
                    await self.store.add_revocation(kind, value, until)

    async def run(self) -> None:
        """Poll and listen until cancelled."""
        listener = asyncio.create_task(self._listen())
        try:
            while True:
                await self.sync_once()
                self._wake.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow this task's
                # cancellation when the wake-up comes in the same turn (CPython gh-86296), and
                # this loop would then never end.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.sync_seconds):
                        await self._wake.wait()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self) -> None:
        events = self.store.events()
        if events is None:
            return
        async for event in events:
            if event.kind in KIND_OF:
                self.revocations.add(event.kind, event.value, event.until)
            else:  # a new key ring, or announcements were missed: poll now
                if event.kind == "resync":
                    self._seen = NEVER
                self._wake.set()
