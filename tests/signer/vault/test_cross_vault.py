"""A blob sealed by one kind of vault is refused by every other kind, before any decryption."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from signer.vault.base import ShareVault, VaultKind, WrongVaultKind
from signer.vault.pkcs11 import Pkcs11Vault, ensure_key
from signer.vault.sealed_file import SealedFileVault
from signer.vault.yubikey import YubiKeyVault
from tests.signer.vault.conftest import KEY_LABEL, YUBIKEY_PIN, SoftHsmToken, SoftYubiKey


@pytest.fixture
def vaults(softhsm_token: SoftHsmToken, yubikey: SoftYubiKey) -> dict[VaultKind, ShareVault]:
    ensure_key(
        module=softhsm_token.module,
        token_label=softhsm_token.token_label,
        key_label=KEY_LABEL,
        pin=softhsm_token.pin,
    )
    return {
        VaultKind.SEALED_FILE: SealedFileVault("passphrase", label="signer-1"),
        VaultKind.PKCS11: Pkcs11Vault(
            module=softhsm_token.module,
            token_label=softhsm_token.token_label,
            key_label=KEY_LABEL,
            pin=softhsm_token.pin,
            label="signer-1",
        ),
        VaultKind.YUBIKEY: YubiKeyVault(
            pin=YUBIKEY_PIN, session_factory=yubikey.open_session, label="signer-1"
        ),
    }


def test_every_vault_round_trips(vaults: dict[VaultKind, ShareVault], share: bytes) -> None:
    for kind, vault in vaults.items():
        assert vault.kind is kind
        assert vault.unseal(vault.seal(share)) == share


def test_every_vault_refuses_every_other_kind(
    vaults: dict[VaultKind, ShareVault],
    yubikey: SoftYubiKey,
    share: bytes,
    assert_no_secrets: Callable[..., None],
) -> None:
    blobs = {kind: vault.seal(share) for kind, vault in vaults.items()}
    verifications_before = yubikey.pin_verifications
    for sealer, opener in itertools.permutations(VaultKind, 2):
        with pytest.raises(WrongVaultKind) as caught:
            vaults[opener].unseal(blobs[sealer])
        assert caught.value.found is sealer
        assert caught.value.expected is opener
        assert f"sealed by the {sealer.slug} vault" in str(caught.value)
        assert_no_secrets(caught.value, share)
    assert yubikey.pin_verifications == verifications_before
