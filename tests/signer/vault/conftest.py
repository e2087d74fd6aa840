"""Fixtures for the vault tests: a share, a fresh SoftHSM2 token per test, a stand-in YubiKey.

No YubiKey is attached here, so `SoftYubiKey` plays the device below the `PivSession` boundary: it
holds real P-256 private keys and does real ECDH with them, enforces the PIN with a retry counter
that survives across sessions, and raises yubikit's own errors (`InvalidPinError`, `ApduError`,
`NotSupportedError`) where a YubiKey would.
"""

from __future__ import annotations

import datetime
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from yubikit.core import InvalidPinError, NotSupportedError, Tlv
from yubikit.core.smartcard import SW, ApduError
from yubikit.piv import KEY_TYPE, PIN_POLICY, SLOT, TOUCH_POLICY, SlotMetadata

from signer.vault.pkcs11 import open_module
from signer.vault.yubikey import PivSessionLike

SOFTHSM_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
TOKEN_LABEL = "keymint-test"
USER_PIN = "1234"
SO_PIN = "5678"
KEY_LABEL = "keymint-share-wrap"
YUBIKEY_PIN = "123456"


@dataclass(frozen=True)
class SoftHsmToken:
    module: str
    token_label: str
    pin: str


def find_softhsm_module() -> str:
    override = os.environ.get("KEYMINT_TEST_SOFTHSM_MODULE")
    for candidate in (override, *SOFTHSM_MODULE_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail(
        "SoftHSM2 is not installed (apt-get install softhsm2) or not at a known path; "
        "set KEYMINT_TEST_SOFTHSM_MODULE"
    )


@pytest.fixture
def share() -> bytes:
    """Stands in for a serialized FROST key share: a version byte and ~150 random bytes."""
    return b"\x01" + os.urandom(149)


@pytest.fixture
def softhsm_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SoftHsmToken]:
    """A freshly initialised SoftHSM2 token in its own token directory.

    SoftHSM2 reads SOFTHSM2_CONF only in C_Initialize, and python-pkcs11 keeps one loaded library
    per path for the whole process. So the library is re-initialised after the environment points
    at this test's directory, and finalised afterwards so the next test starts clean.
    """
    token_dir = tmp_path / "tokens"
    token_dir.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {token_dir}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            TOKEN_LABEL,
            "--pin",
            USER_PIN,
            "--so-pin",
            SO_PIN,
        ],
        check=True,
        capture_output=True,
    )
    module = find_softhsm_module()
    library = open_module(module)
    library.reinitialize()
    yield SoftHsmToken(module=module, token_label=TOKEN_LABEL, pin=USER_PIN)
    library.finalize()


def _assert_no_secrets(error: BaseException, *secrets: str | bytes) -> None:
    texts = []
    current: BaseException | None = error
    while current is not None:
        texts += [str(current), repr(current), *map(repr, current.args)]
        current = current.__cause__ or current.__context__
    haystack = "\n".join(texts)
    for secret in secrets:
        needles = [secret.hex(), repr(secret)] if isinstance(secret, bytes) else [secret]
        for needle in needles:
            assert needle not in haystack, "a secret leaked into an exception"


@pytest.fixture
def assert_no_secrets() -> Callable[..., None]:
    """Check that no secret, raw or hex, is in an exception's message, repr, args or causes."""
    return _assert_no_secrets


class SoftYubiKey:
    """The device side: keys per slot and the PIN retry counter, shared by all its sessions."""

    def __init__(
        self, *, pin: str = YUBIKEY_PIN, pin_attempts: int = 3, has_metadata: bool = True
    ) -> None:
        self.pin = pin
        self.max_pin_attempts = pin_attempts
        self.pin_attempts_remaining = pin_attempts
        self.has_metadata = has_metadata  # firmware before 5.3 has no GET METADATA
        self.keys: dict[SLOT, ec.EllipticCurvePrivateKey] = {}
        self.certificates: dict[SLOT, x509.Certificate] = {}
        self.open_sessions = 0
        self.pin_verifications = 0

    def generate_key(
        self, slot: SLOT = SLOT.KEY_MANAGEMENT, curve: ec.EllipticCurve | None = None
    ) -> ec.EllipticCurvePublicKey:
        key = ec.generate_private_key(curve or ec.SECP256R1())
        self.keys[slot] = key
        self.certificates[slot] = _self_signed(key)
        return key.public_key()

    @contextmanager
    def open_session(self) -> Iterator[PivSessionLike]:
        self.open_sessions += 1
        try:
            yield SoftPivSession(self)
        finally:
            self.open_sessions -= 1


class SoftPivSession:
    """A PIV session: PIN verification lasts for the session, as on a YubiKey."""

    def __init__(self, device: SoftYubiKey) -> None:
        self._device = device
        self._pin_verified = False

    def verify_pin(self, pin: str) -> None:
        device = self._device
        device.pin_verifications += 1
        if len(pin.encode()) > 8:
            raise ValueError("PIN/PUK must be no longer than 8 bytes")
        if device.pin_attempts_remaining == 0:
            raise InvalidPinError(0)
        if pin != device.pin:
            device.pin_attempts_remaining -= 1
            self._pin_verified = False
            raise InvalidPinError(device.pin_attempts_remaining)
        device.pin_attempts_remaining = device.max_pin_attempts
        self._pin_verified = True

    def calculate_secret(self, slot: SLOT, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        key = self._key(slot)
        if not self._pin_verified:
            raise ApduError(b"", SW.SECURITY_CONDITION_NOT_SATISFIED)
        # The peer key crosses the wire as an X9.62 point, as yubikit sends it.
        point = peer_public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        peer = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, point)
        return key.exchange(ec.ECDH(), peer)

    def get_slot_metadata(self, slot: SLOT) -> SlotMetadata:
        if not self._device.has_metadata:
            raise NotSupportedError("This action requires YubiKey 5.3.0 or later")
        public_key = self._key(slot).public_key()
        key_type = KEY_TYPE.ECCP256 if public_key.curve.name == "secp256r1" else KEY_TYPE.ECCP384
        point = public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return SlotMetadata(
            key_type, PIN_POLICY.DEFAULT, TOUCH_POLICY.DEFAULT, True, bytes(Tlv(0x86, point))
        )

    def get_certificate(self, slot: SLOT) -> x509.Certificate:
        try:
            return self._device.certificates[slot]
        except KeyError:
            raise ApduError(b"", SW.FILE_NOT_FOUND) from None

    def _key(self, slot: SLOT) -> ec.EllipticCurvePrivateKey:
        try:
            return self._device.keys[slot]
        except KeyError:
            raise ApduError(b"", SW.REFERENCE_DATA_NOT_FOUND) from None


def _self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keymint test PIV key")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture
def yubikey() -> SoftYubiKey:
    device = SoftYubiKey()
    device.generate_key(SLOT.KEY_MANAGEMENT)
    return device
