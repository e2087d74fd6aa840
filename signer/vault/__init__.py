"""Share vaults: a FROST key share sealed at rest, unsealed into signer memory at start.

`sealed_file` is for development; `pkcs11` (an HSM token) and `yubikey` (a PIV slot) keep the
sealing key in hardware. Those two need optional extras, so they are imported from their own
modules (or through `open_vault`), not from here.
"""

from signer.vault.base import (
    CorruptBlob,
    SealedBlob,
    ShareVault,
    VaultConfigError,
    VaultError,
    VaultKind,
    VaultUnavailable,
    WrongKey,
    WrongLabel,
    WrongSecret,
    WrongVaultKind,
)
from signer.vault.config import (
    Pkcs11Config,
    SealedFileConfig,
    VaultConfig,
    YubiKeyConfig,
    load_share,
    open_vault,
    parse_vault_config,
    store_share,
)
from signer.vault.sealed_file import SealedFileVault

__all__ = [
    "CorruptBlob",
    "Pkcs11Config",
    "SealedBlob",
    "SealedFileConfig",
    "SealedFileVault",
    "ShareVault",
    "VaultConfig",
    "VaultConfigError",
    "VaultError",
    "VaultKind",
    "VaultUnavailable",
    "WrongKey",
    "WrongLabel",
    "WrongSecret",
    "WrongVaultKind",
    "YubiKeyConfig",
    "load_share",
    "open_vault",
    "parse_vault_config",
    "store_share",
]
