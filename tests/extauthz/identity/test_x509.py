"""Client certificates: X.509-SVIDs against per-trust-domain bundles, Envoy's encodings."""

from __future__ import annotations

import base64
import contextlib
import urllib.parse
from collections.abc import Callable
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauthz.identity import (
    IdentityConfigError,
    IdentityError,
    Reason,
    TrustBundle,
    X509Verifier,
)
from extauthz.model import IdentityKind, SpiffeId
from tests.helpers import ManualClock
from tests.helpers.certs import VALID_AT, CertificateAuthority, pem

DEPLOYER = "spiffe://example.org/ns/prod/sa/deployer"


@pytest.fixture(scope="module")
def root() -> CertificateAuthority:
    return CertificateAuthority.root("example.org")


@pytest.fixture(scope="module")
def other_root() -> CertificateAuthority:
    """Another CA that also claims example.org: it is simply not in our bundle."""
    return CertificateAuthority.root("example.org", common_name="impostor CA")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(VALID_AT.timestamp())


def verifier_for(
    bundles: dict[str, CertificateAuthority],
    *,
    clock: ManualClock,
) -> X509Verifier:
    return X509Verifier(
        spiffe_bundles=[TrustBundle(td, (ca.certificate,)) for td, ca in bundles.items()],
        clock=clock,
    )


@pytest.fixture
def verifier(root: CertificateAuthority, clock: ManualClock) -> X509Verifier:
    return verifier_for({"example.org": root}, clock=clock)


def reason_of(verify: Callable[..., object], *args: object) -> Reason:
    with pytest.raises(IdentityError) as caught:
        verify(*args)
    return caught.value.reason


def test_valid_svid(verifier: X509Verifier, root: CertificateAuthority) -> None:
    svid = root.issue_svid(DEPLOYER)
    identity = verifier.verify_pem(svid.pem)
    leaf_sha256 = svid.der_sha256
    assert identity.kind is IdentityKind.SPIFFE
    assert identity.subject == DEPLOYER
    assert identity.spiffe_id == SpiffeId("example.org", "/ns/prod/sa/deployer")
    assert identity.issuer == "example.org"
    assert identity.certificate_sha256 == leaf_sha256
    assert identity.credential_hash == leaf_sha256.hex()
    assert identity.expires_at == int(svid.certificate.not_valid_after_utc.timestamp())
    assert identity.evidence.kind == "certificate"
    assert identity.evidence.value == svid.pem


def test_expired_svid(verifier: X509Verifier, root: CertificateAuthority) -> None:
    svid = root.issue_svid(
        DEPLOYER,
        not_before=VALID_AT - timedelta(hours=2),
        not_after=VALID_AT - timedelta(seconds=1),
    )
    assert reason_of(verifier.verify_pem, svid.pem) is Reason.CERT_EXPIRED


def test_not_yet_valid_svid(verifier: X509Verifier, root: CertificateAuthority) -> None:
    svid = root.issue_svid(DEPLOYER, not_before=VALID_AT + timedelta(minutes=5))
    assert reason_of(verifier.verify_pem, svid.pem) is Reason.CERT_NOT_YET_VALID


def test_clock_decides_expiry(
    verifier: X509Verifier, root: CertificateAuthority, clock: ManualClock
) -> None:
    svid = root.issue_svid(DEPLOYER)
    verifier.verify_pem(svid.pem)
    clock.advance(2 * 3600)
    assert reason_of(verifier.verify_pem, svid.pem) is Reason.CERT_EXPIRED


def test_wrong_ca(verifier: X509Verifier, other_root: CertificateAuthority) -> None:
    svid = other_root.issue_svid(DEPLOYER)
    assert reason_of(verifier.verify_pem, svid.pem) is Reason.CHAIN_UNTRUSTED


def test_unconfigured_trust_domain(verifier: X509Verifier, root: CertificateAuthority) -> None:
    svid = root.issue_svid("spiffe://evil.example/ns/prod/sa/deployer")
    assert reason_of(verifier.verify_pem, svid.pem) is Reason.WRONG_TRUST_DOMAIN


def test_a_bundle_vouches_only_for_its_own_trust_domain(
    root: CertificateAuthority, clock: ManualClock
) -> None:
    partner = CertificateAuthority.root("partner.example")
    verifier = verifier_for({"example.org": root, "partner.example": partner}, clock=clock)
    assert verifier.verify_pem(partner.issue_svid("spiffe://partner.example/x").pem)
    # partner's CA is trusted, but not for example.org
    forged = partner.issue_svid(DEPLOYER)
    assert reason_of(verifier.verify_pem, forged.pem) is Reason.CHAIN_UNTRUSTED


def test_chain_with_intermediate(verifier: X509Verifier, root: CertificateAuthority) -> None:
    intermediate = root.intermediate()
    svid = intermediate.issue_svid(DEPLOYER)
    assert verifier.verify_pem(svid.chain_pem).subject == DEPLOYER
    assert verifier.verify_pem(svid.pem, pem(intermediate.certificate)).subject == DEPLOYER
    # Without its intermediate the leaf does not chain to the root.
    assert reason_of(verifier.verify_pem, svid.pem) is Reason.CHAIN_UNTRUSTED


def test_expiry_is_the_shortest_lived_link(
    verifier: X509Verifier, root: CertificateAuthority
) -> None:
    intermediate = root.intermediate(not_after=VALID_AT + timedelta(minutes=10))
    svid = intermediate.issue_svid(DEPLOYER)  # lives an hour
    identity = verifier.verify_pem(svid.chain_pem)
    assert identity.expires_at == int((VALID_AT + timedelta(minutes=10)).timestamp())


def test_envoy_url_encoded_certificate(verifier: X509Verifier, root: CertificateAuthority) -> None:
    svid = root.issue_svid(DEPLOYER)
    encoded = urllib.parse.quote(svid.pem.decode(), safe="")
    assert "\n" not in encoded
    assert "%0A" in encoded
    assert verifier.verify_envoy_certificate(encoded).subject == DEPLOYER


def test_two_uri_sans_are_not_an_svid(verifier: X509Verifier, root: CertificateAuthority) -> None:
    leaf = root.issue(uris=[DEPLOYER, "spiffe://example.org/ns/prod/sa/admin"])
    assert reason_of(verifier.verify_pem, leaf.pem) is Reason.NOT_AN_SVID


def test_spiffe_and_other_uri_san_are_not_an_svid(
    verifier: X509Verifier, root: CertificateAuthority
) -> None:
    leaf = root.issue(uris=[DEPLOYER, "https://example.org/"])
    assert reason_of(verifier.verify_pem, leaf.pem) is Reason.NOT_AN_SVID


@pytest.mark.parametrize(
    "uri", ["spiffe://example.org/a/../admin", "SPIFFE://example.org/admin", "spiffe:example.org"]
)
def test_malformed_spiffe_id_in_san(
    verifier: X509Verifier, root: CertificateAuthority, uri: str
) -> None:
    leaf = root.issue(uris=[uri])
    assert reason_of(verifier.verify_pem, leaf.pem) is Reason.MALFORMED_SPIFFE_ID


def test_a_ca_certificate_is_not_a_client(
    verifier: X509Verifier, root: CertificateAuthority
) -> None:
    # The root carries spiffe://example.org as its URI SAN, but it is a CA, not a workload.
    assert reason_of(verifier.verify_pem, pem(root.certificate)) is Reason.CHAIN_UNTRUSTED


def test_certificate_without_spiffe_id(root: CertificateAuthority, clock: ManualClock) -> None:
    leaf = root.issue(dns_names=["build.example.org"], common_name="build agent")
    assert (
        reason_of(verifier_for({"example.org": root}, clock=clock).verify_pem, leaf.pem)
        is Reason.NOT_AN_SVID
    )
    plain = X509Verifier(
        spiffe_bundles=[],
        x509_bundles=[TrustBundle("corp-ca", (root.certificate,))],
        clock=clock,
    )
    identity = plain.verify_pem(leaf.pem)
    assert identity.kind is IdentityKind.X509
    assert identity.issuer == "corp-ca"
    assert "CN=build agent" in identity.subject
    assert identity.spiffe_id is None
    cn_only = root.issue(common_name="legacy client")  # no SAN at all
    assert plain.verify_pem(cn_only.pem).subject.startswith("CN=legacy client")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a certificate",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\n" + b"A" * 70_000 + b"\n-----END CERTIFICATE-----\n",
    ],
)
def test_malformed_pem(verifier: X509Verifier, data: bytes) -> None:
    assert reason_of(verifier.verify_pem, data) is Reason.MALFORMED_CERTIFICATE


def test_too_many_certificates(verifier: X509Verifier, root: CertificateAuthority) -> None:
    svid = root.issue_svid(DEPLOYER)
    assert reason_of(verifier.verify_pem, svid.pem * 9) is Reason.MALFORMED_CERTIFICATE


def test_configuration_is_checked(root: CertificateAuthority) -> None:
    bundle = TrustBundle("example.org", (root.certificate,))
    with pytest.raises(IdentityConfigError):
        X509Verifier(spiffe_bundles=[bundle, bundle])
    with pytest.raises(IdentityConfigError):
        X509Verifier(spiffe_bundles=[TrustBundle("Example.ORG", (root.certificate,))])
    with pytest.raises(IdentityConfigError):
        TrustBundle("example.org", ())
    with pytest.raises(IdentityConfigError):
        TrustBundle.from_pem("example.org", b"garbage")
    assert TrustBundle.from_pem("example.org", pem(root.certificate)).authorities == (
        root.certificate,
    )


# --- hostile input ---------------------------------------------------------------------------

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def svid_der(root: CertificateAuthority) -> bytes:
    return root.issue_svid(DEPLOYER).certificate.public_bytes(Encoding.DER)


@FUZZ
@given(data=st.binary(max_size=600) | st.text(max_size=600).map(str.encode))
def test_arbitrary_bytes_are_refused_cleanly(verifier: X509Verifier, data: bytes) -> None:
    with pytest.raises(IdentityError):
        verifier.verify_pem(data)


@FUZZ
@given(text=st.text(max_size=600))
def test_arbitrary_envoy_text_is_refused_cleanly(verifier: X509Verifier, text: str) -> None:
    with pytest.raises(IdentityError):
        verifier.verify_envoy_certificate(text)


@pytest.mark.filterwarnings(
    "ignore:Parsed a serial number:cryptography.utils.CryptographyDeprecationWarning"
)
@FUZZ
@given(data=st.data())
def test_corrupted_svids_are_refused_cleanly(
    verifier: X509Verifier, svid_der: bytes, data: st.DataObject
) -> None:
    """Change bytes anywhere in a valid SVID's DER: parse errors, odd extensions, bad signatures."""
    der = bytearray(svid_der)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=len(der) - 1))
        der[at] = data.draw(st.integers(min_value=0, max_value=255))
    body = base64.encodebytes(bytes(der))
    corrupted = b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"
    with contextlib.suppress(IdentityError):  # anything else escaping fails the test
        verifier.verify_pem(corrupted)
