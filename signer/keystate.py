"""The keys a signer process signs with: an ordered set by kid, changed only by key ceremonies.

Every key is this signer's share of one group key, all under the same FROST identifier. A ceremony
that makes a new group key adds it beside the keys held; a reshare or refresh of a held group key
replaces that key's share; only `replace_existing` drops the other keys. Each change is persisted
(sealed) first, then swapped in atomically: readers take one immutable snapshot.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from signer.errors import SignerError
from signer.frost import KeyShare, PublicKeyPackage
from signer.token import TokenFormatError, b64url_decode, kid_for


class NoKey(SignerError):
    """This signer holds no key share yet (run a DKG or install a dealer share)."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    share: KeyShare
    package: PublicKeyPackage

    @property
    def kid(self) -> str:
        return kid_for(self.package.group_public_key)


Persist = Callable[[KeyShare, PublicKeyPackage], None]
Discard = Callable[[str], None]


class KeyState:
    """The keys held, by kid, in the order they were first installed.

    `persist(share, package)` writes one key (sealed) before the in-memory set changes;
    `discard(kid)` deletes the files of a dropped key after it. Both run under the state's lock.
    """

    def __init__(
        self,
        keys: Iterable[SigningKey] = (),
        *,
        persist: Persist | None = None,
        discard: Discard | None = None,
    ) -> None:
        self._persist = persist
        self._discard = discard
        self._lock = threading.Lock()
        self._listeners: list[Callable[[SigningKey], None]] = []
        self._keys: Mapping[str, SigningKey] = MappingProxyType({})
        for key in keys:
            self.install_loaded(key)

    def on_install(self, listener: Callable[[SigningKey], None]) -> None:
        """Call `listener` after each key is installed by a ceremony."""
        self._listeners.append(listener)

    def install_loaded(self, key: SigningKey) -> None:
        """Adopt a key just unsealed from storage: nothing to persist."""
        with self._lock:
            self._check_fits(key.share, key.package)
            self._keys = MappingProxyType({**self._keys, key.kid: key})

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        """Every key held, oldest first."""
        return tuple(self._keys.values())

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    @property
    def has_key(self) -> bool:
        return bool(self._keys)

    @property
    def current(self) -> SigningKey:
        """The key installed most recently as a new group key (the newest kid)."""
        keys = tuple(self._keys.values())
        if not keys:
            raise NoKey("this signer holds no key share yet")
        return keys[-1]

    @property
    def identifier(self) -> int:
        """This signer's FROST identifier, the same in every key it holds."""
        return self.current.share.identifier

    def get(self, kid: str) -> SigningKey | None:
        return self._keys.get(kid)

    def for_message(self, message: bytes) -> SigningKey | None:
        """The key the message's JWS header names by kid, if this signer holds it."""
        kid = header_kid(message)
        return None if kid is None else self._keys.get(kid)

    def install(
        self, share: KeyShare, package: PublicKeyPackage, *, replace_existing: bool = False
    ) -> SigningKey:
        """Add a new group key, or replace the share of a held one; with `replace_existing`, drop
        every other key too (the ceremony must have been approved for that)."""
        key = SigningKey(share, package)
        with self._lock:
            self._check_fits(share, package, replacing=replace_existing)
            if self._persist is not None:
                self._persist(share, package)
            dropped = [kid for kid in self._keys if kid != key.kid] if replace_existing else []
            kept = {kid: k for kid, k in self._keys.items() if kid not in dropped}
            self._keys = MappingProxyType({**kept, key.kid: key})
            for kid in dropped:
                if self._discard is not None:
                    self._discard(kid)
        for listener in self._listeners:
            listener(key)
        return key

    def _check_fits(
        self, share: KeyShare, package: PublicKeyPackage, *, replacing: bool = False
    ) -> None:
        if package.verifying_shares.get(share.identifier) != share.verifying_share:
            raise SignerError(
                f"share {share.identifier} does not match the public key package it came with"
            )
        if share.group_public_key != package.group_public_key:
            raise SignerError("share and public key package are for different group keys")
        held = next(iter(self._keys.values()), None)
        if held is not None and not replacing and held.share.identifier != share.identifier:
            raise SignerError(
                f"a share for participant {share.identifier}, but this signer is participant "
                f"{held.share.identifier} in every key it holds"
            )


def header_kid(message: bytes) -> str | None:
    """The `kid` of a JWS signing input's header, or None if it has no readable string kid."""
    kid = message_header(message).get("kid")
    return kid if isinstance(kid, str) else None


def message_header(message: bytes) -> Mapping[str, object]:
    """The JSON header of a JWS signing input, read leniently (empty if unreadable): for routing
    a message to its checks, never for deciding anything."""
    head, dot, _ = message.partition(b".")
    if not dot:
        return {}
    try:
        header = json.loads(b64url_decode(head.decode("ascii")))
    except (TokenFormatError, ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return header if isinstance(header, dict) else {}
