"""End-to-end protection of ceremony messages, so the driver that relays them is only a courier.

Signed statements: a participant signs its public messages (announcements, confirmations) with its
own mTLS private key and attaches its certificate. A reader checks the certificate was issued by the
CA, is valid now and names the SPIFFE ID of the participant the statement claims to come from, then
checks the signature. mTLS alone would only say who *relayed* a message (always the driver).

Sealed shares: every participant makes an X25519 key for one ceremony and publishes it in its
signed announcement. A secret share travels as a NaCl box (XSalsa20-Poly1305) from the sender's
ephemeral key to the recipient's, so the driver can neither read it nor change it unnoticed. The
context (ceremony id, sender, recipient) is sealed inside the authenticated plaintext and checked on
opening, so a share cannot be replayed into another ceremony or redirected to another recipient.
"""

from __future__ import annotations

import datetime
import enum
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey

from signer.ceremony.errors import CeremonyError
from signer.devca import TlsFiles, peer_spiffe_id, signer_name, spiffe_id
from signer.frost import CheatingParticipant
from signer.frost.group import RandomBytes
from signer.proto import ceremony_pb2 as pb

Clock = Callable[[], datetime.datetime]
# What cryptography raises for a certificate it cannot parse besides ValueError.
_UNPARSEABLE = (x509.DuplicateExtension, x509.UnsupportedGeneralNameType, x509.InvalidVersion)
EPHEMERAL_KEY_SIZE = 32
DEALER = 0
"""The sender number of the trusted dealer (the driver) in a development DEAL ceremony."""


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def signer_identity(identifier: int) -> str:
    """The SPIFFE ID a signer's certificate must carry to speak as `identifier`."""
    return spiffe_id(signer_name(identifier))


class Purpose(enum.Enum):
    """Domain separation: a signature made for one kind of statement never verifies as another."""

    ANNOUNCEMENT = b"keymint ceremony announcement v1"
    CONFIRMATION = b"keymint ceremony confirmation v1"


def _signed_bytes(purpose: Purpose, body: bytes) -> bytes:
    return purpose.value + b"\x00" + body


class StatementSigner:
    """Signs statements with a participant's mTLS key (ECDSA P-256 with SHA-256, or Ed25519)."""

    def __init__(self, *, identifier: int, certificate_pem: bytes, private_key_pem: bytes) -> None:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise CeremonyError(f"unsupported TLS key type {type(key).__name__} for statements")
        self._identifier = identifier
        self._key = key
        self._certificate = certificate_pem

    @classmethod
    def from_tls_files(cls, identifier: int, files: TlsFiles) -> StatementSigner:
        return cls(
            identifier=identifier,
            certificate_pem=files.cert.read_bytes(),
            private_key_pem=files.key.read_bytes(),
        )

    def sign(self, purpose: Purpose, body: bytes) -> pb.SignedStatement:
        data = _signed_bytes(purpose, body)
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            signature = self._key.sign(data, ec.ECDSA(hashes.SHA256()))
        else:
            signature = self._key.sign(data)
        return pb.SignedStatement(
            signer=self._identifier,
            body=body,
            certificate=self._certificate,
            signature=signature,
        )


class StatementVerifier:
    """Checks who signed a statement: certificate chain to the CA, SPIFFE ID, then signature.

    The chain check is the CA's signature on the leaf, both certificates' validity at `clock()`, and
    that the leaf is not itself a CA; the dev PKI's leaves are one step below the root.
    (cryptography's x509.verification would refuse them: they carry no Authority Key Identifier.)
    """

    def __init__(
        self,
        *,
        ca_pem: bytes,
        clock: Clock = utc_now,
        identity_for: Callable[[int], str] = signer_identity,
    ) -> None:
        self._authorities: Sequence[x509.Certificate] = x509.load_pem_x509_certificates(ca_pem)
        self._clock = clock
        self._identity_for = identity_for

    def verify(self, statement: pb.SignedStatement, purpose: Purpose) -> bytes:
        """The body, if `statement.signer`'s certificate signed it; else CheatingParticipant."""
        who = statement.signer
        try:
            certificate = x509.load_pem_x509_certificate(statement.certificate)
            # Parsed lazily: a corrupt extension or key must be a refusal here, not an error
            # wherever it is first read.
            certificate.extensions  # noqa: B018
            certificate.public_key()
        except (ValueError, UnsupportedAlgorithm, *_UNPARSEABLE):
            raise CheatingParticipant(who, "statement carries no readable certificate") from None
        self._check_issued(who, certificate)
        expected = self._identity_for(who)
        found = peer_spiffe_id(statement.certificate)
        if found != expected:
            raise CheatingParticipant(
                who, f"statement certificate names {found or 'no SPIFFE ID'}, not {expected}"
            )
        public_key = certificate.public_key()
        data = _signed_bytes(purpose, statement.body)
        try:
            if isinstance(public_key, ec.EllipticCurvePublicKey):
                public_key.verify(statement.signature, data, ec.ECDSA(hashes.SHA256()))
            elif isinstance(public_key, ed25519.Ed25519PublicKey):
                public_key.verify(statement.signature, data)
            else:
                raise CheatingParticipant(who, "certificate key type cannot sign statements")
        except InvalidSignature:
            raise CheatingParticipant(
                who, f"{purpose.name.lower()} signature does not verify under its certificate"
            ) from None
        return statement.body

    def _check_issued(self, who: int, certificate: x509.Certificate) -> None:
        now = self._clock()
        if not _valid_at(certificate, now):
            raise CheatingParticipant(who, "statement certificate is expired or not yet valid")
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            pass
        else:
            if constraints.value.ca:
                raise CheatingParticipant(who, "statement certificate is a CA certificate")
        for authority in self._authorities:
            if not _valid_at(authority, now):
                continue
            try:
                certificate.verify_directly_issued_by(authority)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return
        raise CheatingParticipant(who, "statement certificate is not issued by the trusted CA")


def _valid_at(certificate: x509.Certificate, now: datetime.datetime) -> bool:
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def new_ephemeral_key(rng: RandomBytes) -> PrivateKey:
    """A fresh X25519 key for one ceremony; never written anywhere, dropped with the ceremony."""
    return PrivateKey(rng(EPHEMERAL_KEY_SIZE))


def ephemeral_public_bytes(key: PrivateKey) -> bytes:
    return bytes(key.public_key)


@dataclass(frozen=True, slots=True)
class SealContext:
    """What a sealed share is for: opening it under any other context fails."""

    ceremony_id: bytes
    sender: int
    recipient: int

    def encode(self) -> bytes:
        return (
            b"keymint ceremony share v1\x00"
            + struct.pack(">B", len(self.ceremony_id))
            + self.ceremony_id
            + struct.pack(">II", self.sender, self.recipient)
        )


def _box(own: PrivateKey, peer_public: bytes, peer: int) -> Box:
    # Box refuses a malformed or low-order peer key (an all-zero shared secret); that is the fault
    # of whoever published the key in a signed announcement.
    try:
        if len(peer_public) != EPHEMERAL_KEY_SIZE:
            raise CryptoError("wrong length")
        return Box(own, PublicKey(peer_public))
    except CryptoError:
        raise CheatingParticipant(peer, "ephemeral public key is not a usable X25519 key") from None


def seal(
    plaintext: bytes,
    *,
    sender_key: PrivateKey,
    recipient_public: bytes,
    context: SealContext,
    rng: RandomBytes,
) -> bytes:
    box = _box(sender_key, recipient_public, context.recipient)
    return bytes(box.encrypt(context.encode() + plaintext, rng(Box.NONCE_SIZE)))


def open_sealed(
    ciphertext: bytes,
    *,
    recipient_key: PrivateKey,
    sender_public: bytes,
    context: SealContext,
) -> bytes:
    """The plaintext, or CheatingParticipant naming the sender if the box was altered."""
    box = _box(recipient_key, sender_public, context.sender)
    try:
        plaintext = bytes(box.decrypt(ciphertext))
    except CryptoError:
        raise CheatingParticipant(
            context.sender, "sealed share does not open: altered in transit or not sealed to us"
        ) from None
    header = context.encode()
    if plaintext[: len(header)] != header:
        raise CheatingParticipant(
            context.sender, "sealed share is bound to another ceremony, sender or recipient"
        )
    return plaintext[len(header) :]
