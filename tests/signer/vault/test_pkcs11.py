"""The PKCS#11 vault against a real SoftHSM2 token, one fresh token per test."""

from __future__ import annotations

from collections.abc import Callable

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass

from signer.vault.base import (
    CorruptBlob,
    SealedBlob,
    VaultConfigError,
    VaultError,
    VaultKind,
    VaultUnavailable,
    WrongSecret,
)
from signer.vault.pkcs11 import Pkcs11Vault, ensure_key, open_module
from tests.signer.vault.conftest import KEY_LABEL, SoftHsmToken

WRONG_PIN = "wrong-pin-4321"


def make_vault(token: SoftHsmToken, **overrides: str) -> Pkcs11Vault:
    settings = {
        "module": token.module,
        "token_label": token.token_label,
        "key_label": KEY_LABEL,
        "pin": token.pin,
        "label": "signer-1",
    } | overrides
    return Pkcs11Vault(**settings)


@pytest.fixture
def vault(softhsm_token: SoftHsmToken) -> Pkcs11Vault:
    assert ensure_key(
        module=softhsm_token.module,
        token_label=softhsm_token.token_label,
        key_label=KEY_LABEL,
        pin=softhsm_token.pin,
    )
    return make_vault(softhsm_token)


def test_round_trip(vault: Pkcs11Vault, share: bytes) -> None:
    blob = vault.seal(share)
    assert share not in blob
    assert SealedBlob.decode(blob).kind is VaultKind.PKCS11
    assert vault.unseal(blob) == share


def test_round_trip_many_times_in_one_process(vault: Pkcs11Vault, share: bytes) -> None:
    blobs = [vault.seal(share) for _ in range(5)]
    assert len(set(blobs)) == 5
    assert all(vault.unseal(blob) == share for blob in blobs)


def test_ensure_key_creates_a_key_that_never_leaves_the_token(
    softhsm_token: SoftHsmToken,
) -> None:
    settings = {
        "module": softhsm_token.module,
        "token_label": softhsm_token.token_label,
        "key_label": KEY_LABEL,
        "pin": softhsm_token.pin,
    }
    assert ensure_key(**settings) is True
    assert ensure_key(**settings) is False  # idempotent: the ceremony may be re-run
    token = open_module(softhsm_token.module).get_token(token_label=softhsm_token.token_label)
    with token.open(user_pin=softhsm_token.pin) as session:
        [key] = list(session.get_objects({Attribute.LABEL: KEY_LABEL}))
        assert key[Attribute.CLASS] == ObjectClass.SECRET_KEY
        assert key[Attribute.KEY_TYPE] == KeyType.AES
        assert key[Attribute.VALUE_LEN] == 32
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.TOKEN] is True
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[Attribute.VALUE]


def test_ensure_key_refuses_an_extractable_key_under_the_label(
    softhsm_token: SoftHsmToken,
) -> None:
    token = open_module(softhsm_token.module).get_token(token_label=softhsm_token.token_label)
    with token.open(rw=True, user_pin=softhsm_token.pin) as session:
        session.generate_key(
            KeyType.AES,
            256,
            label=KEY_LABEL,
            store=True,
            template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False},
        )
    with pytest.raises(VaultError, match=r"extractable.*not sensitive"):
        ensure_key(
            module=softhsm_token.module,
            token_label=softhsm_token.token_label,
            key_label=KEY_LABEL,
            pin=softhsm_token.pin,
        )


def test_wrong_pin_is_refused(
    vault: Pkcs11Vault,
    softhsm_token: SoftHsmToken,
    share: bytes,
    assert_no_secrets: Callable[..., None],
) -> None:
    blob = vault.seal(share)
    with pytest.raises(WrongSecret) as caught:
        make_vault(softhsm_token, pin=WRONG_PIN).unseal(blob)
    assert caught.value.secret == "PIN"
    assert "PIN was refused by token 'keymint-test'" in str(caught.value)
    # SoftHSM2 raises CKF_USER_PIN_COUNT_LOW after a failed login (and never locks the PIN).
    assert "the token reports few PIN tries left" in str(caught.value)
    assert caught.value.attempts_remaining is None
    assert_no_secrets(caught.value, share, WRONG_PIN, softhsm_token.pin)
    assert vault.unseal(blob) == share  # the right PIN still works afterwards


def test_missing_key_label_is_named(
    vault: Pkcs11Vault, softhsm_token: SoftHsmToken, share: bytes
) -> None:
    blob = vault.seal(share)
    with pytest.raises(VaultUnavailable) as caught:
        make_vault(softhsm_token, key_label="no-such-key").unseal(blob)
    assert "no AES key labelled 'no-such-key' on token 'keymint-test'" in str(caught.value)
    assert caught.value.vault == "pkcs11"


def test_missing_token_is_named(softhsm_token: SoftHsmToken, share: bytes) -> None:
    with pytest.raises(VaultUnavailable, match="no token labelled 'absent-token' in module"):
        make_vault(softhsm_token, token_label="absent-token").seal(share)


def test_missing_module_is_named(share: bytes) -> None:
    vault = Pkcs11Vault(
        module="/nonexistent/libnothing.so", token_label="t", key_label="k", pin="1234"
    )
    with pytest.raises(VaultUnavailable, match="cannot load PKCS#11 module /nonexistent"):
        vault.seal(share)


def test_blob_sealed_under_another_key_is_refused(
    vault: Pkcs11Vault, softhsm_token: SoftHsmToken, share: bytes
) -> None:
    ensure_key(
        module=softhsm_token.module,
        token_label=softhsm_token.token_label,
        key_label="other-key",
        pin=softhsm_token.pin,
    )
    blob = make_vault(softhsm_token, key_label="other-key").seal(share)
    with pytest.raises(CorruptBlob, match="sealed under another key"):
        vault.unseal(blob)


def test_every_single_byte_change_is_refused(
    vault: Pkcs11Vault, share: bytes, assert_no_secrets: Callable[..., None]
) -> None:
    blob = vault.seal(share)
    for position in range(len(blob)):
        tampered = blob[:position] + bytes((blob[position] ^ 0x80,)) + blob[position + 1 :]
        with pytest.raises(VaultError) as caught:
            vault.unseal(tampered)
        assert_no_secrets(caught.value, share)


def test_tampered_ciphertext_is_corrupt(vault: Pkcs11Vault, share: bytes) -> None:
    blob = vault.seal(share)
    with pytest.raises(CorruptBlob, match="corrupted or tampered"):
        vault.unseal(blob[:-1] + bytes((blob[-1] ^ 1,)))


def test_short_nonce_is_corrupt(vault: Pkcs11Vault, share: bytes) -> None:
    sealed = SealedBlob.decode(vault.seal(share))
    short = SealedBlob(kind=sealed.kind, label=sealed.label, fields=(b"n" * 8, sealed.fields[1]))
    with pytest.raises(CorruptBlob, match="'nonce' is 8 bytes, expected 12"):
        vault.unseal(short.encode())


@pytest.mark.parametrize("setting", ["module", "token_label", "key_label", "pin"])
def test_empty_settings_are_refused(softhsm_token: SoftHsmToken, setting: str) -> None:
    with pytest.raises(VaultConfigError, match=f"{setting}: must not be empty"):
        make_vault(softhsm_token, **{setting: ""})


def test_repr_names_the_key_not_the_pin(vault: Pkcs11Vault, softhsm_token: SoftHsmToken) -> None:
    assert "'keymint-share-wrap'" in repr(vault)
    assert "'keymint-test'" in repr(vault)
    assert softhsm_token.pin not in repr(vault)
