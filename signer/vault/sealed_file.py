"""Development vault: AES-256-GCM under a key derived from a passphrase.

The passphrase usually comes from KEYMINT_VAULT_PASSPHRASE (see `signer.vault.config`). Anyone who
can read the signer's environment and its blob has the share, so this vault is for development and
tests only, and says so in a warning whenever one is built.

Key derivation: scrypt(passphrase, random salt) -> 32-byte master, then HKDF-Expand splits the
master into the AES key and a short passphrase check value. The check value lets a wrong
passphrase be reported as such rather than as a corrupted blob; it gives an attacker nothing the
GCM tag would not, since either one lets them test a guess at the same scrypt cost.
"""

from __future__ import annotations

import hmac
import logging
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from signer.vault.base import (
    CorruptBlob,
    ShareVault,
    VaultConfigError,
    VaultKind,
    WrongSecret,
    expect_length,
)

logger = logging.getLogger(__name__)

DEFAULT_SCRYPT_LOG2_N = 15
# The lower bound keeps sealing honest; the upper bound stops a crafted blob from asking unseal
# for gigabytes of memory.
MIN_SCRYPT_LOG2_N = 14
MAX_SCRYPT_LOG2_N = 20
_SCRYPT_R = 8
_SCRYPT_P = 1
_SALT_BYTES = 16
_CHECK_BYTES = 16
_NONCE_BYTES = 12
_KEY_INFO = b"keymint/vault/sealed-file/v1/aes-256-gcm-key"
_CHECK_INFO = b"keymint/vault/sealed-file/v1/passphrase-check"


class SealedFileVault(ShareVault):
    """AES-256-GCM under a passphrase-derived key. Development only."""

    kind = VaultKind.SEALED_FILE
    fields = ("scrypt_log2_n", "salt", "passphrase_check", "nonce", "ciphertext")

    def __init__(
        self,
        passphrase: str | bytes,
        *,
        label: str = "",
        scrypt_log2_n: int = DEFAULT_SCRYPT_LOG2_N,
    ) -> None:
        super().__init__(label=label)
        secret = passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase
        if not secret:
            raise VaultConfigError("passphrase", "must not be empty")
        if not MIN_SCRYPT_LOG2_N <= scrypt_log2_n <= MAX_SCRYPT_LOG2_N:
            raise VaultConfigError(
                "scrypt_log2_n", f"must be in {MIN_SCRYPT_LOG2_N}..{MAX_SCRYPT_LOG2_N}"
            )
        self._passphrase = secret
        self._scrypt_log2_n = scrypt_log2_n
        logger.warning(
            "the sealed-file share vault is for development only: the key share is protected by "
            "a passphrase from the environment, not by hardware; use the pkcs11 or yubikey vault "
            "in production"
        )

    @property
    def description(self) -> str:
        return "sealed file (passphrase-derived AES-256-GCM key, development only)"

    def _seal_fields(self, share: bytes, associated_data: bytes) -> tuple[bytes, ...]:
        salt = os.urandom(_SALT_BYTES)
        key, check = self._derive(salt, self._scrypt_log2_n)
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = AESGCM(key).encrypt(nonce, share, associated_data)
        return (bytes((self._scrypt_log2_n,)), salt, check, nonce, ciphertext)

    def _unseal_fields(self, fields: tuple[bytes, ...], associated_data: bytes) -> bytes:
        cost_field, salt, check, nonce, ciphertext = fields
        log2_n = expect_length(cost_field, "scrypt_log2_n", 1)[0]
        if not MIN_SCRYPT_LOG2_N <= log2_n <= MAX_SCRYPT_LOG2_N:
            raise CorruptBlob(
                f"scrypt cost 2^{log2_n} is outside {MIN_SCRYPT_LOG2_N}..{MAX_SCRYPT_LOG2_N}"
            )
        key, expected_check = self._derive(expect_length(salt, "salt", _SALT_BYTES), log2_n)
        if not hmac.compare_digest(expected_check, check):
            raise WrongSecret(
                "passphrase",
                "wrong passphrase or corrupted blob: the passphrase check stored in the blob "
                "does not match the vault passphrase",
            )
        try:
            return AESGCM(key).decrypt(
                expect_length(nonce, "nonce", _NONCE_BYTES), ciphertext, associated_data
            )
        except InvalidTag:
            raise CorruptBlob(
                "authentication failed although the passphrase is right: the blob was corrupted "
                "or tampered with"
            ) from None

    def _derive(self, salt: bytes, log2_n: int) -> tuple[bytes, bytes]:
        master = Scrypt(salt=salt, length=32, n=2**log2_n, r=_SCRYPT_R, p=_SCRYPT_P).derive(
            self._passphrase
        )
        key = HKDFExpand(hashes.SHA256(), 32, _KEY_INFO).derive(master)
        check = HKDFExpand(hashes.SHA256(), _CHECK_BYTES, _CHECK_INFO).derive(master)
        return key, check
