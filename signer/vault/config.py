"""Vault configuration, parsed and validated once at start, and the sealed-share file helpers.

Settings come from the environment:

    KEYMINT_VAULT               sealed-file | pkcs11 | yubikey (required)
    KEYMINT_VAULT_LABEL         bound into the blob, usually the signer id (optional)
    KEYMINT_VAULT_PASSPHRASE    sealed-file: the passphrase (secret)
    KEYMINT_PKCS11_MODULE       pkcs11: path of the PKCS#11 module
    KEYMINT_PKCS11_TOKEN_LABEL  pkcs11: label of the token
    KEYMINT_PKCS11_KEY_LABEL    pkcs11: label of the AES key (default keymint-share-wrap)
    KEYMINT_PKCS11_PIN          pkcs11: user PIN (secret)
    KEYMINT_YUBIKEY_SLOT        yubikey: PIV slot in hex (default 9d)
    KEYMINT_YUBIKEY_SERIAL      yubikey: serial of the YubiKey to use (optional)
    KEYMINT_YUBIKEY_PIN         yubikey: PIV PIN (secret)

The config objects hold no secrets: `open_vault` reads those from the environment it is given, so a
config can be logged, compared and passed around freely. The pkcs11 and yubikey modules are imported
only when chosen, because their libraries are optional extras.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from signer.files import write_atomically
from signer.settings import Kind, Setting
from signer.vault.base import ShareVault, VaultConfigError, VaultUnavailable, validate_label
from signer.vault.sealed_file import SealedFileVault

logger = logging.getLogger(__name__)

# Names of environment variables, not values (hence the noqa on the secret ones).
VAULT_ENV = "KEYMINT_VAULT"
LABEL_ENV = "KEYMINT_VAULT_LABEL"
PASSPHRASE_ENV = "KEYMINT_VAULT_PASSPHRASE"  # noqa: S105
PKCS11_MODULE_ENV = "KEYMINT_PKCS11_MODULE"
PKCS11_TOKEN_LABEL_ENV = "KEYMINT_PKCS11_TOKEN_LABEL"  # noqa: S105
PKCS11_KEY_LABEL_ENV = "KEYMINT_PKCS11_KEY_LABEL"
PKCS11_PIN_ENV = "KEYMINT_PKCS11_PIN"
YUBIKEY_SLOT_ENV = "KEYMINT_YUBIKEY_SLOT"
YUBIKEY_SERIAL_ENV = "KEYMINT_YUBIKEY_SERIAL"
YUBIKEY_PIN_ENV = "KEYMINT_YUBIKEY_PIN"

# The settings above, for the signer's schema (signer.settings); secrets are never echoed.
VAULT_SETTINGS = (
    Setting(VAULT_ENV, Kind.TEXT, "pkcs11"),
    Setting(LABEL_ENV, Kind.TEXT, "signer-1"),
    Setting(PASSPHRASE_ENV, Kind.TEXT, "<the passphrase, from a secret>", secret=True),
    Setting(PKCS11_MODULE_ENV, Kind.TEXT, "/usr/lib/softhsm/libsofthsm2.so"),
    Setting(PKCS11_TOKEN_LABEL_ENV, Kind.TEXT, "keymint-signer-1"),
    Setting(PKCS11_KEY_LABEL_ENV, Kind.TEXT, "keymint-share-wrap"),
    Setting(PKCS11_PIN_ENV, Kind.TEXT, "<the user PIN, from a secret>", secret=True),
    Setting(YUBIKEY_SLOT_ENV, Kind.TEXT, "9d"),
    Setting(YUBIKEY_SERIAL_ENV, Kind.INTEGER, "12345678"),
    Setting(YUBIKEY_PIN_ENV, Kind.TEXT, "<the PIV PIN, from a secret>", secret=True),
)

DEFAULT_PKCS11_KEY_LABEL = "keymint-share-wrap"
DEFAULT_YUBIKEY_SLOT = 0x9D
# Slots that can hold a key usable for ECDH: authentication, signature, key management, card
# authentication, and the twenty retired key-management slots.
_PIV_KEY_SLOTS = frozenset({0x9A, 0x9C, 0x9D, 0x9E, *range(0x82, 0x96)})


@dataclass(frozen=True, kw_only=True)
class VaultConfig:
    """Base of the vault configurations; `label` is bound into every sealed blob."""

    label: str = ""

    def __post_init__(self) -> None:
        try:
            validate_label(self.label)
        except VaultConfigError as exc:
            raise VaultConfigError(LABEL_ENV, exc.problem) from None


@dataclass(frozen=True, kw_only=True)
class SealedFileConfig(VaultConfig):
    """Development only: the passphrase comes from KEYMINT_VAULT_PASSPHRASE."""


@dataclass(frozen=True, kw_only=True)
class Pkcs11Config(VaultConfig):
    module: str
    token_label: str
    key_label: str = DEFAULT_PKCS11_KEY_LABEL


@dataclass(frozen=True, kw_only=True)
class YubiKeyConfig(VaultConfig):
    slot: int = DEFAULT_YUBIKEY_SLOT
    serial: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.slot not in _PIV_KEY_SLOTS:
            raise VaultConfigError(YUBIKEY_SLOT_ENV, f"{self.slot:02x} is not a PIV key slot")


def parse_vault_config(env: Mapping[str, str]) -> VaultConfig:
    """Build the vault configuration from a plain mapping such as `os.environ`."""
    kind = _get(env, VAULT_ENV)
    label = env.get(LABEL_ENV, "")
    if kind == "sealed-file":
        return SealedFileConfig(label=label)
    if kind == "pkcs11":
        return Pkcs11Config(
            label=label,
            module=_get(env, PKCS11_MODULE_ENV),
            token_label=_get(env, PKCS11_TOKEN_LABEL_ENV),
            key_label=_get(env, PKCS11_KEY_LABEL_ENV, DEFAULT_PKCS11_KEY_LABEL),
        )
    if kind == "yubikey":
        return YubiKeyConfig(
            label=label,
            slot=_parse_slot(env.get(YUBIKEY_SLOT_ENV)),
            serial=_parse_serial(env.get(YUBIKEY_SERIAL_ENV)),
        )
    raise VaultConfigError(
        VAULT_ENV, f"unknown vault {kind!r}; expected one of sealed-file, pkcs11, yubikey"
    )


def open_vault(config: VaultConfig, *, env: Mapping[str, str] = os.environ) -> ShareVault:
    """Build the configured vault, reading its secret from `env`. Touches no device yet."""
    if isinstance(config, SealedFileConfig):
        return SealedFileVault(_secret(env, PASSPHRASE_ENV), label=config.label)
    if isinstance(config, Pkcs11Config):
        from signer.vault.pkcs11 import Pkcs11Vault

        return Pkcs11Vault(
            module=config.module,
            token_label=config.token_label,
            key_label=config.key_label,
            pin=_secret(env, PKCS11_PIN_ENV),
            label=config.label,
        )
    if isinstance(config, YubiKeyConfig):
        from yubikit.piv import SLOT

        from signer.vault.yubikey import YubiKeyVault

        return YubiKeyVault.attached(
            pin=_secret(env, YUBIKEY_PIN_ENV),
            serial=config.serial,
            slot=SLOT(config.slot),
            label=config.label,
        )
    raise TypeError(f"not a vault configuration: {type(config).__name__}")


def store_share(vault: ShareVault, share: bytes, path: str | os.PathLike[str]) -> None:
    """Seal `share` and write the blob to `path` atomically, readable by its owner only."""
    blob = vault.seal(share)
    target = Path(path)
    write_atomically(target, blob, mode=0o600)
    logger.info("sealed key share written to %s with the %s", target, vault.description)


def load_share(vault: ShareVault, path: str | os.PathLike[str]) -> bytes:
    """Read the sealed blob at `path` and unseal it with `vault`."""
    target = Path(path)
    try:
        blob = target.read_bytes()
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        raise VaultUnavailable(vault.name, f"no sealed share at {target}") from None
    except OSError as exc:
        raise VaultUnavailable(vault.name, f"cannot read {target}: {exc.strerror}") from exc
    if mode & 0o077:
        logger.warning("sealed key share %s is readable by others (mode %03o)", target, mode)
    share = vault.unseal(blob)
    logger.info("key share unsealed from %s with the %s", target, vault.description)
    return share


def _get(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = env.get(name, "").strip()
    if value:
        return value
    if default is not None:
        return default
    raise VaultConfigError(name, "is not set")


def _secret(env: Mapping[str, str], name: str) -> str:
    # Never echo the value: the error names only the variable.
    value = env.get(name, "")
    if not value:
        raise VaultConfigError(name, "is not set (the vault needs this secret to unseal)")
    return value


def _parse_slot(raw: str | None) -> int:
    if raw is None or not raw.strip():
        return DEFAULT_YUBIKEY_SLOT
    text = raw.strip().lower().removeprefix("0x")
    try:
        slot = int(text, 16)
    except ValueError:
        raise VaultConfigError(
            YUBIKEY_SLOT_ENV, f"expected a PIV slot in hex such as 9d, got {raw!r}"
        ) from None
    if slot not in _PIV_KEY_SLOTS:
        raise VaultConfigError(YUBIKEY_SLOT_ENV, f"{raw!r} is not a PIV key slot (such as 9d)")
    return slot


def _parse_serial(raw: str | None) -> int | None:
    if raw is None or not raw.strip():
        return None
    try:
        serial = int(raw.strip(), 10)
    except ValueError:
        raise VaultConfigError(
            YUBIKEY_SERIAL_ENV, f"expected a decimal serial number, got {raw!r}"
        ) from None
    if serial <= 0:
        raise VaultConfigError(YUBIKEY_SERIAL_ENV, f"expected a positive serial, got {raw!r}")
    return serial
