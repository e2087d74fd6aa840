"""Client certificates: X.509-SVIDs verified against per-trust-domain bundles.

The SPIFFE ID is read from the leaf first (unverified) only to choose the one bundle allowed to
vouch for it; the chain is then verified against that bundle alone. So a CA trusted for
`a.example` can never vouch for `spiffe://b.example/...`, even when both are configured.

Chain building and RFC 5280 checks are cryptography's `x509.verification` (web-PKI profile,
client EKU), at the time of our injected clock. On top of it, the X.509-SVID rules: exactly one
URI SAN, and a key usage that asserts digitalSignature; and the web PKI's minimum for the leaf's
own key (RSA of 2048 bits at least, no DSA), which that verifier checks only for the keys that
sign certificates.
"""

from __future__ import annotations

import hashlib
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from extauthz.identity.errors import IdentityConfigError, IdentityError, Reason
from extauthz.identity.spiffe import parse_spiffe_id, validate_trust_domain
from extauthz.model import Evidence, Identity, IdentityKind, SpiffeId

MAX_PEM_BYTES = 64 * 1024  # a leaf plus a few intermediates is well under 10 KiB
MAX_CERTIFICATES = 8
MAX_CHAIN_DEPTH = 6
MIN_RSA_BITS = 2048

Clock = Callable[[], float]
# What cryptography raises for malformed certificates besides ValueError (not its subclasses).
_UNPARSEABLE = (
    ValueError,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    x509.InvalidVersion,
)


@dataclass(frozen=True, slots=True)
class TrustBundle:
    """The CA certificates trusted to vouch for one name: a SPIFFE trust domain or a CA label."""

    name: str
    authorities: tuple[x509.Certificate, ...] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.authorities:
            raise IdentityConfigError(f"trust bundle {self.name!r} has no CA certificates")

    @classmethod
    def from_pem(cls, name: str, pem_data: bytes) -> TrustBundle:
        try:
            authorities = tuple(x509.load_pem_x509_certificates(pem_data))
        except ValueError as error:
            raise IdentityConfigError(f"trust bundle {name!r}: {error}") from None
        return cls(name, authorities)


def _client_verifier(store: Store, at: datetime, *, require_san: bool) -> ClientVerifier:
    ee_policy = ExtensionPolicy.webpki_defaults_ee()
    if not require_san:
        # Plain client certificates are often CN-only; the web-PKI profile would demand a SAN.
        ee_policy = ee_policy.may_be_present(
            x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
        )
    return (
        PolicyBuilder()
        .store(store)
        .time(at)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
        .build_client_verifier()
    )


def _load_certificates(pem_data: bytes) -> list[x509.Certificate]:
    if len(pem_data) > MAX_PEM_BYTES:
        raise IdentityError(Reason.MALFORMED_CERTIFICATE, "certificate chain is too large")
    try:
        certificates = x509.load_pem_x509_certificates(pem_data)
    except (ValueError, x509.InvalidVersion):
        raise IdentityError(Reason.MALFORMED_CERTIFICATE, "not a PEM certificate chain") from None
    if len(certificates) > MAX_CERTIFICATES:
        raise IdentityError(Reason.MALFORMED_CERTIFICATE, "too many certificates in the chain")
    return certificates


def _uri_sans(leaf: x509.Certificate) -> list[str]:
    try:
        extension = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return extension.value.get_values_for_type(x509.UniformResourceIdentifier)


def _require_strong_key(leaf: x509.Certificate) -> None:
    """The leaf's own key: a client proves possession of it, so a factorable one is refused."""
    try:
        key = leaf.public_key()
    except UnsupportedAlgorithm:
        raise IdentityError(
            Reason.CHAIN_UNTRUSTED, "the certificate's key type is not supported"
        ) from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise IdentityError(
            Reason.CHAIN_UNTRUSTED,
            f"the certificate's RSA key has {key.key_size} bits, under {MIN_RSA_BITS}",
        )
    if isinstance(key, dsa.DSAPublicKey):
        raise IdentityError(Reason.CHAIN_UNTRUSTED, "the certificate's key is DSA")


def _require_svid_key_usage(leaf: x509.Certificate) -> None:
    """X.509-SVID §4.3: a leaf asserts digitalSignature (keyCertSign is refused by the web-PKI EE
    policy already, as is a CA basic constraint)."""
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise IdentityError(Reason.NOT_AN_SVID, "SVID has no key usage extension") from None
    if not usage.digital_signature:
        raise IdentityError(Reason.NOT_AN_SVID, "SVID key usage lacks digitalSignature")


class X509Verifier:
    """Turns a presented client certificate (with optional intermediates) into an Identity.

    `spiffe_bundles` are keyed by trust domain. `x509_bundles` (default none) admit certificates
    without a SPIFFE ID as kind X509, issuer = the bundle's name.

    There is deliberately no way to accept a bare name (Envoy's `source.principal`, an XFCC `URI`)
    without its certificate: every signer's guard verifies the certificate again, and a name is
    only the gateway's word, which no signer can check.
    """

    def __init__(
        self,
        *,
        spiffe_bundles: Iterable[TrustBundle],
        x509_bundles: Iterable[TrustBundle] = (),
        clock: Clock = time.time,
    ) -> None:
        self._spiffe_stores: dict[str, Store] = {}
        for bundle in spiffe_bundles:
            validate_trust_domain(bundle.name)
            if bundle.name in self._spiffe_stores:
                raise IdentityConfigError(f"trust domain {bundle.name!r} configured twice")
            self._spiffe_stores[bundle.name] = Store(list(bundle.authorities))
        self._x509_stores = [(b.name, Store(list(b.authorities))) for b in x509_bundles]
        self._clock = clock

    @property
    def trust_domains(self) -> frozenset[str]:
        return frozenset(self._spiffe_stores)

    def verify_envoy_certificate(self, url_encoded_pem: str) -> Identity:
        """`attributes.source.certificate`: Envoy sends the leaf as URL-encoded PEM."""
        # PEM is ASCII; anything unencodable becomes U+FFFD and fails parsing, not encoding.
        return self.verify_pem(urllib.parse.unquote(url_encoded_pem).encode("utf-8", "replace"))

    def verify_pem(self, leaf_pem: bytes, intermediates_pem: bytes = b"") -> Identity:
        """Verify a leaf (the first certificate of `leaf_pem`; any further ones, and all of
        `intermediates_pem`, are used as untrusted intermediates)."""
        certificates = _load_certificates(leaf_pem)
        if intermediates_pem:
            certificates += _load_certificates(intermediates_pem)
        if not certificates:
            raise IdentityError(Reason.MALFORMED_CERTIFICATE, "no certificate presented")
        if len(certificates) > MAX_CERTIFICATES:
            raise IdentityError(Reason.MALFORMED_CERTIFICATE, "too many certificates in the chain")
        leaf, *rest = certificates
        # A forwarded chain (XFCC `Chain`) repeats the leaf; it is not an intermediate.
        intermediates = [c for c in rest if c != leaf]
        return self.verify(leaf, intermediates)

    def verify(self, leaf: x509.Certificate, intermediates: Sequence[x509.Certificate]) -> Identity:
        try:
            return self._verify(leaf, intermediates, self._clock())
        except _UNPARSEABLE:
            # cryptography parses names and extensions lazily, so a corrupt field surfaces
            # wherever it is first read (here, or inside the chain verifier).
            raise IdentityError(Reason.MALFORMED_CERTIFICATE, "unparseable certificate") from None

    def _verify(
        self, leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], now: float
    ) -> Identity:
        self._check_validity_period(leaf, now)
        _require_strong_key(leaf)
        uris = _uri_sans(leaf)
        # Any spiffe-looking URI makes this an SVID, held to the SVID rules (so "SPIFFE://..."
        # is refused as malformed rather than waved through as a plain certificate).
        if any(u[:7].lower() == "spiffe:" for u in uris):
            return self._verify_svid(leaf, intermediates, uris, now)
        return self._verify_plain(leaf, intermediates, now)

    def _check_validity_period(self, leaf: x509.Certificate, now: float) -> None:
        # Checked here, before chain building, so expiry gets its own reason.
        if now < leaf.not_valid_before_utc.timestamp():
            raise IdentityError(Reason.CERT_NOT_YET_VALID, "client certificate is not yet valid")
        if now > leaf.not_valid_after_utc.timestamp():
            raise IdentityError(Reason.CERT_EXPIRED, "client certificate has expired")

    def _require_configured(self, spiffe_id: SpiffeId) -> Store:
        store = self._spiffe_stores.get(spiffe_id.trust_domain)
        if store is None:
            raise IdentityError(
                Reason.WRONG_TRUST_DOMAIN,
                f"trust domain {spiffe_id.trust_domain!r} is not configured",
            )
        return store

    def _verify_svid(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        uris: list[str],
        now: float,
    ) -> Identity:
        if len(uris) != 1:
            raise IdentityError(Reason.NOT_AN_SVID, "an X.509-SVID has exactly one URI SAN")
        spiffe_id = parse_spiffe_id(uris[0])
        store = self._require_configured(spiffe_id)
        verified = self._verify_chain(store, leaf, intermediates, now, require_san=True)
        _require_svid_key_usage(leaf)
        return self._identity(
            IdentityKind.SPIFFE, str(spiffe_id), spiffe_id.trust_domain, verified, spiffe_id
        )

    def _verify_plain(
        self, leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], now: float
    ) -> Identity:
        if not self._x509_stores:
            raise IdentityError(Reason.NOT_AN_SVID, "certificate has no SPIFFE ID URI SAN")
        for name, store in self._x509_stores:
            try:
                verified = self._verify_chain(store, leaf, intermediates, now, require_san=False)
            except IdentityError:
                continue
            return self._identity(IdentityKind.X509, leaf.subject.rfc4514_string(), name, verified)
        raise IdentityError(Reason.CHAIN_UNTRUSTED, "no configured CA verifies the certificate")

    @staticmethod
    def _verify_chain(
        store: Store,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        now: float,
        *,
        require_san: bool,
    ) -> list[x509.Certificate]:
        verifier = _client_verifier(
            store, datetime.fromtimestamp(now, UTC), require_san=require_san
        )
        try:
            return verifier.verify(leaf, list(intermediates)).chain
        except VerificationError as error:
            # cryptography's message names the failing check and subject, not key material.
            raise IdentityError(Reason.CHAIN_UNTRUSTED, f"chain did not verify: {error}") from None

    @staticmethod
    def _identity(
        kind: IdentityKind,
        subject: str,
        issuer: str,
        chain: list[x509.Certificate],
        spiffe_id: SpiffeId | None = None,
    ) -> Identity:
        leaf = chain[0]
        leaf_sha256 = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).digest()
        # Evidence: the path that verified, leaf first, without the trust anchor.
        presented = chain[:-1] if len(chain) > 1 else chain
        pem_chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in presented)
        return Identity(
            kind=kind,
            subject=subject,
            issuer=issuer,
            credential_hash=leaf_sha256.hex(),
            # The chain is only as good as its shortest-lived link.
            expires_at=int(min(c.not_valid_after_utc for c in chain).timestamp()),
            evidence=Evidence("certificate", pem_chain),
            spiffe_id=spiffe_id,
            certificate_sha256=leaf_sha256,
        )
