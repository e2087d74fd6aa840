"""The sealed-blob envelope: encoding, and refusing anything that is not one of ours."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signer.errors import SignerError
from signer.vault.base import (
    FORMAT_VERSION,
    MAGIC,
    CorruptBlob,
    SealedBlob,
    ShareVault,
    VaultConfigError,
    VaultError,
    VaultKind,
    WrongLabel,
    WrongVaultKind,
    envelope_header,
)


class XorVault(ShareVault):
    """A toy vault, so the envelope checks in ShareVault can be tested without a KDF or device."""

    kind = VaultKind.PKCS11
    fields = ("associated_data", "masked")

    @property
    def description(self) -> str:
        return "xor test vault"

    def _seal_fields(self, share: bytes, associated_data: bytes) -> tuple[bytes, ...]:
        return (associated_data, bytes(b ^ 0x5A for b in share))

    def _unseal_fields(self, fields: tuple[bytes, ...], associated_data: bytes) -> bytes:
        seen, masked = fields
        assert seen == associated_data
        return bytes(b ^ 0x5A for b in masked)


def test_errors_share_the_signer_root() -> None:
    assert issubclass(VaultError, SignerError)
    for error in (CorruptBlob, WrongVaultKind, WrongLabel, VaultConfigError):
        assert issubclass(error, VaultError)


def test_kind_slugs_are_the_names_operators_write() -> None:
    assert [kind.slug for kind in VaultKind] == ["sealed-file", "pkcs11", "yubikey"]


def test_header_is_the_prefix_of_the_encoded_blob() -> None:
    blob = SealedBlob(kind=VaultKind.YUBIKEY, label="signer-2", fields=(b"a", b"", b"ccc"))
    encoded = blob.encode()
    assert encoded.startswith(envelope_header(VaultKind.YUBIKEY, "signer-2"))
    assert encoded[:4] == MAGIC
    assert encoded[4] == FORMAT_VERSION
    assert encoded[5] == VaultKind.YUBIKEY
    assert SealedBlob.decode(encoded) == blob


@given(
    kind=st.sampled_from(VaultKind),
    label=st.text(max_size=60),
    fields=st.lists(st.binary(max_size=300), max_size=8).map(tuple),
)
def test_encode_decode_round_trip(kind: VaultKind, label: str, fields: tuple[bytes, ...]) -> None:
    blob = SealedBlob(kind=kind, label=label, fields=fields)
    assert SealedBlob.decode(blob.encode()) == blob


@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=40).map(lambda tail: MAGIC + bytes((FORMAT_VERSION,)) + tail),
    )
)
def test_decode_refuses_garbage_only_with_corrupt_blob(data: bytes) -> None:
    with contextlib.suppress(CorruptBlob):
        SealedBlob.decode(data)


@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_decode_of_a_mutated_blob_parses_or_is_corrupt(position: int, value: int) -> None:
    encoded = SealedBlob(kind=VaultKind.YUBIKEY, label="signer", fields=(b"ab", b"cde")).encode()
    position %= len(encoded)
    mutated = encoded[:position] + bytes((value,)) + encoded[position + 1 :]
    with contextlib.suppress(CorruptBlob):
        assert isinstance(SealedBlob.decode(mutated), SealedBlob)


@given(st.binary(max_size=64))
def test_decode_of_a_truncated_blob_is_corrupt(extra: bytes) -> None:
    encoded = SealedBlob(kind=VaultKind.PKCS11, label="x", fields=(extra, b"tail")).encode()
    for cut in range(len(encoded)):
        with pytest.raises(CorruptBlob):
            SealedBlob.decode(encoded[:cut])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"NOPE" + b[4:], "bad magic"),
        (lambda b: b[:4] + bytes((FORMAT_VERSION + 1,)) + b[5:], "version 2 is not supported"),
        (lambda b: b[:5] + b"\x09" + b[6:], "unknown vault kind 9"),
        (lambda b: b + b"\x00", "1 unexpected trailing bytes"),
        (lambda b: b[:7] + b"\xff" + b[8:], "label is not UTF-8"),
    ],
    ids=["magic", "version", "kind", "trailing", "label"],
)
def test_decode_says_what_is_wrong(mutate: Callable[[bytes], bytes], message: str) -> None:
    encoded = SealedBlob(kind=VaultKind.PKCS11, label="s", fields=(b"f",)).encode()
    with pytest.raises(CorruptBlob, match=message):
        SealedBlob.decode(mutate(encoded))


def test_label_longer_than_255_bytes_is_refused() -> None:
    with pytest.raises(VaultConfigError, match="label"):
        XorVault(label="é" * 128)


def test_vault_round_trip_passes_the_header_as_associated_data() -> None:
    vault = XorVault(label="signer-1")
    assert vault.unseal(vault.seal(b"share")) == b"share"


def test_vault_refuses_another_kind_of_blob() -> None:
    foreign = SealedBlob(kind=VaultKind.YUBIKEY, label="", fields=(b"a", b"b")).encode()
    with pytest.raises(WrongVaultKind) as caught:
        XorVault().unseal(foreign)
    assert caught.value.expected is VaultKind.PKCS11
    assert caught.value.found is VaultKind.YUBIKEY
    assert "sealed by the yubikey vault" in str(caught.value)


def test_vault_refuses_a_blob_for_another_label() -> None:
    blob = XorVault(label="signer-1").seal(b"share")
    with pytest.raises(WrongLabel, match=r"'signer-1'.*'signer-2'"):
        XorVault(label="signer-2").unseal(blob)


def test_vault_refuses_a_blob_with_the_wrong_number_of_fields() -> None:
    blob = SealedBlob(kind=VaultKind.PKCS11, label="", fields=(b"only one",)).encode()
    with pytest.raises(CorruptBlob, match="1 fields, expected 2"):
        XorVault().unseal(blob)


@pytest.mark.parametrize("share", [b"", b"x" * 4097], ids=["empty", "oversized"])
def test_vault_refuses_to_seal_an_empty_or_oversized_share(share: bytes) -> None:
    with pytest.raises(VaultError):
        XorVault().seal(share)


def test_repr_is_the_description() -> None:
    assert repr(XorVault()) == "<XorVault xor test vault>"
