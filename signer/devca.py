"""A development CA for the coordinator<->signer mTLS: one command makes every certificate.

The coordinator (inside the gateway) signs; the operator (a person's machine) drives key
ceremonies; the signers serve both. Each is a separate certificate, so the gateway never holds
the identity that can change the group key.

Each certificate names its holder twice: a SPIFFE ID URI SAN (what the other side authorizes) and a
DNS SAN (what gRPC's hostname check matches, via ssl_target_name_override). Production deployments
bring their own CA (cert-manager, SPIRE); the file layout is the same.
"""

from __future__ import annotations

import datetime
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "keymint.internal"
VALIDITY = datetime.timedelta(days=30)


def coordinator_name() -> str:
    return "coordinator"


def operator_name() -> str:
    """The identity that drives key ceremonies; signers never accept the coordinator's for it."""
    return "operator"


def signer_name(identifier: int) -> str:
    return f"signer-{identifier}"


def spiffe_id(name: str, trust_domain: str = TRUST_DOMAIN) -> str:
    return f"spiffe://{trust_domain}/keymint/{name}"


def dns_name(name: str, trust_domain: str = TRUST_DOMAIN) -> str:
    return f"{name}.{trust_domain}"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Paths of one holder's certificate, key and the CA bundle it trusts."""

    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        return self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()


def tls_files(directory: Path, name: str) -> TlsFiles:
    return TlsFiles(directory / "ca.pem", directory / f"{name}.pem", directory / f"{name}-key.pem")


def make_dev_pki(
    directory: Path, signer_ids: list[int], *, now: datetime.datetime | None = None
) -> dict[str, TlsFiles]:
    """Write ca.pem and a certificate + key for the coordinator, the operator and each signer."""
    names = [coordinator_name(), operator_name()] + [signer_name(i) for i in signer_ids]
    return _make_pki(directory, "keymint development CA", names, now)


def _make_pki(
    directory: Path, ca_common_name: str, names: list[str], now: datetime.datetime | None
) -> dict[str, TlsFiles]:
    """A fresh CA in `directory`/ca.pem and a certificate + key issued by it for each name."""
    now = now or datetime.datetime.now(datetime.UTC)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_common_name)])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return {name: _issue(directory, name, ca_cert, ca_key, now) for name in names}


def _issue(
    directory: Path,
    name: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
) -> TlsFiles:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _builder(subject, ca_cert.subject, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(spiffe_id(name)),
                    x509.DNSName(dns_name(name)),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = tls_files(directory, name)
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_pem)
    return files


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


@functools.lru_cache(maxsize=256)
def peer_spiffe_id(pem: bytes) -> str | None:
    """The single SPIFFE ID URI SAN of a PEM certificate, or None (cached: peers reconnect)."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
    spiffe = [u for u in uris if u.startswith("spiffe://")]
    return spiffe[0] if len(spiffe) == 1 else None


def gateway_name() -> str:
    """The gateway's server certificate on its Check port (what Envoy verifies)."""
    return "gateway"


def envoy_name() -> str:
    """Envoy's client certificate for the gateway's Check port."""
    return "envoy"


def make_check_port_pki(
    directory: Path, *, now: datetime.datetime | None = None
) -> dict[str, TlsFiles]:
    """A second development CA, for Envoy -> gateway mTLS: ca.pem, a "gateway" server certificate
    and an "envoy" client certificate, in `directory` (not the signers' directory: a certificate
    of the signer mesh, the coordinator's included, cannot even finish a handshake on the Check
    port)."""
    return _make_pki(directory, "keymint Check port dev CA", [gateway_name(), envoy_name()], now)
