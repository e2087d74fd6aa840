"""What a state store offers; its two implementations are `LocalStore` and `RedisStore`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from extauthz.errors import ExtAuthzError

RevocationSnapshot = dict[str, dict[str, float]]  # {"subjects": {value: until}, "jtis": {...}}


class KeyRingConflict(ExtAuthzError):
    """The key ring changed in the store since this process read it; re-read and retry."""


@dataclass(frozen=True, slots=True)
class Versions:
    """Opaque markers that change whenever the store's revocations or key ring change."""

    revocations: str
    keyring: str


@dataclass(frozen=True, slots=True)
class Event:
    """A change another process announced: a revocation (kind, value, until) or a new key ring,
    or `resync` after the announcements were interrupted (some may have been missed)."""

    kind: str  # "subject", "jti", "keyring" or "resync"
    value: str = ""
    until: float = 0.0


class StateStore(Protocol):
    @property
    def shared(self) -> bool: ...  # True: other hosts read and write it (Redis)

    @property
    def where(self) -> str: ...  # for log lines, never a credential

    async def add_revocation(self, kind: str, value: str, until: float) -> None: ...

    async def revocations(self) -> RevocationSnapshot: ...

    async def versions(self) -> Versions: ...

    async def load_keyring(self) -> tuple[str | None, str]: ...  # (document, version)

    async def save_keyring(self, document: str, expected_version: str) -> str:
        """Store `document` if the ring is still at `expected_version` ("" for none yet); the new
        version. KeyRingConflict if another process changed it first."""
        ...

    async def take(self, key: str, want: int, rate: float, burst: int) -> tuple[int, float]: ...

    def events(self) -> AsyncIterator[Event] | None: ...  # None: the store announces nothing

    async def close(self) -> None: ...
