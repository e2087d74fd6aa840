"""Signed statements and sealed shares: what keeps the relaying driver a mere courier."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signer.ceremony.envelope import (
    Purpose,
    SealContext,
    StatementSigner,
    StatementVerifier,
    ephemeral_public_bytes,
    new_ephemeral_key,
    open_sealed,
    seal,
)
from signer.devca import TlsFiles, make_dev_pki
from signer.frost import CheatingParticipant
from signer.frost.group import RandomBytes

NOW = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TlsFiles]:
    return make_dev_pki(tmp_path / "pki", [1, 2], now=NOW)


def _verifier(pki: dict[str, TlsFiles], at: datetime.datetime = NOW) -> StatementVerifier:
    return StatementVerifier(ca_pem=pki["coordinator"].ca.read_bytes(), clock=lambda: at)


def test_a_statement_verifies_as_its_signer_and_purpose(pki: dict[str, TlsFiles]) -> None:
    statement = StatementSigner.from_tls_files(1, pki["signer-1"]).sign(
        Purpose.ANNOUNCEMENT, b"body"
    )
    assert _verifier(pki).verify(statement, Purpose.ANNOUNCEMENT) == b"body"
    with pytest.raises(CheatingParticipant, match="confirmation signature") as refused:
        _verifier(pki).verify(statement, Purpose.CONFIRMATION)
    assert refused.value.identifier == 1


def test_a_statement_claiming_another_signer_is_refused(pki: dict[str, TlsFiles]) -> None:
    statement = StatementSigner.from_tls_files(2, pki["signer-1"]).sign(
        Purpose.ANNOUNCEMENT, b"body"
    )
    with pytest.raises(CheatingParticipant, match=r"signer-1, not .*signer-2") as refused:
        _verifier(pki).verify(statement, Purpose.ANNOUNCEMENT)
    assert refused.value.identifier == 2


def test_a_certificate_from_another_ca_is_refused(pki: dict[str, TlsFiles], tmp_path: Path) -> None:
    other = make_dev_pki(tmp_path / "other", [1], now=NOW)
    statement = StatementSigner.from_tls_files(1, other["signer-1"]).sign(
        Purpose.ANNOUNCEMENT, b"body"
    )
    with pytest.raises(CheatingParticipant, match="not issued by the trusted CA"):
        _verifier(pki).verify(statement, Purpose.ANNOUNCEMENT)


def test_an_expired_certificate_is_refused(pki: dict[str, TlsFiles]) -> None:
    statement = StatementSigner.from_tls_files(1, pki["signer-1"]).sign(
        Purpose.ANNOUNCEMENT, b"body"
    )
    later = NOW + datetime.timedelta(days=31)
    with pytest.raises(CheatingParticipant, match="expired"):
        _verifier(pki, later).verify(statement, Purpose.ANNOUNCEMENT)


def test_the_ca_certificate_itself_cannot_sign_statements(pki: dict[str, TlsFiles]) -> None:
    statement = StatementSigner.from_tls_files(1, pki["signer-1"]).sign(
        Purpose.ANNOUNCEMENT, b"body"
    )
    statement.certificate = pki["signer-1"].ca.read_bytes()
    with pytest.raises(CheatingParticipant):
        _verifier(pki).verify(statement, Purpose.ANNOUNCEMENT)


def test_a_sealed_share_opens_only_for_its_recipient_and_context() -> None:
    sender, recipient = new_ephemeral_key(_counter()), new_ephemeral_key(_counter(7))
    context = SealContext(b"c" * 16, 1, 2)
    ciphertext = seal(
        b"share",
        sender_key=sender,
        recipient_public=ephemeral_public_bytes(recipient),
        context=context,
        rng=_counter(9),
    )
    assert b"share" not in ciphertext
    opened = open_sealed(
        ciphertext,
        recipient_key=recipient,
        sender_public=ephemeral_public_bytes(sender),
        context=context,
    )
    assert opened == b"share"
    for wrong in (SealContext(b"d" * 16, 1, 2), SealContext(b"c" * 16, 1, 3)):
        with pytest.raises(CheatingParticipant, match="bound to another") as refused:
            open_sealed(
                ciphertext,
                recipient_key=recipient,
                sender_public=ephemeral_public_bytes(sender),
                context=wrong,
            )
        assert refused.value.identifier == 1
    tampered = ciphertext[:-1] + bytes([ciphertext[-1] ^ 0x80])
    with pytest.raises(CheatingParticipant, match="does not open"):
        open_sealed(
            tampered,
            recipient_key=recipient,
            sender_public=ephemeral_public_bytes(sender),
            context=context,
        )


def test_an_unusable_ephemeral_key_names_its_owner() -> None:
    with pytest.raises(CheatingParticipant) as refused:
        seal(
            b"share",
            sender_key=new_ephemeral_key(_counter()),
            recipient_public=bytes(32),  # a low-order point: the shared secret would be zero
            context=SealContext(b"c" * 16, 1, 2),
            rng=_counter(),
        )
    assert refused.value.identifier == 2


def _counter(start: int = 1) -> RandomBytes:
    """A deterministic stand-in for os.urandom: time and randomness are injectable."""
    state = [start]

    def rng(n: int) -> bytes:
        state[0] += 1
        return bytes([state[0] % 256]) * n

    return rng


def _corrupted_uri(certificate_pem: bytes) -> bytes:
    """The certificate with a byte of its SPIFFE ID URI SAN made non-ASCII (an IA5String may not
    hold it): it still loads, and fails only when its extensions are read."""
    der = x509.load_pem_x509_certificate(certificate_pem).public_bytes(serialization.Encoding.DER)
    at = der.index(b"spiffe://")
    corrupted = der[:at] + b"\xff" + der[at + 1 :]
    body = base64.encodebytes(corrupted).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def test_a_statement_whose_certificate_does_not_parse_is_its_signers_fault(
    pki: dict[str, TlsFiles],
) -> None:
    """Found by `make fuzz` (the ceremony target): a certificate whose SAN fails to parse made
    verify raise ValueError, which the ceremony service answered with a gRPC INTERNAL error."""
    statement = StatementSigner.from_tls_files(1, pki["signer-1"]).sign(
        Purpose.ANNOUNCEMENT, b"body"
    )
    statement.certificate = _corrupted_uri(statement.certificate)
    x509.load_pem_x509_certificate(statement.certificate)  # loads: the damage is deeper
    with pytest.raises(CheatingParticipant, match="no readable certificate") as refused:
        _verifier(pki).verify(statement, Purpose.ANNOUNCEMENT)
    assert refused.value.identifier == 1
