"""PKCS#11 vault: the share is encrypted with CKM_AES_GCM by an AES-256 key inside an HSM token.

The key is generated on the token by `ensure_key` (part of the key ceremony) with
CKA_EXTRACTABLE=false and CKA_SENSITIVE=true, so it never leaves the token; sealing and unsealing
both happen inside the token after a login with the user PIN. The blob holds the GCM nonce and the
ciphertext with its tag; the envelope header is the GCM associated data.

python-pkcs11 keeps one loaded library per path for the whole process (`pkcs11.lib` caches it), and
PKCS#11 login state is shared by every session an application has on a token. So operations here
hold one process-wide lock and close their session when done, which logs the token out again.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pkcs11
from pkcs11 import (
    Attribute,
    DecryptMixin,
    EncryptMixin,
    GCMParams,
    KeyType,
    Mechanism,
    MechanismFlag,
    ObjectClass,
    TokenFlag,
)
from pkcs11 import exceptions as p11

from signer.vault.base import (
    CorruptBlob,
    ShareVault,
    VaultConfigError,
    VaultError,
    VaultKind,
    VaultUnavailable,
    WrongSecret,
    expect_length,
)

if TYPE_CHECKING:
    import pkcs11._pkcs11
    from pkcs11.types import SecretKey, Session, Token

_VAULT = VaultKind.PKCS11.slug
_KEY_BITS = 256
_NONCE_BYTES = 12
_TAG_BITS = 128
_operation_lock = threading.Lock()

# PKCS#11 has no "bad tag" code: SoftHSM2 answers CKR_GENERAL_ERROR, others one of the rest.
_AUTHENTICATION_FAILURES = (
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.DataInvalid,
    p11.DataLenRange,
    p11.GeneralError,
    p11.FunctionFailed,
)


def open_module(path: str) -> pkcs11._pkcs11.lib:
    """Load (or reuse) the PKCS#11 module at `path`; symlinked paths share one loaded library."""
    try:
        return pkcs11.lib(os.path.realpath(path))
    except p11.PKCS11Error as exc:
        raise VaultUnavailable(_VAULT, f"cannot load PKCS#11 module {path}: {exc}") from exc


class Pkcs11Vault(ShareVault):
    """Seals with an AES-256 key that lives in, and never leaves, a PKCS#11 token."""

    kind = VaultKind.PKCS11
    fields = ("nonce", "ciphertext")

    def __init__(
        self,
        *,
        module: str,
        token_label: str,
        key_label: str,
        pin: str,
        label: str = "",
    ) -> None:
        super().__init__(label=label)
        _require_settings(module=module, token_label=token_label, key_label=key_label, pin=pin)
        self._module = module
        self._token_label = token_label
        self._key_label = key_label
        self._pin = pin

    @property
    def description(self) -> str:
        return (
            f"PKCS#11 AES key {self._key_label!r} on token {self._token_label!r} "
            f"(module {self._module})"
        )

    def _seal_fields(self, share: bytes, associated_data: bytes) -> tuple[bytes, ...]:
        nonce = os.urandom(_NONCE_BYTES)
        with _user_session(self._module, self._token_label, self._pin) as session:
            key = _find_key(session, self._token_label, self._key_label)
            if not isinstance(key, EncryptMixin):
                raise VaultError(f"PKCS#11 key {self._key_label!r} is not allowed to encrypt")
            try:
                ciphertext = key.encrypt(
                    share,
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(nonce, associated_data, _TAG_BITS),
                )
            except p11.MechanismInvalid as exc:
                raise VaultUnavailable(
                    _VAULT, f"token {self._token_label!r} does not offer CKM_AES_GCM"
                ) from exc
        assert isinstance(ciphertext, bytes)
        return (nonce, ciphertext)

    def _unseal_fields(self, fields: tuple[bytes, ...], associated_data: bytes) -> bytes:
        nonce, ciphertext = fields
        params = GCMParams(expect_length(nonce, "nonce", _NONCE_BYTES), associated_data, _TAG_BITS)
        with _user_session(self._module, self._token_label, self._pin) as session:
            key = _find_key(session, self._token_label, self._key_label)
            if not isinstance(key, DecryptMixin):
                raise VaultError(f"PKCS#11 key {self._key_label!r} is not allowed to decrypt")
            try:
                share = key.decrypt(ciphertext, mechanism=Mechanism.AES_GCM, mechanism_param=params)
            except _AUTHENTICATION_FAILURES as exc:
                raise CorruptBlob(
                    f"PKCS#11 key {self._key_label!r} on token {self._token_label!r} could not "
                    "authenticate the blob: it was corrupted or tampered with, or sealed under "
                    f"another key ({type(exc).__name__})"
                ) from None
        assert isinstance(share, bytes)
        return share


def ensure_key(*, module: str, token_label: str, key_label: str, pin: str) -> bool:
    """Create the non-extractable AES-256 sealing key on the token unless it exists.

    Returns True if it was created. An existing key under the label is accepted only if it is an
    AES-256 key that has never been extractable, so the ceremony cannot silently reuse a weak one.
    """
    _require_settings(module=module, token_label=token_label, key_label=key_label, pin=pin)
    with _user_session(module, token_label, pin, rw=True) as session:
        existing = _lookup_key(session, token_label, key_label)
        if existing is not None:
            _check_existing_key(existing, token_label, key_label)
            return False
        try:
            session.generate_key(
                KeyType.AES,
                _KEY_BITS,
                label=key_label,
                store=True,
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.WRAP: False,
                    Attribute.UNWRAP: False,
                },
            )
        except p11.PKCS11Error as exc:
            raise VaultError(
                f"token {token_label!r} refused to create AES key {key_label!r}: "
                f"{type(exc).__name__}"
            ) from exc
    return True


def _check_existing_key(key: SecretKey, token_label: str, key_label: str) -> None:
    attributes = key.get_attributes(
        [Attribute.KEY_TYPE, Attribute.VALUE_LEN, Attribute.NEVER_EXTRACTABLE, Attribute.SENSITIVE]
    )
    problems = []
    if attributes[Attribute.KEY_TYPE] != KeyType.AES:
        problems.append("it is not an AES key")
    if attributes[Attribute.VALUE_LEN] != _KEY_BITS // 8:
        problems.append(f"it is not {_KEY_BITS} bits")
    if not attributes[Attribute.NEVER_EXTRACTABLE]:
        problems.append("it is or has been extractable")
    if not attributes[Attribute.SENSITIVE]:
        problems.append("it is not sensitive")
    if problems:
        raise VaultError(
            f"existing key {key_label!r} on token {token_label!r} cannot seal shares: "
            + "; ".join(problems)
        )


@contextmanager
def _user_session(
    module: str, token_label: str, pin: str, *, rw: bool = False
) -> Iterator[Session]:
    with _operation_lock:
        library = open_module(module)
        try:
            # python-pkcs11 does not close the C session when C_Login fails; the handle holds no
            # login and goes away when the library is finalised.
            session = _find_token(library, token_label).open(rw=rw, user_pin=pin)
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange) as exc:
            raise _pin_refused(library, token_label) from exc
        except p11.PinLocked as exc:
            raise WrongSecret(
                "PIN",
                f"the user PIN of token {token_label!r} is locked; unlock it with the SO PIN",
                attempts_remaining=0,
            ) from exc
        except p11.UserPinNotInitialized as exc:
            raise VaultUnavailable(_VAULT, f"token {token_label!r} has no user PIN set") from exc
        except p11.UserAlreadyLoggedIn as exc:
            raise VaultError(
                f"another session in this process is logged in to token {token_label!r}"
            ) from exc
        except (p11.TokenNotPresent, p11.DeviceRemoved, p11.DeviceError) as exc:
            raise VaultUnavailable(
                _VAULT, f"token {token_label!r} is not reachable ({type(exc).__name__})"
            ) from exc
        with session:
            yield session


def _pin_refused(library: pkcs11._pkcs11.lib, token_label: str) -> WrongSecret:
    # PKCS#11 has no retry count, only flags; SoftHSM2 sets COUNT_LOW but never locks. A Token
    # object keeps the flags it was fetched with, so fetch it again after the failed login.
    flags = _find_token(library, token_label).flags
    attempts: int | None = None
    hint = ""
    if flags & TokenFlag.USER_PIN_LOCKED:
        attempts, hint = 0, "; the PIN is now locked"
    elif flags & TokenFlag.USER_PIN_FINAL_TRY:
        attempts, hint = 1, "; one more wrong PIN will lock it"
    elif flags & TokenFlag.USER_PIN_COUNT_LOW:
        hint = "; the token reports few PIN tries left"
    return WrongSecret(
        "PIN",
        f"the user PIN was refused by token {token_label!r}{hint}",
        attempts_remaining=attempts,
    )


def _find_token(library: pkcs11._pkcs11.lib, token_label: str) -> Token:
    try:
        return library.get_token(token_label=token_label)
    except p11.NoSuchToken:
        raise VaultUnavailable(
            _VAULT, f"no token labelled {token_label!r} in module {library.so}"
        ) from None
    except p11.MultipleTokensReturned:
        raise VaultUnavailable(
            _VAULT, f"several tokens are labelled {token_label!r} in module {library.so}"
        ) from None


def _find_key(session: Session, token_label: str, key_label: str) -> SecretKey:
    key = _lookup_key(session, token_label, key_label)
    if key is None:
        raise VaultUnavailable(
            _VAULT,
            f"no AES key labelled {key_label!r} on token {token_label!r} "
            "(create it in the key ceremony with ensure_key)",
        )
    return key


def _lookup_key(session: Session, token_label: str, key_label: str) -> SecretKey | None:
    try:
        key = session.get_key(
            object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=key_label
        )
    except p11.NoSuchKey:
        return None
    except p11.MultipleObjectsReturned:
        raise VaultUnavailable(
            _VAULT, f"several AES keys are labelled {key_label!r} on token {token_label!r}"
        ) from None
    assert isinstance(key, pkcs11.SecretKey)
    return key


def _require_settings(**settings: str) -> None:
    for setting, value in settings.items():
        if not value:
            raise VaultConfigError(setting, "must not be empty")
