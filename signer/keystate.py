"""The key a signer process signs with, swappable when a ceremony installs a new one."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from signer.errors import SignerError
from signer.frost import KeyShare, PublicKeyPackage
from signer.token import kid_for


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


class KeyState:
    """Holds the current key; `install` persists (sealed) first, then swaps it in atomically."""

    def __init__(self, key: SigningKey | None = None, *, persist: Persist | None = None) -> None:
        self._key = key
        self._persist = persist
        self._lock = threading.Lock()
        self._listeners: list[Callable[[SigningKey], None]] = []

    def on_install(self, listener: Callable[[SigningKey], None]) -> None:
        """Call `listener` after each new key is swapped in (e.g. to void old nonces)."""
        self._listeners.append(listener)

    def install_loaded(self, key: SigningKey) -> None:
        """Adopt a key just unsealed from storage: nothing to persist."""
        with self._lock:
            self._key = key

    @property
    def current(self) -> SigningKey:
        key = self._key
        if key is None:
            raise NoKey("this signer holds no key share yet")
        return key

    @property
    def has_key(self) -> bool:
        return self._key is not None

    def install(self, share: KeyShare, package: PublicKeyPackage) -> SigningKey:
        if package.verifying_shares.get(share.identifier) != share.verifying_share:
            raise SignerError(
                f"share {share.identifier} does not match the public key package it came with"
            )
        with self._lock:
            if self._persist is not None:
                self._persist(share, package)
            key = self._key = SigningKey(share, package)
        for listener in self._listeners:
            listener(key)
        return key
