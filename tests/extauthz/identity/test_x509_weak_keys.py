"""A client certificate's own key must meet the web PKI's minimum. Found by the hostile corpus
(tests/corpus/cases/certificates/cert-rsa-1024.yaml): a trusted CA's SVID with a 1024-bit RSA key
was minted for, through Envoy (which accepts it) and by the signers, since cryptography's chain
verifier checks only the keys that sign certificates."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from extauthz.identity import IdentityError, Reason, TrustBundle, X509Verifier
from tests.helpers import ManualClock
from tests.helpers.certs import VALID_AT, CertificateAuthority, pem

SVID = "spiffe://example.org/ns/prod/sa/deployer"


def svid_with_key(root: CertificateAuthority, public_key: object) -> x509.Certificate:
    """An X.509-SVID otherwise exactly like the helpers' (EKU, key usage, one URI SAN)."""
    ski = root.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "workload")]))
        .issuer_name(root.certificate.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(VALID_AT - timedelta(hours=1))
        .not_valid_after(VALID_AT + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SVID)]), critical=False
        )
        .sign(root.private_key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def root() -> CertificateAuthority:
    return CertificateAuthority.root("example.org")


@pytest.fixture
def verifier(root: CertificateAuthority) -> X509Verifier:
    return X509Verifier(
        spiffe_bundles=[TrustBundle("example.org", (root.certificate,))],
        clock=ManualClock(VALID_AT.timestamp()),
    )


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024), "1024 bits"),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2040), "2040 bits"),
        (lambda: dsa.generate_private_key(key_size=2048), "is DSA"),
    ],
    ids=["rsa-1024", "rsa-2040", "dsa"],
)
def test_a_weak_leaf_key_is_refused(
    root: CertificateAuthority, verifier: X509Verifier, key: object, problem: str
) -> None:
    certificate = svid_with_key(root, key().public_key())  # type: ignore[operator]
    with pytest.raises(IdentityError) as refused:
        verifier.verify_pem(pem(certificate))
    assert refused.value.reason is Reason.CHAIN_UNTRUSTED
    assert problem in refused.value.message


@pytest.mark.parametrize(
    "key",
    [
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        lambda: ec.generate_private_key(ec.SECP256R1()),
    ],
    ids=["rsa-2048", "p-256"],
)
def test_a_leaf_key_of_the_minimum_or_more_is_accepted(
    root: CertificateAuthority, verifier: X509Verifier, key: object
) -> None:
    certificate = svid_with_key(root, key().public_key())  # type: ignore[operator]
    assert verifier.verify_pem(pem(certificate)).subject == SVID
