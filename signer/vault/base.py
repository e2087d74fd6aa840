"""The share-vault interface, the sealed-blob envelope and the vault errors.

A vault keeps one FROST key share sealed at rest and unseals it into signer memory at start. Every
vault writes the same self-describing envelope:

    magic "KMSV" | version u8 | kind u8 | label_len u8 | label (UTF-8)
    | field_count u8 | field_count x (length u16 big-endian | bytes)

Everything before `field_count` is the envelope header, and it is also the associated data of the
vault's AEAD: a blob cannot be moved to another vault kind, another format version or another label
without failing authentication. The header is checked in clear first so that such a move is reported
as what it is rather than as a failed decryption.

No exception, repr or log line in this package contains a share, a key, a PIN or a passphrase.
"""

from __future__ import annotations

import abc
import enum
import struct
from dataclasses import dataclass
from typing import ClassVar

from signer.errors import SignerError

MAGIC = b"KMSV"
FORMAT_VERSION = 1
MAX_LABEL_BYTES = 255
MAX_FIELD_BYTES = 0xFFFF
MAX_SHARE_BYTES = 4096


class VaultKind(enum.IntEnum):
    """Which vault sealed a blob; the byte is part of the envelope and never reused."""

    SEALED_FILE = 1
    PKCS11 = 2
    YUBIKEY = 3

    @property
    def slug(self) -> str:
        """The name operators write in KEYMINT_VAULT."""
        return self.name.lower().replace("_", "-")


class VaultError(SignerError):
    """Root of every share-vault error."""


class VaultConfigError(VaultError):
    """A setting is missing or invalid; `setting` names it (an environment variable or argument)."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")


class VaultUnavailable(VaultError):
    """The vault's backing store (module, token, key, device, file) cannot be reached or found."""

    def __init__(self, vault: str, problem: str) -> None:
        self.vault = vault
        self.problem = problem
        super().__init__(f"{vault} vault unavailable: {problem}")


class WrongSecret(VaultError):
    """A PIN or passphrase was refused. `secret` is its name, never its value."""

    def __init__(self, secret: str, problem: str, *, attempts_remaining: int | None = None) -> None:
        self.secret = secret
        self.problem = problem
        self.attempts_remaining = attempts_remaining
        super().__init__(problem)


class CorruptBlob(VaultError):
    """The blob is not a sealed share of this format, or it failed authentication."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"corrupt sealed blob: {problem}")


class WrongVaultKind(VaultError):
    """The blob was sealed by another kind of vault."""

    def __init__(self, *, expected: VaultKind, found: VaultKind) -> None:
        self.expected = expected
        self.found = found
        super().__init__(
            f"blob was sealed by the {found.slug} vault; "
            f"this {expected.slug} vault cannot unseal it"
        )


class WrongLabel(VaultError):
    """The blob was sealed for another label (usually another signer)."""

    def __init__(self, *, expected: str, found: str) -> None:
        self.expected = expected
        self.found = found
        super().__init__(
            f"blob was sealed for label {found!r}; this vault unseals label {expected!r}"
        )


class WrongKey(VaultError):
    """The blob was sealed to a different hardware key than the one this vault reaches."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


def validate_label(label: str) -> str:
    if len(label.encode("utf-8")) > MAX_LABEL_BYTES:
        raise VaultConfigError("label", f"must be at most {MAX_LABEL_BYTES} bytes of UTF-8")
    return label


def envelope_header(kind: VaultKind, label: str) -> bytes:
    """The envelope's header, which every vault also uses as its AEAD associated data."""
    encoded = validate_label(label).encode("utf-8")
    return MAGIC + bytes((FORMAT_VERSION, kind, len(encoded))) + encoded


@dataclass(frozen=True, slots=True)
class SealedBlob:
    """A parsed envelope. `fields` are the vault-specific parts, in the vault's declared order."""

    kind: VaultKind
    label: str
    fields: tuple[bytes, ...]

    @property
    def header(self) -> bytes:
        return envelope_header(self.kind, self.label)

    def encode(self) -> bytes:
        if len(self.fields) > 0xFF:
            raise ValueError("at most 255 fields")
        parts = [self.header, bytes((len(self.fields),))]
        for field in self.fields:
            if len(field) > MAX_FIELD_BYTES:
                raise ValueError(f"a field is limited to {MAX_FIELD_BYTES} bytes")
            parts.append(struct.pack(">H", len(field)))
            parts.append(field)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> SealedBlob:
        reader = _Reader(data)
        if reader.take(len(MAGIC), "magic") != MAGIC:
            raise CorruptBlob("not a keymint sealed share (bad magic)")
        version = reader.byte("version")
        if version != FORMAT_VERSION:
            raise CorruptBlob(
                f"format version {version} is not supported (expected {FORMAT_VERSION})"
            )
        kind_byte = reader.byte("vault kind")
        try:
            kind = VaultKind(kind_byte)
        except ValueError:
            raise CorruptBlob(f"unknown vault kind {kind_byte}") from None
        try:
            label = reader.take(reader.byte("label length"), "label").decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptBlob("label is not UTF-8") from None
        count = reader.byte("field count")
        fields = tuple(reader.take(reader.u16("field length"), "field") for _ in range(count))
        if not reader.exhausted:
            raise CorruptBlob(f"{reader.remaining} unexpected trailing bytes")
        return cls(kind=kind, label=label, fields=fields)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._offset

    @property
    def exhausted(self) -> bool:
        return self.remaining == 0

    def take(self, count: int, what: str) -> bytes:
        if count > self.remaining:
            raise CorruptBlob(f"truncated: {what} needs {count} bytes at offset {self._offset}")
        chunk = self._data[self._offset : self._offset + count]
        self._offset += count
        return chunk

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        value: int = struct.unpack(">H", self.take(2, what))[0]
        return value


def expect_length(field: bytes, name: str, length: int) -> bytes:
    """Vault-side check of a fixed-size field, so a bad blob fails as CorruptBlob, not deeper."""
    if len(field) != length:
        raise CorruptBlob(f"field {name!r} is {len(field)} bytes, expected {length}")
    return field


class ShareVault(abc.ABC):
    """Seals a key share into a self-describing blob and unseals it again.

    Subclasses implement `_seal_fields` / `_unseal_fields` with the envelope header as associated
    data; this class owns the envelope, so every vault refuses foreign blobs the same way.
    """

    kind: ClassVar[VaultKind]
    fields: ClassVar[tuple[str, ...]]

    def __init__(self, *, label: str = "") -> None:
        self._label = validate_label(label)

    @property
    def name(self) -> str:
        return self.kind.slug

    @property
    def label(self) -> str:
        """Bound into every blob; signers use their id so their shares cannot be swapped."""
        return self._label

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """Where the sealing key lives, for logs and errors. Never contains a secret."""

    def seal(self, share: bytes) -> bytes:
        if not share:
            raise VaultError("refusing to seal an empty share")
        if len(share) > MAX_SHARE_BYTES:
            raise VaultError(f"a share is at most {MAX_SHARE_BYTES} bytes, got {len(share)}")
        header = envelope_header(self.kind, self._label)
        fields = self._seal_fields(share, header)
        return SealedBlob(kind=self.kind, label=self._label, fields=fields).encode()

    def unseal(self, blob: bytes) -> bytes:
        sealed = SealedBlob.decode(blob)
        if sealed.kind != self.kind:
            raise WrongVaultKind(expected=self.kind, found=sealed.kind)
        if sealed.label != self._label:
            raise WrongLabel(expected=self._label, found=sealed.label)
        if len(sealed.fields) != len(self.fields):
            raise CorruptBlob(
                f"{self.kind.slug} blob has {len(sealed.fields)} fields, expected "
                f"{len(self.fields)} ({', '.join(self.fields)})"
            )
        return self._unseal_fields(sealed.fields, sealed.header)

    @abc.abstractmethod
    def _seal_fields(self, share: bytes, associated_data: bytes) -> tuple[bytes, ...]:
        """Encrypt `share`; return the fields named by `fields`, in that order."""

    @abc.abstractmethod
    def _unseal_fields(self, fields: tuple[bytes, ...], associated_data: bytes) -> bytes:
        """Decrypt; `fields` has already been checked to have the declared count."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"
