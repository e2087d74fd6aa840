"""Start-up without the dependencies: the gateway serves at once and becomes ready when they are.

A gateway starts its listeners before it has reached anything: signers, Redis and OIDC issuers
may be down, as they are when a cluster starts cold. In the background `Startup.run` tries, with
back-off (0.1 s doubling to 0.5 s), to learn the group keys from the signers (the coordinator adopts
a key only when t agree) and to load the key ring (verified from the pinned trust root, its active
key held by t signers); until both hold, every Check and `/token` is a 503 `not_ready`, and so is
the JWKS.
Once the key ring is loaded the gateway is ready as soon as t signers can sign with the active key
and the shared state is fresh. No restart is needed at any point, and none of these failures stops
the process: a pod that crash-loops tells no one anything, a pod that says what it waits for does.

`Readiness.report()` says, per dependency, whether it is there and why not; /readyz serves it and
gRPC health carries one status per dependency (`keymint.signers`, `keymint.key_ring`,
`keymint.shared_state`) beside the Check service's own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extauthz.errors import ExtAuthzError
from extauthz.identity.jwks import fetch_status
from extauthz.server.keyring import KeyRing, RotationError
from extauthz.server.mint import SignResult
from extauthz.server.state import SharedState, StateStore
from signer.coordinator import Coordinator
from signer.endorsement import TrustRoot
from signer.proto import signer_pb2

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 0.1
MAX_RETRY_SECONDS = 0.5  # a quorum that comes up is found within half a second (and a round trip)
DEPENDENCIES = ("signers", "key_ring", "shared_state")


class NotStarted(RotationError):
    """The key ring is not loaded yet: the gateway is starting (see /readyz)."""

    def __init__(self) -> None:
        super().__init__("the gateway is starting: the key ring is not loaded yet (see /readyz)")


class KeyRingSlot:
    """The key ring once start-up has loaded it. Before then it publishes no key, signs nothing
    and refuses rotations; after, it is the ring itself."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self._ring: KeyRing | None = None

    @property
    def loaded(self) -> bool:
        return self._ring is not None

    @property
    def ring(self) -> KeyRing:
        if self._ring is None:
            raise NotStarted()
        return self._ring

    def set(self, ring: KeyRing) -> None:
        self._ring = ring

    # What the pipeline, the HTTP edge and the admin routes use of a KeyRing.

    @property
    def root(self) -> TrustRoot:
        return self.ring.root

    @property
    def active_kid(self) -> str:
        return self.ring.active_kid

    @property
    def active_key(self) -> bytes:
        return self.ring.active_key

    @property
    def next_kid(self) -> str | None:
        return self.ring.next_kid

    @property
    def endorsements(self) -> list[str]:
        return self.ring.endorsements

    def published_kids(self) -> list[str]:
        return self.ring.published_kids() if self._ring is not None else []

    def published_keys(self) -> list[bytes]:
        return self.ring.published_keys() if self._ring is not None else []

    def endorsements_document(self) -> dict[str, object]:
        return self.ring.endorsements_document()

    def ready(self) -> bool:
        return self._ring is not None and self._ring.ready()

    async def sign(
        self,
        message: bytes,
        *,
        evidence: signer_pb2.Evidence | None = None,
        request_id: str = "",
        timeout: float = 2.0,
    ) -> SignResult:
        return await self.ring.sign(
            message, evidence=evidence, request_id=request_id, timeout=timeout
        )

    async def adopt(self) -> bool:
        return await self._ring.adopt() if self._ring is not None else False

    async def prune(self) -> list[bytes]:
        return await self._ring.prune() if self._ring is not None else []

    async def publish(self, kid: str, jwk: Mapping[str, Any] | None = None) -> bytes:
        return await self.ring.publish(kid, jwk)

    async def activate(self) -> bytes:
        return await self.ring.activate()

    async def close(self) -> None:
        await self.coordinator.close()


@dataclass
class Dependency:
    ready: bool
    detail: str

    def document(self) -> dict[str, object]:
        return {"ready": self.ready, "detail": self.detail}


class Startup:
    """Learns the keys and loads the key ring, retrying until both hold and `vet` accepts the
    ring (`run`); what `vet` raises is the reason /readyz gives meanwhile."""

    def __init__(
        self,
        *,
        slot: KeyRingSlot,
        root: TrustRoot,
        store: StateStore,
        cache: Path | None,
        max_token_ttl_seconds: int,
        publish_lead_seconds: float,
        clock: Callable[[], float] = time.time,
        vet: Callable[[KeyRing], None],
        on_loaded: Callable[[KeyRing], None] = lambda ring: None,
        first_retry: float = FIRST_RETRY_SECONDS,
        max_retry: float = MAX_RETRY_SECONDS,
    ) -> None:
        self._slot = slot
        self._root = root
        self._store = store
        self._cache = cache
        self._max_ttl = max_token_ttl_seconds
        self._lead = publish_lead_seconds
        self._clock = clock
        self._vet = vet
        self._on_loaded = on_loaded
        self._first_retry = first_retry
        self._max_retry = max_retry
        self.attempts = 0
        self.last_problem = "not tried yet"

    async def run(self) -> KeyRing:
        """Try until the key ring is loaded; then start filling the signers' nonce pools."""
        delay = self._first_retry
        said = ""
        while True:
            self.attempts += 1
            try:
                ring = await self._attempt()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever it is, the gateway keeps trying and says why
                self.last_problem = _describe(exc)
                if self.last_problem != said:
                    log.warning(
                        "not ready: %s; retrying every %.1f s at most",
                        self.last_problem,
                        self._max_retry,
                    )
                    said = self.last_problem
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry)
                continue
            self._slot.set(ring)
            self._slot.coordinator.keep_filled()
            self.last_problem = ""
            log.info(
                "key ring loaded after %d attempt(s): minting with group key %s",
                self.attempts,
                ring.active_kid,
            )
            self._on_loaded(ring)
            return ring

    async def _attempt(self) -> KeyRing:
        coordinator = self._slot.coordinator
        await coordinator.refresh_keys()  # KeyAgreementError: no key that t signers agree on
        ring = await KeyRing.load(
            coordinator,
            self._root,
            store=self._store,
            cache=self._cache,
            max_token_ttl_seconds=self._max_ttl,
            publish_lead_seconds=self._lead,
            clock=self._clock,
        )
        self._vet(ring)  # raises while the ring must not be used (its key's threshold)
        return ring


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ExtAuthzError) or type(exc).__module__.startswith("signer"):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Readiness:
    """Whether the gateway can serve, and per dependency why not."""

    def __init__(self, *, slot: KeyRingSlot, state: SharedState, startup: Startup) -> None:
        self._slot = slot
        self._state = state
        self._startup = startup

    def ready(self) -> bool:
        return self._slot.ready() and self._state.fresh()

    def dependencies(self) -> dict[str, Dependency]:
        coordinator = self._slot.coordinator
        health = coordinator.health()
        up = sorted(i for i, status in health.items() if status == "up")
        if self._slot.loaded:
            usable, needed = coordinator.quorum(self._slot.active_kid)
            signers = Dependency(
                usable >= needed,
                f"{usable} signer(s) can sign with key {self._slot.active_kid}, {needed} needed "
                f"(signers up: {', '.join(map(str, up)) or 'none'})",
            )
            key_ring = Dependency(True, f"active key {self._slot.active_kid}")
        else:
            problem = self._startup.last_problem
            signers = Dependency(False, f"waiting for the signers to agree on a key: {problem}")
            key_ring = Dependency(
                False, f"not loaded after {self._startup.attempts} attempt(s): {problem}"
            )
        fresh = self._state.fresh()
        age = self._state.sync_age
        shared = Dependency(
            fresh,
            f"{self._state.store.where}: "
            + (f"last synced {age:.1f} s ago" if age != float("inf") else "not reached yet"),
        )
        return {"signers": signers, "key_ring": key_ring, "shared_state": shared}

    def report(self) -> dict[str, object]:
        """/readyz's document: the status, each dependency, and the token issuers' JWKS (these
        do not decide readiness: one issuer down must not stop the others' callers)."""
        dependencies = self.dependencies()
        ready = self.ready()
        document: dict[str, object] = {
            "status": "ready" if ready else "not_ready",
            "dependencies": {name: d.document() for name, d in dependencies.items()},
            "issuers": fetch_status(),
        }
        if not ready:
            waiting = [name for name, d in dependencies.items() if not d.ready]
            document["reason"] = self.reason()
            document["detail"] = f"waiting for: {', '.join(waiting) or 'the signers'}"
        return document

    def reason(self) -> str:
        """Why not ready, as a stable code: starting (the key ring is not loaded),
        shared_state_unavailable, or no_signing_quorum."""
        if not self._slot.loaded:
            return "starting"
        if not self._state.fresh():
            return "shared_state_unavailable"
        return "no_signing_quorum"


async def watch_health(
    readiness: Readiness,
    set_status: Callable[[str, bool], Any],
    *,
    interval: float = 0.1,
) -> None:
    """Keep gRPC health in step with `readiness`: the Check service and "" are SERVING exactly
    when the gateway is ready; each dependency has its own service name, keymint.<name>."""
    from extauthz.server.grpc_edge import SERVICE

    last: dict[str, bool] = {}
    while True:
        dependencies = readiness.dependencies()
        ready = readiness.ready()
        statuses = {
            SERVICE: ready,
            "": ready,
            **{f"keymint.{name}": d.ready for name, d in dependencies.items()},
        }
        for name, serving in statuses.items():
            if last.get(name) is not serving:
                await set_status(name, serving)
                last[name] = serving
        await asyncio.sleep(interval)
