"""The development PKI: the operator who drives ceremonies has a certificate of its own."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from signer.devca import (
    coordinator_name,
    dns_name,
    make_dev_pki,
    operator_name,
    peer_spiffe_id,
    spiffe_id,
)


def test_the_operator_certificate_is_not_the_coordinators(tmp_path: Path) -> None:
    files = make_dev_pki(tmp_path, [1, 2])
    assert set(files) == {"coordinator", "operator", "signer-1", "signer-2"}
    operator, coordinator = files[operator_name()], files[coordinator_name()]
    assert operator.cert.name == "operator.pem"
    assert peer_spiffe_id(operator.cert.read_bytes()) == spiffe_id("operator")
    assert peer_spiffe_id(coordinator.cert.read_bytes()) == spiffe_id("coordinator")
    san = x509.load_pem_x509_certificate(operator.cert.read_bytes()).extensions
    names = san.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [dns_name("operator")]
    assert operator.key.read_bytes() != coordinator.key.read_bytes()
    assert operator.key.stat().st_mode & 0o077 == 0
