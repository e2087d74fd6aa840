"""Group keys over time, each one endorsed by t signers, chained from the root operators pin.

The ring holds the endorsement chain (`signer.endorsement`), the active kid (tokens are signed with
it), the next kid (published, not yet signing) and the retiring kids (no longer signing, published
until their last token expires). It is kept as public JSON in a store (`KeyRingStore`): Redis,
shared by every replica, or `keyring.json` in the state directory, shared by a replica's workers.
It is re-verified from the trust root whenever it is read, so a store that was tampered with cannot
add a key: the gateway refuses to start on it, and a running gateway keeps the ring in force
(`adopt`). Changes are compare-and-set: two replicas rotating at once change it once.

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
from extauthz.server.mint import SignResult
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


class KeyRingConflictError(RotationError):
    """Another replica or worker changed the key ring first; this change was not made: retry."""


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


class KeyRingStore(Protocol):
    """Where the ring is kept (`extauthz.server.state`): a file under the state directory, or
    Redis."""

    @property
    def where(self) -> str: ...

    async def load_keyring(self) -> tuple[str | None, str]: ...

    async def save_keyring(self, document: str, expected_version: str) -> str: ...


class KeyRing:
    def __init__(
        self,
        coordinator: KeySigner,
        root: TrustRoot,
        state: _State,
        *,
        store: KeyRingStore | None,
        version: str = "",
        cache: Path | None = None,
        max_token_ttl_seconds: int,
        publish_lead_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._coordinator = coordinator
        self._root = root
        self._state = state
        self._store = store
        self._version = version
        self._cache = cache
        self._max_ttl = max_token_ttl_seconds
        self._lead = publish_lead_seconds
        self._clock = clock
        self._trusted = self._verified(state)
        self._publishing = asyncio.Lock()

    @classmethod
    async def load(
        cls,
        coordinator: KeySigner,
        root: TrustRoot,
        *,
        path: Path | None = None,
        store: KeyRingStore | None = None,
        cache: Path | None = None,
        max_token_ttl_seconds: int,
        publish_lead_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> KeyRing:
        """The ring in `store` (or the file `path`), re-verified from `root`; on first start, the
        first root key the signers hold, stored. Raises KeyRingError when the active key is not
        trusted from the root or not held by t signers that agree.

        `cache` is a local copy of a shared store's ring (Redis): read at start only when the
        store cannot be reached, so the replica starts and catches up once it answers."""
        from extauthz.server.limits import StateUnavailable
        from extauthz.server.state.local import LocalStore

        if path is not None:
            store = LocalStore(path.parent, keyring_name=path.name)
        text: str | None = None
        version = ""
        where = "nowhere"
        if store is not None:
            where = store.where
            try:
                text, version = await store.load_keyring()
            except StateUnavailable as exc:
                if cache is None or not cache.exists():
                    raise KeyRingError(f"cannot read the key ring: {exc.detail}") from None
                log.warning("key ring store unreachable (%s): starting from %s", exc, cache)
                text, version, where = cache.read_text(encoding="utf-8"), "\0unknown", str(cache)
        if text is not None:
            state = _parse(text, root, where)
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
            store=store,
            version=version,
            cache=cache,
            max_token_ttl_seconds=max_token_ttl_seconds,
            publish_lead_seconds=publish_lead_seconds,
            clock=clock,
        )
        if state.active not in coordinator.packages:
            raise KeyRingError(
                f"the active key {state.active} is not held by t signers that agree "
                f"(they hold: {', '.join(coordinator.packages) or 'nothing'})"
            )
        if text is None:
            try:
                await ring._commit(state)
            except KeyRingConflictError:  # another replica stored the first ring meanwhile
                await ring.adopt()
        else:
            ring._write_cache(text)
        return ring

    async def adopt(self) -> bool:
        """Take the ring the store holds now, if it changed: verified from the trust root, its
        chain extending the one in force (a store cannot take an endorsement back), its keys held
        by t signers. True if adopted; KeyRingError (and the ring in force stays) if it fails;
        the store's StateUnavailable passes through. A store that lost the ring gets it back."""
        if self._store is None:
            return False
        text, version = await self._store.load_keyring()
        if version == self._version:
            return False
        if text is None:  # the store lost it (a Redis restarted empty): give it back
            await self._commit(self._state, expected="")
            return False
        state = _parse(text, self._root, self._store.where)
        trusted = self._verified(state)
        held = state.endorsements[: len(self._state.endorsements)]
        if held != self._state.endorsements:
            raise KeyRingError(
                f"the key ring in {self._store.where} drops or changes endorsements this "
                "gateway holds: refused"
            )
        wanted = [kid for kid in (state.active, state.next) if kid is not None]
        if any(kid not in self._coordinator.packages for kid in wanted):
            await self._coordinator.refresh_keys()
        if state.active not in self._coordinator.packages:
            raise KeyRingError(
                f"the key ring in {self._store.where} makes {state.active} active, which t "
                "signers do not hold"
            )
        changed = state.active != self._state.active
        self._state, self._trusted, self._version = state, trusted, version
        self._write_cache(text)
        if changed:
            log.info(
                "minting with group key %s from now on (key ring changed in the store)",
                state.active,
            )
        return True

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

    def key_times(self) -> tuple[tuple[str, float] | None, dict[str, float]]:
        """The next key and when its publish lead ends (it may be activated from then), and
        each retiring key and when it leaves the JWKS: for the metrics operators alert on."""
        state = self._state
        following = (
            None if state.next is None else (state.next, state.next_published_at + self._lead)
        )
        return following, dict(state.retiring)

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
            await self._commit(following)  # stored first: a published key is in the stored chain
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

    async def activate(self) -> bytes:
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
        await self._commit(following)
        return self.active_key

    async def prune(self) -> list[bytes]:
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
        keys = [self._trusted[kid] for kid in done]
        await self._commit(following)
        return keys

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

    async def _commit(self, state: _State, *, expected: str | None = None) -> None:
        """Store `state` (compare-and-set against the version this ring was read at), then make
        it the one in force. KeyRingConflictError if another process changed the store first."""
        from extauthz.server.state.base import KeyRingConflict

        trusted = self._verified(state)
        text = json.dumps(state.to_document(self._root), indent=2, sort_keys=True)
        version = self._version
        if self._store is not None:
            try:
                version = await self._store.save_keyring(
                    text, self._version if expected is None else expected
                )
            except KeyRingConflict as exc:
                raise KeyRingConflictError(str(exc)) from None
        self._write_cache(text)
        self._state, self._trusted, self._version = state, trusted, version

    def _write_cache(self, text: str) -> None:
        if self._cache is None:
            return
        self._cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self._cache, text.encode())


def _parse(text: str, root: TrustRoot, where: str) -> _State:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise KeyRingError(f"{where}: cannot read the key ring: {exc}") from None
    state = _State.from_document(document)
    if not isinstance(document, dict) or document.get("issuer") != root.issuer:
        raise KeyRingError(f"{where}: the key ring is for another issuer")
    return state


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
