"""A development CA: root and intermediate CAs and X.509-SVIDs, shaped like SPIRE issues them.

For the local stack and its callers only (`keymint dev`); production certificates come from SPIRE
or the organisation's own PKI. Keys are EC P-256. A certificate is valid `DEFAULT_LIFETIME` either
side of the CA's `instant()` (now) unless told otherwise; the tests pin `instant()` to a fixed date
in a subclass, and verify with a clock there instead of the wall clock.

    root = CertificateAuthority.root("example.org")
    svid = root.issue_svid("spiffe://example.org/ns/prod/sa/deployer")
    verifier.verify_pem(svid.chain_pem)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_LIFETIME = timedelta(hours=1)  # a leaf's validity either side of the CA's instant


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def der_sha256(certificate: x509.Certificate) -> bytes:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "keymint development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(
    instant: datetime, not_before: datetime | None, not_after: datetime | None
) -> tuple[datetime, datetime]:
    return (
        not_before or instant - DEFAULT_LIFETIME,
        not_after or instant + DEFAULT_LIFETIME,
    )


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A leaf certificate with its key and the intermediates between it and the root."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    intermediates: tuple[x509.Certificate, ...] = ()

    @property
    def pem(self) -> bytes:
        return pem(self.certificate)

    @property
    def chain_pem(self) -> bytes:
        """Leaf first, then intermediates (never the root), as a TLS client presents them."""
        return b"".join(pem(c) for c in (self.certificate, *self.intermediates))

    @property
    def der_sha256(self) -> bytes:
        return der_sha256(self.certificate)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA that issues intermediates and leaves; `chain`: its path up to, not incl., the root."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()

    @classmethod
    def instant(cls) -> datetime:
        """The instant default validity windows are centred on: now."""
        return datetime.now(UTC)

    @classmethod
    def root(
        cls,
        trust_domain: str,
        *,
        common_name: str | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> CertificateAuthority:
        """A self-signed root that names its trust domain in a URI SAN, as SPIRE's CAs do."""
        key = new_key()
        name = _name(common_name or f"{trust_domain} root CA")
        instant = cls.instant()
        start, end = _validity(instant, not_before, not_after or instant + timedelta(days=365))
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        certificate = (
            _ca_builder(name, name, key.public_key(), start, end, path_length=None)
            .add_extension(ski, critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
                ),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    def intermediate(
        self,
        *,
        common_name: str = "intermediate CA",
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> CertificateAuthority:
        key = new_key()
        instant = self.instant()
        start, end = _validity(instant, not_before, not_after or instant + timedelta(days=30))
        certificate = (
            _ca_builder(
                _name(common_name), self.certificate.subject, key.public_key(), start, end, 0
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(self._authority_key_identifier(), critical=False)
            .sign(self.private_key, hashes.SHA256())
        )
        return type(self)(certificate, key, (certificate, *self.chain))

    def issue(
        self,
        *,
        uris: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        common_name: str = "workload",
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> IssuedCertificate:
        """A client leaf: digitalSignature, clientAuth+serverAuth, the given SANs."""
        key = new_key()
        start, end = _validity(self.instant(), not_before, not_after)
        general_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        general_names += [x509.DNSName(d) for d in dns_names]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        if general_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(general_names), critical=False
            )
        certificate = builder.sign(self.private_key, hashes.SHA256())
        return IssuedCertificate(certificate, key, self.chain)

    def issue_svid(
        self,
        spiffe_id: str,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> IssuedCertificate:
        """An X.509-SVID: exactly one URI SAN, the SPIFFE ID."""
        return self.issue(uris=[spiffe_id], not_before=not_before, not_after=not_after)

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    not_before: datetime,
    not_after: datetime,
    path_length: int | None,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
    )


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )
