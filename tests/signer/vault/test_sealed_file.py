"""The development vault: passphrase-derived AES-256-GCM."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from signer.vault.base import (
    CorruptBlob,
    SealedBlob,
    VaultConfigError,
    VaultKind,
    WrongLabel,
    WrongSecret,
)
from signer.vault.sealed_file import MIN_SCRYPT_LOG2_N, SealedFileVault

PASSPHRASE = "correct horse battery staple"


def replace_field(blob: bytes, index: int, value: bytes) -> bytes:
    sealed = SealedBlob.decode(blob)
    fields = list(sealed.fields)
    fields[index] = value
    return SealedBlob(kind=sealed.kind, label=sealed.label, fields=tuple(fields)).encode()


def flip_last_byte(field: bytes) -> bytes:
    return field[:-1] + bytes((field[-1] ^ 0x01,))


def test_round_trip(share: bytes) -> None:
    vault = SealedFileVault(PASSPHRASE, label="signer-1")
    blob = vault.seal(share)
    assert share not in blob
    assert SealedFileVault(PASSPHRASE, label="signer-1").unseal(blob) == share


def test_each_seal_is_fresh(share: bytes) -> None:
    vault = SealedFileVault(PASSPHRASE)
    assert vault.seal(share) != vault.seal(share)


def test_construction_logs_a_development_only_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="signer.vault.sealed_file"):
        SealedFileVault(PASSPHRASE)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.name == "signer.vault.sealed_file"
    assert "development only" in record.getMessage()
    assert PASSPHRASE not in caplog.text


def test_wrong_passphrase_is_named(share: bytes, assert_no_secrets: Callable[..., None]) -> None:
    blob = SealedFileVault(PASSPHRASE).seal(share)
    with pytest.raises(WrongSecret) as caught:
        SealedFileVault("not the passphrase").unseal(blob)
    assert caught.value.secret == "passphrase"
    assert "wrong passphrase or corrupted blob" in str(caught.value)
    assert_no_secrets(caught.value, share, PASSPHRASE, "not the passphrase")


@pytest.mark.parametrize(
    ("field", "error", "message"),
    [
        ("scrypt_log2_n", WrongSecret, "wrong passphrase or corrupted blob"),
        ("salt", WrongSecret, "wrong passphrase or corrupted blob"),
        ("passphrase_check", WrongSecret, "wrong passphrase or corrupted blob"),
        ("nonce", CorruptBlob, "corrupted or tampered"),
        ("ciphertext", CorruptBlob, "corrupted or tampered"),
    ],
)
def test_tampered_field_is_refused(
    share: bytes,
    assert_no_secrets: Callable[..., None],
    field: str,
    error: type[Exception],
    message: str,
) -> None:
    vault = SealedFileVault(PASSPHRASE, scrypt_log2_n=MIN_SCRYPT_LOG2_N)
    blob = vault.seal(share)
    index = SealedFileVault.fields.index(field)
    tampered = replace_field(blob, index, flip_last_byte(SealedBlob.decode(blob).fields[index]))
    with pytest.raises(error, match=message) as caught:
        vault.unseal(tampered)
    assert_no_secrets(caught.value, share, PASSPHRASE)


def test_tampered_label_is_refused_before_decryption(share: bytes) -> None:
    blob = SealedFileVault(PASSPHRASE, label="signer-1").seal(share)
    relabelled = blob.replace(b"signer-1", b"signer-2")
    with pytest.raises(WrongLabel):
        SealedFileVault(PASSPHRASE, label="signer-1").unseal(relabelled)
    with pytest.raises(CorruptBlob, match="tampered"):
        # The header is the GCM associated data, so forging a matching label does not help.
        SealedFileVault(PASSPHRASE, label="signer-2").unseal(relabelled)


def test_blob_records_its_scrypt_cost(share: bytes) -> None:
    blob = SealedFileVault(PASSPHRASE, scrypt_log2_n=MIN_SCRYPT_LOG2_N).seal(share)
    assert SealedBlob.decode(blob).fields[0] == bytes((MIN_SCRYPT_LOG2_N,))
    assert SealedFileVault(PASSPHRASE).unseal(blob) == share


@pytest.mark.parametrize("log2_n", [1, 13, 21, 255])
def test_blob_asking_for_an_unreasonable_scrypt_cost_is_corrupt(share: bytes, log2_n: int) -> None:
    blob = SealedFileVault(PASSPHRASE, scrypt_log2_n=MIN_SCRYPT_LOG2_N).seal(share)
    with pytest.raises(CorruptBlob, match="scrypt cost"):
        SealedFileVault(PASSPHRASE).unseal(replace_field(blob, 0, bytes((log2_n,))))


def test_blob_with_a_short_salt_is_corrupt(share: bytes) -> None:
    blob = SealedFileVault(PASSPHRASE, scrypt_log2_n=MIN_SCRYPT_LOG2_N).seal(share)
    with pytest.raises(CorruptBlob, match="'salt' is 15 bytes, expected 16"):
        SealedFileVault(PASSPHRASE).unseal(replace_field(blob, 1, b"s" * 15))


def test_kind_is_sealed_file(share: bytes) -> None:
    blob = SealedFileVault(PASSPHRASE, scrypt_log2_n=MIN_SCRYPT_LOG2_N).seal(share)
    assert SealedBlob.decode(blob).kind is VaultKind.SEALED_FILE


@pytest.mark.parametrize("passphrase", ["", b""])
def test_empty_passphrase_is_refused(passphrase: str | bytes) -> None:
    with pytest.raises(VaultConfigError, match="passphrase: must not be empty"):
        SealedFileVault(passphrase)


@pytest.mark.parametrize("log2_n", [10, 21])
def test_unreasonable_scrypt_cost_is_refused_at_construction(log2_n: int) -> None:
    with pytest.raises(VaultConfigError, match="scrypt_log2_n"):
        SealedFileVault(PASSPHRASE, scrypt_log2_n=log2_n)


def test_repr_and_description_hold_no_passphrase() -> None:
    vault = SealedFileVault(PASSPHRASE)
    assert PASSPHRASE not in repr(vault)
    assert vault.name == "sealed-file"
    assert "development only" in vault.description
