"""Group keys over time: the one tokens are signed with, the next one, and the retiring ones.

Rotation without downtime, in three steps an operator (or the admin API) drives:
1. `publish(coordinator)`: a new signer group, fresh from its DKG, joins the ring. Its key is in
   the JWKS from now on, but nothing is signed with it yet, so verifiers' caches can catch up.
2. `activate()`: once the new key has been published for at least `publish_lead_seconds`, minting
   switches to it. The old key stays in the JWKS until the last token it signed has expired
   (activation time + the longest lifetime a token can have).
3. Retired keys drop out of the JWKS on their own; their coordinators are closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from extauthz.errors import ExtAuthzError
from extauthz.mint import SignResult
from signer.coordinator import Coordinator
from signer.proto import signer_pb2
from signer.token import TokenFormatError, kid_for, parse_signing_input


class RotationError(ExtAuthzError):
    """A rotation step was asked for out of order; the message says what to do first."""


@dataclass
class _Key:
    coordinator: Coordinator
    published_at: float
    retire_at: float | None = None  # set when it stops being the active key

    @property
    def public_key(self) -> bytes:
        return next(iter(self.coordinator.packages.values())).group_public_key


class KeyRing:
    def __init__(
        self,
        active: Coordinator,
        *,
        max_token_ttl_seconds: int,
        publish_lead_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._active = _Key(active, clock())
        self._next: _Key | None = None
        self._retiring: list[_Key] = []
        self._max_ttl = max_token_ttl_seconds
        self._lead = publish_lead_seconds

    @property
    def active(self) -> Coordinator:
        return self._active.coordinator

    @property
    def active_key(self) -> bytes:
        return self._active.public_key

    def published_keys(self) -> list[bytes]:
        """Every key that may verify a live token or soon will: active, next, retiring."""
        now = self._clock()
        keys = [self._active.public_key]
        if self._next is not None:
            keys.append(self._next.public_key)
        keys.extend(k.public_key for k in self._retiring if k.retire_at and k.retire_at > now)
        return keys

    def publish(self, coordinator: Coordinator) -> bytes:
        if self._next is not None:
            raise RotationError("a next key is already published; activate it first")
        if _Key(coordinator, 0).public_key in self.published_keys():
            raise RotationError("that group key is already in the ring")
        self._next = _Key(coordinator, self._clock())
        return self._next.public_key

    def activate(self) -> bytes:
        if self._next is None:
            raise RotationError("no next key: publish one first")
        waited = self._clock() - self._next.published_at
        if waited < self._lead:
            raise RotationError(
                f"the next key has been published for {waited:.0f}s; verifiers may not have it "
                f"yet: wait {self._lead - waited:.0f}s more"
            )
        old = self._active
        old.retire_at = self._clock() + self._max_ttl
        self._retiring.append(old)
        self._active, self._next = self._next, None
        return self._active.public_key

    async def prune(self) -> list[bytes]:
        """Close the coordinators of keys whose last token has expired; returns their keys."""
        now = self._clock()
        done = [k for k in self._retiring if k.retire_at is not None and k.retire_at <= now]
        self._retiring = [k for k in self._retiring if k not in done]
        for key in done:
            await key.coordinator.close()
        return [k.public_key for k in done]

    def ready(self) -> bool:
        return self._active.coordinator.ready()

    async def sign(
        self,
        message: bytes,
        *,
        evidence: signer_pb2.Evidence | None = None,
        request_id: str = "",
        timeout: float = 2.0,
    ) -> SignResult:
        """Sign with the group the message's header names, so a mint that started just before an
        activation still completes under the key it was built for."""
        coordinator = self._coordinator_for(message)
        return await coordinator.sign(
            message, evidence=evidence, request_id=request_id, timeout=timeout
        )

    def _coordinator_for(self, message: bytes) -> Coordinator:
        try:
            kid = parse_signing_input(message).header.get("kid")
        except TokenFormatError:
            return self._active.coordinator  # its guard will refuse the message, with a reason
        for key in [self._active, *([self._next] if self._next else []), *self._retiring]:
            if kid_for(key.public_key) == kid:
                return key.coordinator
        return self._active.coordinator

    async def close(self) -> None:
        for key in [self._active, *([self._next] if self._next else []), *self._retiring]:
            await key.coordinator.close()
