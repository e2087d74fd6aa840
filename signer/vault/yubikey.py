"""YubiKey PIV vault: ECIES to a P-256 key that lives in a PIV slot (default 9d, key management).

Seal needs only the slot's public key: an ephemeral P-256 key agrees a secret with it, HKDF turns
the secret into an AES-256-GCM key, and the blob keeps the ephemeral public key. Unseal asks the
YubiKey to redo the agreement with its private key (`calculate_secret`) after `verify_pin`, so the
share can be recovered only where that YubiKey is plugged in and its PIN is known.

The device is reached through a session factory: a callable returning a context manager that yields
an object with `PivSession`'s interface. `YubiKeyVault.attached` wires the real one, which finds the
YubiKey over PC/SC with ykman; everything above that boundary is the same with or without a device.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from yubikit.core import CommandError, InvalidPinError, NotSupportedError
from yubikit.core.smartcard import SW, ApduError
from yubikit.piv import SLOT, SlotMetadata

from signer.vault.base import (
    CorruptBlob,
    ShareVault,
    VaultConfigError,
    VaultError,
    VaultKind,
    VaultUnavailable,
    WrongKey,
    WrongSecret,
    expect_length,
)

if TYPE_CHECKING:
    from yubikit.piv import PivSession

DEFAULT_SLOT = SLOT.KEY_MANAGEMENT
_VAULT = VaultKind.YUBIKEY.slug
_MAX_PIN_BYTES = 8  # PIV pads the PIN to 8 bytes; yubikit refuses longer ones
_POINT_BYTES = 65  # uncompressed P-256 point
_FINGERPRINT_BYTES = 16
_NONCE_BYTES = 12
_HKDF_INFO = b"keymint/vault/yubikey-piv/v1/p256-ecdh-hkdf-sha256-aes-256-gcm"


class PivSessionLike(Protocol):
    """The part of yubikit's `PivSession` this vault uses."""

    def verify_pin(self, pin: str) -> None: ...

    def calculate_secret(self, slot: SLOT, peer_public_key: ec.EllipticCurvePublicKey) -> bytes: ...

    def get_slot_metadata(self, slot: SLOT) -> SlotMetadata: ...

    def get_certificate(self, slot: SLOT) -> x509.Certificate: ...


PivSessionFactory = Callable[[], AbstractContextManager[PivSessionLike]]


@contextmanager
def open_piv_session(serial: int | None = None) -> Iterator[PivSessionLike]:
    """Open the PIV application of the attached YubiKey (the one with `serial`, if given)."""
    try:
        # Imported here: ykman pulls in pyscard, which needs PC/SC only when a device is used.
        from ykman.device import list_all_devices
        from yubikit.core.smartcard import SmartCardConnection
        from yubikit.piv import PivSession
    except ImportError as exc:
        raise VaultUnavailable(_VAULT, f"yubikey-manager is not usable: {exc}") from exc
    try:
        devices = list_all_devices([SmartCardConnection])
    except Exception as exc:  # pyscard raises its own hierarchy when PC/SC is missing
        raise VaultUnavailable(_VAULT, f"cannot list YubiKeys over PC/SC: {exc}") from exc
    matches = [device for device, info in devices if serial is None or info.serial == serial]
    if not matches:
        wanted = "no YubiKey" if serial is None else f"no YubiKey with serial {serial}"
        raise VaultUnavailable(_VAULT, f"{wanted} found over PC/SC (is pcscd running?)")
    if len(matches) > 1:
        raise VaultUnavailable(_VAULT, "several YubiKeys are attached; choose one by serial")
    with matches[0].open_connection(SmartCardConnection) as connection:
        session: PivSession = PivSession(connection)
        yield session


def read_slot_public_key(
    session: PivSessionLike, slot: SLOT = DEFAULT_SLOT
) -> ec.EllipticCurvePublicKey:
    """The P-256 public key in `slot`: from its metadata, or its certificate before firmware 5.3."""
    try:
        try:
            public_key = session.get_slot_metadata(slot).public_key
        except NotSupportedError:
            public_key = session.get_certificate(slot).public_key()
    except ApduError as exc:
        # No key answers REFERENCE DATA NOT FOUND to GET METADATA; no certificate, FILE NOT FOUND.
        if exc.sw in (SW.REFERENCE_DATA_NOT_FOUND, SW.FILE_NOT_FOUND):
            raise VaultUnavailable(
                _VAULT,
                f"PIV slot {slot:02x} holds no key (or, before firmware 5.3, no certificate)",
            ) from None
        raise VaultUnavailable(_VAULT, f"cannot read PIV slot {slot:02x}: {exc}") from exc
    except CommandError as exc:
        raise VaultUnavailable(_VAULT, f"cannot read PIV slot {slot:02x}: {exc}") from exc
    if not (
        isinstance(public_key, ec.EllipticCurvePublicKey)
        and isinstance(public_key.curve, ec.SECP256R1)
    ):
        raise VaultUnavailable(
            _VAULT,
            f"PIV slot {slot:02x} holds a {_describe_key(public_key)} key; this vault needs P-256 "
            f"(ykman piv keys generate --algorithm ECCP256 {slot:02x} -)",
        )
    return public_key


class YubiKeyVault(ShareVault):
    """Seals to the P-256 key in a YubiKey PIV slot; unsealing needs that YubiKey and its PIN."""

    kind = VaultKind.YUBIKEY
    fields = ("slot", "recipient_fingerprint", "ephemeral_public_key", "nonce", "ciphertext")

    def __init__(
        self,
        *,
        pin: str,
        session_factory: PivSessionFactory,
        slot: SLOT = DEFAULT_SLOT,
        device: str = "injected PIV session",
        label: str = "",
    ) -> None:
        super().__init__(label=label)
        if not 1 <= len(pin.encode("utf-8")) <= _MAX_PIN_BYTES:
            raise VaultConfigError("pin", f"a PIV PIN is 1 to {_MAX_PIN_BYTES} bytes")
        self._pin = pin
        self._session_factory = session_factory
        self._slot = SLOT(slot)
        self._device = device

    @classmethod
    def attached(
        cls, *, pin: str, serial: int | None = None, slot: SLOT = DEFAULT_SLOT, label: str = ""
    ) -> YubiKeyVault:
        """The usual wiring: the YubiKey attached over PC/SC, chosen by serial if several are."""
        device = "attached YubiKey" if serial is None else f"YubiKey serial {serial}"
        return cls(
            pin=pin,
            session_factory=functools.partial(open_piv_session, serial),
            slot=slot,
            device=device,
            label=label,
        )

    @property
    def description(self) -> str:
        return f"YubiKey PIV slot {self._slot:02x} ({self._device})"

    def _seal_fields(self, share: bytes, associated_data: bytes) -> tuple[bytes, ...]:
        with self._session_factory() as session:
            recipient = read_slot_public_key(session, self._slot)
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        ephemeral_public = ephemeral.public_key()
        key = _derive_key(ephemeral.exchange(ec.ECDH(), recipient), ephemeral_public, recipient)
        nonce = os.urandom(_NONCE_BYTES)
        return (
            bytes((self._slot,)),
            _fingerprint(recipient),
            _point(ephemeral_public),
            nonce,
            AESGCM(key).encrypt(nonce, share, associated_data),
        )

    def _unseal_fields(self, fields: tuple[bytes, ...], associated_data: bytes) -> bytes:
        slot_field, fingerprint, ephemeral_point, nonce, ciphertext = fields
        sealed_slot = expect_length(slot_field, "slot", 1)[0]
        if sealed_slot != self._slot:
            raise WrongKey(
                f"blob was sealed to PIV slot {sealed_slot:02x}; this vault uses slot "
                f"{self._slot:02x}"
            )
        expect_length(fingerprint, "recipient_fingerprint", _FINGERPRINT_BYTES)
        expect_length(nonce, "nonce", _NONCE_BYTES)
        try:
            ephemeral_public = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), expect_length(ephemeral_point, "ephemeral_public_key", _POINT_BYTES)
            )
        except ValueError:
            raise CorruptBlob("the ephemeral public key is not a P-256 point") from None
        with self._session_factory() as session:
            # Check the key before the PIN: a blob for another YubiKey should not cost a PIN try.
            recipient = read_slot_public_key(session, self._slot)
            if _fingerprint(recipient) != fingerprint:
                raise WrongKey(
                    f"blob was sealed to key {fingerprint.hex()}, but PIV slot {self._slot:02x} "
                    f"of {self._device} holds key {_fingerprint(recipient).hex()}"
                )
            self._verify_pin(session)
            try:
                secret = session.calculate_secret(self._slot, ephemeral_public)
            except ApduError as exc:
                raise VaultError(
                    f"YubiKey refused key agreement in PIV slot {self._slot:02x}: {exc}"
                ) from exc
        key = _derive_key(secret, ephemeral_public, recipient)
        try:
            return AESGCM(key).decrypt(nonce, ciphertext, associated_data)
        except InvalidTag:
            raise CorruptBlob(
                "authentication failed with the right YubiKey key: the blob was corrupted or "
                "tampered with"
            ) from None

    def _verify_pin(self, session: PivSessionLike) -> None:
        try:
            session.verify_pin(self._pin)
        except InvalidPinError as exc:
            remaining = exc.attempts_remaining
            if remaining == 0:
                problem = (
                    "the YubiKey PIV PIN was refused and is now blocked; reset it with the PUK"
                )
            else:
                tries = "try" if remaining == 1 else "tries"
                problem = f"the YubiKey PIV PIN was refused; {remaining} {tries} remaining"
            raise WrongSecret("PIN", problem, attempts_remaining=remaining) from exc


def _derive_key(
    secret: bytes, ephemeral: ec.EllipticCurvePublicKey, recipient: ec.EllipticCurvePublicKey
) -> bytes:
    # Both public keys go into the info so the key is bound to this exact exchange.
    info = _HKDF_INFO + _point(ephemeral) + _point(recipient)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _point(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _fingerprint(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return hashlib.sha256(_point(public_key)).digest()[:_FINGERPRINT_BYTES]


def _describe_key(public_key: object) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"{public_key.curve.name} EC"
    return type(public_key).__name__.removesuffix("PublicKey").lstrip("_") or "non-EC"
