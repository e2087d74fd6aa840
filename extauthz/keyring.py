"""Group keys over time, each one endorsed by t signers, chained from the root operators pin.

The ring holds the endorsement chain (`signer.endorsement`), the active kid (tokens are signed with
it), the next kid (published, not yet signing) and the retiring kids (no longer signing, published
until their last token expires). It is persisted as public JSON in the gateway's state directory
and re-verified from the trust root whenever it is loaded, so a file that was tampered with cannot
add a key: the gateway refuses to start on it.

Rotation, driven by an operator (or the admin API):
1. Operators run a DKG among the same signers that adds a key beside the active one (`signer dkg`,
   without --replace-existing-key).
2. `publish(kid)`: the coordinator re-learns the signers' keys (t must agree), the signers are asked
   to endorse the new key with the active key (each signer's guard checks it holds both), the
   endorsement is verified, appended to the chain and persisted, and only then is the key
   published. A key the signers will not endorse is never published.
3. `activate()`: once the new key has been published for at least `publish_lead_seconds`, minting
   switches to it. The old key stays published until the last token it signed has expired
   (activation time + the longest lifetime a token can have); `prune()` then drops it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from extauthz.errors import ExtAuthzError
from extauthz.mint import SignResult
from signer.endorsement import (
    EndorsementError,
    EndorsementFormatError,
    TrustRoot,
    endorsement_message,
    public_key_from_jwk,
    verify_chain,
)
from signer.files import write_atomically
from signer.frost import PublicKeyPackage
from signer.proto import signer_pb2
from signer.token import compact, kid_for

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


class KeySigner(Protocol):
    """What the ring needs of the coordinator (`signer.coordinator.Coordinator`)."""

    @property
    def packages(self) -> Mapping[str, PublicKeyPackage]: ...  # adopted keys: t signers agree

    async def refresh_keys(self) -> Mapping[str, PublicKeyPackage]: ...

    async def sign(
        self,
        message: bytes,
        *,
        evidence: signer_pb2.Evidence | None = None,
        request_id: str = "",
        timeout: float = 2.0,
    ) -> SignResult: ...

    def ready(self, kid: str | None = None) -> bool: ...

    async def close(self) -> None: ...


class RotationError(ExtAuthzError):
    """A rotation step was asked for out of order or cannot be done; the message says why."""


class KeyRingError(ExtAuthzError):
    """The key ring cannot be used: its file does not verify from the trust root, or the active
    key is not one the signers hold; the gateway must not start on it."""


@dataclass
class _State:
    active: str
    next: str | None = None
    next_published_at: float = 0.0
    retiring: dict[str, float] = field(default_factory=dict)  # kid -> when its last token dies
    endorsements: list[str] = field(default_factory=list)

    def to_document(self, root: TrustRoot) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "issuer": root.issuer,
            "roots": list(root.kids),
            "endorsements": self.endorsements,
            "active": self.active,
            "next": None
            if self.next is None
            else {"kid": self.next, "published_at": self.next_published_at},
            "retiring": [{"kid": k, "retire_at": t} for k, t in self.retiring.items()],
        }

    @classmethod
    def from_document(cls, document: Any) -> _State:
        try:
            if document["version"] != FORMAT_VERSION:
                raise ValueError(f"version {document['version']!r}")
            following = document["next"]
            state = cls(
                active=_text(document["active"]),
                next=None if following is None else _text(following["kid"]),
                next_published_at=0.0 if following is None else float(following["published_at"]),
                retiring={_text(r["kid"]): float(r["retire_at"]) for r in document["retiring"]},
                endorsements=[_text(e) for e in document["endorsements"]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyRingError(f"not a key ring document: {exc}") from None
        return state


class KeyRing:
    def __init__(
        self,
        coordinator: KeySigner,
        root: TrustRoot,
        state: _State,
        *,
        path: Path | None,
        max_token_ttl_seconds: int,
        publish_lead_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._coordinator = coordinator
        self._root = root
        self._state = state
        self._path = path
        self._max_ttl = max_token_ttl_seconds
        self._lead = publish_lead_seconds
        self._clock = clock
        self._trusted = self._verified(state)
        self._publishing = asyncio.Lock()

    @classmethod
    def load(
        cls,
        coordinator: KeySigner,
        root: TrustRoot,
        *,
        path: Path | None,
        max_token_ttl_seconds: int,
        publish_lead_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> KeyRing:
        """The ring persisted at `path`, re-verified from `root`; on first start, the first root
        key the signers hold. Raises KeyRingError when the active key is not trusted from the
        root or not held by t signers that agree."""
        if path is not None and path.exists():
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise KeyRingError(f"{path}: cannot read the key ring: {exc}") from None
            state = _State.from_document(document)
            if document.get("issuer") != root.issuer:
                raise KeyRingError(f"{path}: the key ring is for another issuer")
        else:
            held = [kid for kid in root.kids if kid in coordinator.packages]
            if not held:
                raise KeyRingError(
                    f"none of the trust root's keys ({', '.join(root.kids)}) is held by t signers "
                    f"that agree (they hold: {', '.join(coordinator.packages) or 'nothing'})"
                )
            state = _State(active=held[0])
        ring = cls(
            coordinator,
            root,
            state,
            path=path,
            max_token_ttl_seconds=max_token_ttl_seconds,
            publish_lead_seconds=publish_lead_seconds,
            clock=clock,
        )
        if state.active not in coordinator.packages:
            raise KeyRingError(
                f"the active key {state.active} is not held by t signers that agree "
                f"(they hold: {', '.join(coordinator.packages) or 'nothing'})"
            )
        ring._save(state)
        return ring

    def _verified(self, state: _State) -> dict[str, bytes]:
        try:
            trusted = {kid_for(k): k for k in verify_chain(self._root, state.endorsements)}
        except EndorsementError as exc:
            raise KeyRingError(f"the key ring does not verify from the trust root: {exc}") from None
        for role, kid in (
            ("active", state.active),
            ("next", state.next),
            *(("retiring", k) for k in state.retiring),
        ):
            if kid is not None and kid not in trusted:
                raise KeyRingError(f"the {role} key {kid} is not trusted from the root")
        return trusted

    # --- what is published ------------------------------------------------------------------------

    @property
    def root(self) -> TrustRoot:
        return self._root

    @property
    def active_kid(self) -> str:
        return self._state.active

    @property
    def active_key(self) -> bytes:
        return self._trusted[self._state.active]

    @property
    def next_kid(self) -> str | None:
        return self._state.next

    @property
    def endorsements(self) -> list[str]:
        return list(self._state.endorsements)

    def published_kids(self) -> list[str]:
        """Every kid that may verify a live token or soon will: active, next, retiring."""
        now = self._clock()
        kids = [self._state.active]
        if self._state.next is not None:
            kids.append(self._state.next)
        kids.extend(k for k, retire_at in self._state.retiring.items() if retire_at > now)
        return kids

    def published_keys(self) -> list[bytes]:
        return [self._trusted[kid] for kid in self.published_kids()]

    def endorsements_document(self) -> dict[str, object]:
        """What a verifier needs to trust the published keys from its pinned root."""
        return {
            "issuer": self._root.issuer,
            "roots": list(self._root.kids),
            "endorsements": self.endorsements,
            "keys": self.published_kids(),
        }

    # --- rotation ---------------------------------------------------------------------------------

    async def publish(self, kid: str, jwk: Mapping[str, Any] | None = None) -> bytes:
        """Have t signers endorse key `kid` with the active key, then publish it as the next key.

        The key comes from the signers' reports (t must agree on it), or from `jwk` for a key they
        did not report: the signers decide either way. Raises RotationError, or the coordinator's
        SigningRefused (with the guard rule) when the signers will not endorse it.
        """
        async with self._publishing:  # one rotation at a time
            self._check_publishable(kid)
            packages = await self._coordinator.refresh_keys()
            key = self._key_to_publish(kid, packages, jwk)
            endorsements = list(self._state.endorsements)
            if kid not in self._trusted:
                message = endorsement_message(
                    self.active_key, key, issuer=self._root.issuer, issued_at=int(self._clock())
                )
                outcome = await self._coordinator.sign(message, request_id=f"endorse-{kid}")
                endorsements.append(compact(message, outcome.signature))
            # Built from the state as it is now: activation or pruning may have run meanwhile.
            self._check_publishable(kid)
            state = self._state
            following = _State(
                active=state.active,
                next=kid,
                next_published_at=self._clock(),
                retiring=dict(state.retiring),
                endorsements=endorsements,
            )
            trusted = self._verified(following)
            self._save(following)  # persisted first: a published key is always in the saved chain
            self._state, self._trusted = following, trusted
        log.info("key %s endorsed by key %s and published as the next key", kid, state.active)
        return key

    def _check_publishable(self, kid: str) -> None:
        if self._state.next is not None:
            raise RotationError(
                f"key {self._state.next} is already published as next; activate it first"
            )
        if kid in self.published_kids():
            raise RotationError(f"key {kid} is already published")

    def _key_to_publish(
        self, kid: str, packages: Mapping[str, PublicKeyPackage], jwk: Mapping[str, Any] | None
    ) -> bytes:
        if kid in packages:
            return bytes(packages[kid].group_public_key)
        if jwk is None:
            raise RotationError(
                f"no key {kid} is held by t signers that agree (they hold: "
                f"{', '.join(packages)}); run a DKG that adds it among the same signers first"
            )
        try:
            key = public_key_from_jwk(dict(jwk), extra=frozenset({"alg", "use"}))
        except EndorsementFormatError as exc:
            raise RotationError(f"jwk: {exc.detail}") from None
        if kid_for(key) != kid:
            raise RotationError(f"jwk is key {kid_for(key)}, not {kid}")
        return key

    def activate(self) -> bytes:
        state = self._state
        if state.next is None:
            raise RotationError("no next key: publish one first")
        waited = self._clock() - state.next_published_at
        if waited < self._lead:
            raise RotationError(
                f"the next key has been published for {waited:.0f}s; verifiers may not have it "
                f"yet: wait {self._lead - waited:.0f}s more"
            )
        if state.next not in self._coordinator.packages:
            raise RotationError(f"key {state.next} is not held by t signers that agree")
        retiring = dict(state.retiring)
        retiring[state.active] = self._clock() + self._max_ttl
        following = _State(
            active=state.next, retiring=retiring, endorsements=list(state.endorsements)
        )
        self._save(following)
        self._state = following
        return self.active_key

    def prune(self) -> list[bytes]:
        """Stop publishing keys whose last token has expired; returns their keys."""
        now = self._clock()
        state = self._state
        done = [kid for kid, retire_at in state.retiring.items() if retire_at <= now]
        if not done:
            return []
        following = _State(
            active=state.active,
            next=state.next,
            next_published_at=state.next_published_at,
            retiring={k: t for k, t in state.retiring.items() if k not in done},
            endorsements=list(state.endorsements),
        )
        self._save(following)
        self._state = following
        return [self._trusted[kid] for kid in done]

    # --- signing ----------------------------------------------------------------------------------

    def ready(self) -> bool:
        return self._coordinator.ready(self._state.active)

    async def sign(
        self,
        message: bytes,
        *,
        evidence: signer_pb2.Evidence | None = None,
        request_id: str = "",
        timeout: float = 2.0,
    ) -> SignResult:
        """Sign with the key the message's header names (the coordinator picks it by kid), so a
        mint that started just before an activation still completes under the key it was built
        for."""
        return await self._coordinator.sign(
            message, evidence=evidence, request_id=request_id, timeout=timeout
        )

    async def close(self) -> None:
        await self._coordinator.close()

    def _save(self, state: _State) -> None:
        if self._path is None:
            return
        data = json.dumps(state.to_document(self._root), indent=2, sort_keys=True).encode()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self._path, data)


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{value!r} is not a non-empty string")
    return value


def load_trust_root(path: Path, issuer: str) -> TrustRoot:
    """The pinned trust root document at `path`, for `issuer`; ExtAuthzError says what is wrong
    (the caller names the setting)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeyRingError(f"{path}: cannot read the trust root: {exc}") from None
    try:
        root = TrustRoot.from_document(document)
    except EndorsementError as exc:
        raise KeyRingError(f"{path}: {exc}") from None
    if root.issuer != issuer:
        raise KeyRingError(f"{path}: the trust root is for issuer {root.issuer!r}, not {issuer!r}")
    return root
