"""The YubiKey PIV vault, driven through the stand-in PIV session of conftest.SoftYubiKey.

Everything above the `PivSession` boundary is the vault's real code; below it, the stand-in does
real ECDH with real P-256 keys and enforces the PIN with yubikit's own errors.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from yubikit.core import InvalidPinError
from yubikit.piv import SLOT

from signer.vault.base import (
    CorruptBlob,
    SealedBlob,
    VaultConfigError,
    VaultError,
    VaultKind,
    VaultUnavailable,
    WrongKey,
    WrongSecret,
)
from signer.vault.yubikey import YubiKeyVault, read_slot_public_key
from tests.signer.vault.conftest import YUBIKEY_PIN as PIN
from tests.signer.vault.conftest import SoftYubiKey

WRONG_PIN = "654321"


def make_vault(
    device: SoftYubiKey, *, pin: str = PIN, slot: SLOT = SLOT.KEY_MANAGEMENT
) -> YubiKeyVault:
    return YubiKeyVault(pin=pin, session_factory=device.open_session, slot=slot, label="signer-3")


def test_round_trip(yubikey: SoftYubiKey, share: bytes) -> None:
    vault = make_vault(yubikey)
    blob = vault.seal(share)
    assert share not in blob
    assert SealedBlob.decode(blob).kind is VaultKind.YUBIKEY
    assert vault.unseal(blob) == share
    assert yubikey.open_sessions == 0


def test_sealing_needs_only_the_public_key(yubikey: SoftYubiKey, share: bytes) -> None:
    make_vault(yubikey, pin="00000000").seal(share)
    assert yubikey.pin_verifications == 0


def test_each_seal_uses_a_fresh_ephemeral_key(yubikey: SoftYubiKey, share: bytes) -> None:
    vault = make_vault(yubikey)
    first, second = SealedBlob.decode(vault.seal(share)), SealedBlob.decode(vault.seal(share))
    assert first.fields[2] != second.fields[2]


def test_old_firmware_reads_the_public_key_from_the_certificate(share: bytes) -> None:
    device = SoftYubiKey(has_metadata=False)
    device.generate_key()
    vault = make_vault(device)
    assert vault.unseal(vault.seal(share)) == share


def test_read_slot_public_key(yubikey: SoftYubiKey) -> None:
    with yubikey.open_session() as session:
        public_key = read_slot_public_key(session, SLOT.KEY_MANAGEMENT)
    assert public_key == yubikey.keys[SLOT.KEY_MANAGEMENT].public_key()


def test_wrong_pin_says_how_many_tries_remain(
    yubikey: SoftYubiKey, share: bytes, assert_no_secrets: Callable[..., None]
) -> None:
    blob = make_vault(yubikey).seal(share)
    with pytest.raises(WrongSecret) as caught:
        make_vault(yubikey, pin=WRONG_PIN).unseal(blob)
    assert caught.value.secret == "PIN"
    assert caught.value.attempts_remaining == 2
    assert str(caught.value) == "the YubiKey PIV PIN was refused; 2 tries remaining"
    assert isinstance(caught.value.__cause__, InvalidPinError)
    assert_no_secrets(caught.value, share, PIN, WRONG_PIN)
    assert yubikey.pin_attempts_remaining == 2
    assert yubikey.open_sessions == 0


def test_pin_retry_counter_decrements_then_blocks(yubikey: SoftYubiKey, share: bytes) -> None:
    blob = make_vault(yubikey).seal(share)
    wrong = make_vault(yubikey, pin=WRONG_PIN)
    messages = []
    for expected_remaining in (2, 1, 0):
        with pytest.raises(WrongSecret) as caught:
            wrong.unseal(blob)
        assert caught.value.attempts_remaining == expected_remaining
        assert yubikey.pin_attempts_remaining == expected_remaining
        messages.append(str(caught.value))
    assert messages[1].endswith("1 try remaining")
    assert "blocked" in messages[2]
    with pytest.raises(WrongSecret, match="blocked"):
        make_vault(yubikey).unseal(blob)  # even the right PIN, once blocked


def test_right_pin_resets_the_retry_counter(yubikey: SoftYubiKey, share: bytes) -> None:
    blob = make_vault(yubikey).seal(share)
    with pytest.raises(WrongSecret):
        make_vault(yubikey, pin=WRONG_PIN).unseal(blob)
    assert make_vault(yubikey).unseal(blob) == share
    assert yubikey.pin_attempts_remaining == 3


def test_blob_for_another_yubikey_is_refused_without_spending_a_pin_try(
    yubikey: SoftYubiKey, share: bytes
) -> None:
    other = SoftYubiKey()
    other.generate_key()
    blob = make_vault(other).seal(share)
    with pytest.raises(WrongKey, match=r"blob was sealed to key [0-9a-f]{32}, but PIV slot 9d"):
        make_vault(yubikey, pin=WRONG_PIN).unseal(blob)
    assert yubikey.pin_verifications == 0


def test_blob_for_another_slot_is_refused(yubikey: SoftYubiKey, share: bytes) -> None:
    yubikey.generate_key(SLOT.RETIRED1)
    blob = make_vault(yubikey, slot=SLOT.RETIRED1).seal(share)
    with pytest.raises(WrongKey, match="sealed to PIV slot 82; this vault uses slot 9d"):
        make_vault(yubikey).unseal(blob)


def test_empty_slot_is_unavailable(share: bytes) -> None:
    with pytest.raises(VaultUnavailable, match="PIV slot 9d holds no key"):
        make_vault(SoftYubiKey()).seal(share)


def test_empty_slot_on_old_firmware_is_unavailable(share: bytes) -> None:
    with pytest.raises(VaultUnavailable, match="PIV slot 9d holds no key"):
        make_vault(SoftYubiKey(has_metadata=False)).seal(share)


def test_slot_with_a_p384_key_is_refused(share: bytes) -> None:
    device = SoftYubiKey()
    device.generate_key(curve=ec.SECP384R1())
    with pytest.raises(VaultUnavailable, match="holds a secp384r1 EC key; this vault needs P-256"):
        make_vault(device).seal(share)


def test_every_single_byte_change_is_refused(
    yubikey: SoftYubiKey, share: bytes, assert_no_secrets: Callable[..., None]
) -> None:
    vault = make_vault(yubikey)
    blob = vault.seal(share)
    for position in range(len(blob)):
        tampered = blob[:position] + bytes((blob[position] ^ 0x01,)) + blob[position + 1 :]
        with pytest.raises(VaultError) as caught:
            vault.unseal(tampered)
        assert_no_secrets(caught.value, share, PIN)
    assert yubikey.open_sessions == 0


@pytest.mark.parametrize(
    ("field", "error", "message"),
    [
        ("recipient_fingerprint", WrongKey, "sealed to key"),
        ("nonce", CorruptBlob, "corrupted or tampered"),
        ("ciphertext", CorruptBlob, "corrupted or tampered"),
    ],
)
def test_tampered_field_is_named(
    yubikey: SoftYubiKey, share: bytes, field: str, error: type[Exception], message: str
) -> None:
    vault = make_vault(yubikey)
    sealed = SealedBlob.decode(vault.seal(share))
    index = YubiKeyVault.fields.index(field)
    fields = list(sealed.fields)
    fields[index] = fields[index][:-1] + bytes((fields[index][-1] ^ 0x01,))
    tampered = SealedBlob(kind=sealed.kind, label=sealed.label, fields=tuple(fields))
    with pytest.raises(error, match=message):
        vault.unseal(tampered.encode())


def test_ephemeral_key_off_the_curve_is_corrupt(yubikey: SoftYubiKey, share: bytes) -> None:
    vault = make_vault(yubikey)
    sealed = SealedBlob.decode(vault.seal(share))
    fields = list(sealed.fields)
    fields[2] = b"\x04" + b"\x00" * 64
    tampered = SealedBlob(kind=sealed.kind, label=sealed.label, fields=tuple(fields))
    with pytest.raises(CorruptBlob, match="not a P-256 point"):
        vault.unseal(tampered.encode())


@pytest.mark.parametrize("pin", ["", "123456789"], ids=["empty", "too-long"])
def test_pin_of_impossible_length_is_refused_at_construction(
    yubikey: SoftYubiKey, pin: str
) -> None:
    with pytest.raises(VaultConfigError, match="pin: a PIV PIN is 1 to 8 bytes"):
        make_vault(yubikey, pin=pin)


def test_repr_names_the_slot_not_the_pin(yubikey: SoftYubiKey) -> None:
    vault = make_vault(yubikey)
    assert repr(vault) == "<YubiKeyVault YubiKey PIV slot 9d (injected PIV session)>"
    assert vault.name == "yubikey"


def test_attached_vault_touches_no_device_until_used() -> None:
    vault = YubiKeyVault.attached(pin=PIN, serial=12345678)
    assert vault.description == "YubiKey PIV slot 9d (YubiKey serial 12345678)"


def test_attached_vault_without_that_yubikey_is_unavailable(
    yubikey: SoftYubiKey, share: bytes
) -> None:
    # The real PC/SC path: no YubiKey with serial 1 exists, attached or not.
    blob = make_vault(yubikey).seal(share)
    vault = YubiKeyVault.attached(pin=PIN, serial=1, label="signer-3")
    with pytest.raises(VaultUnavailable, match="no YubiKey with serial 1 found"):
        vault.unseal(blob)
