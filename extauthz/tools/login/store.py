"""Where the IdP's refresh token is kept: the OS keyring, or nowhere.

`system_store(account)` is a `KeyringStore` over the `keyring` package's backend when that is an
OS keyring (macOS Keychain, Windows Credential Locker, the Secret Service, KWallet), and None
when it is not: `keyring`'s `fail` and `null` backends, or anything from `keyrings.alt` (files on
disk, in plain text or under a password kept beside them). Then the refresh token is not kept,
and not even asked for (`offline_access` is left out of the login's scope).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

log = logging.getLogger(__name__)

SERVICE = "keymint-login"
# keyring's backends that are not an OS keyring: refusing (fail), discarding (null), or files.
_NOT_OS_KEYRINGS = ("keyring.backends.fail", "keyring.backends.null", "keyrings.alt")


class RefreshTokenStore(Protocol):
    def load(self) -> str | None: ...

    def save(self, token: str) -> None: ...

    def delete(self) -> None: ...


class KeyringStore:
    """One account's refresh token in a keyring backend (the system's, or a test's)."""

    def __init__(self, account: str, backend: KeyringBackend) -> None:
        self.account = account
        self._backend = backend

    @property
    def backend_name(self) -> str:
        backend_type = type(self._backend)
        return f"{backend_type.__module__}.{backend_type.__qualname__}"

    def load(self) -> str | None:
        try:
            token = self._backend.get_password(SERVICE, self.account)
        except Exception as exc:  # keyring's backends raise their own errors (D-Bus, locked...)
            log.warning("the keyring could not be read (%s): signing in again", type(exc).__name__)
            return None
        return token if isinstance(token, str) and token else None

    def save(self, token: str) -> None:
        try:
            self._backend.set_password(SERVICE, self.account, token)
        except Exception as exc:
            log.warning("the keyring refused the refresh token (%s): not kept", type(exc).__name__)

    def delete(self) -> None:
        try:
            self._backend.delete_password(SERVICE, self.account)
        except Exception:  # nothing stored, or a locked keyring: nothing to undo either way
            log.debug("no refresh token to delete for %s", self.account)


def is_os_keyring(backend: KeyringBackend) -> bool:
    """True for a keyring backend that is the operating system's (see the module docstring)."""
    from keyring.backends.chainer import ChainerBackend

    if isinstance(backend, ChainerBackend):
        backends = backend.backends
        return bool(backends) and all(is_os_keyring(b) for b in backends)
    module = type(backend).__module__
    return not module.startswith(_NOT_OS_KEYRINGS)


def system_store(account: str) -> KeyringStore | None:
    """The OS keyring's store for `account`, or None when there is no OS keyring."""
    try:
        import keyring
    except ImportError:
        return None
    backend = keyring.get_keyring()
    if not is_os_keyring(backend):
        return None
    return KeyringStore(account, backend)


def account_for(issuer: str, client_id: str) -> str:
    """One refresh token per IdP and client."""
    return f"{issuer} {client_id}"
