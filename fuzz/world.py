"""The fixed world the fuzz targets run in: keys, certificates, policy, a clock stopped at FUZZ_NOW.

Everything is rebuilt the same way in every process, so the seed inputs (fuzz/seeds/, made by
`python -m fuzz.seeds`) stay valid in it: EC and Ed25519 keys are derived from fixed labels, the
FROST group from a fixed secret and a seeded generator, and the clock never moves. The one
exception is the OIDC issuer's RSA key, which cannot be derived: its public half is kept in
fuzz/seeds/_world/oidc-public.pem beside the tokens it signed. So are the keys of the other token
issuers (one of each preset, `ISSUERS`), as the JWKS files an operator would configure
(fuzz/seeds/_world/<name>-jwks.json). The policy is read from fuzz/seeds/_world/policy.json, so its
version (the file's SHA-256) is stable too.

Nothing here does I/O at request time: the OIDC issuer's keys come from memory, the threshold
signer is the sans-IO FROST core in this process, and the audit writer scrubs and encodes each
record as the real one does, without the fsync.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from extauthz.guard_checker import GatewayEvidenceChecker
from extauthz.identity import (
    IdentityError,
    IssuerConfig,
    IssuerVerifier,
    JwksFile,
    JwtVerifier,
    Reason,
    TrustBundle,
    TrustedProxies,
    VerificationKey,
    X509Verifier,
    XfccIdentifier,
    github_configs,
)
from extauthz.identity.issuers import JwksPath
from extauthz.identity.keys import USE_JWT_SVID, USE_SIGNATURE
from extauthz.policy import Limits, PolicyEngine, PolicyStore, parse_policy
from extauthz.server.mint import Minter, MintSettings
from extauthz.server.own_tokens import OwnTokenVerifier
from extauthz.server.pipeline import Identifier, Pipeline
from signer.audit import canonical_json, scrub
from signer.budget import BudgetSettings, EvidenceBudget
from signer.devca import coordinator_name, signer_name, spiffe_id
from signer.frost import (
    KeyShare,
    PublicKeyPackage,
    aggregate,
    commit,
    sign,
    trusted_dealer_keygen,
)
from signer.keystate import KeyState, SigningKey
from signer.nonces import NoncePool
from signer.server import KeyedGuard
from signer.service import SignerService

FUZZ_NOW = 1_900_000_000  # 2030-03-17: every clock in the world reads this
TRUST_DOMAIN = "fuzz.test"
PROXY_ID = f"spiffe://{TRUST_DOMAIN}/ns/edge/sa/proxy"
OIDC_ISSUER = "https://oidc.fuzz.test"
OIDC_AUDIENCE = "https://keymint.fuzz.test/ci"
OIDC_KID = "fuzz-key-1"
KEYMINT_ISSUER = "https://keymint.fuzz.test"
DEPLOY = "https://deploy.internal"
ORDERS = "https://orders.internal"
SCOPES = frozenset({"deploy:read", "deploy:write", "orders:read"})
SEEDS = Path(__file__).resolve().parent / "seeds"
WORLD = SEEDS / "_world"


@dataclass(frozen=True)
class Issuer:
    """A token issuer of the fuzz world beside GitHub's: its preset and what it signs with."""

    name: str  # its JWKS is _world/<name>-jwks.json
    preset: str
    issuer: str | None  # None: a SPIFFE trust domain's JWT-SVIDs, found by `sub`
    audience: str
    algorithms: tuple[str, ...]  # the issuer's configured algorithms, one key for each

    @property
    def jwks(self) -> Path:
        return WORLD / f"{self.name}-jwks.json"

    def config(self) -> IssuerConfig:
        return IssuerConfig.for_preset(
            self.preset,
            name=self.name,
            issuer=self.issuer,
            audiences=[self.audience],
            algorithms=self.algorithms,
            keys=JwksPath(self.jwks),
            **({"trust_domain": TRUST_DOMAIN} if self.preset == "spiffe_jwt" else {}),
        )


# One issuer of each other preset, their keys covering every algorithm keymint allows (GitHub's
# tokens are RS256 only): so each preset's claim checks and each algorithm's parsing are fuzzed.
ISSUERS = (
    Issuer(
        "kubernetes",
        "kubernetes",
        "https://k8s.fuzz.test",
        "https://keymint.fuzz.test/k8s",
        ("ES256",),
    ),
    Issuer(
        "gitlab",
        "gitlab_ci",
        "https://gitlab.fuzz.test",
        "https://keymint.fuzz.test/gitlab",
        ("RS256",),
    ),
    Issuer("svid", "spiffe_jwt", None, "https://keymint.fuzz.test/svid", ("ES256", "ES384")),
    Issuer(
        "oidc", "oidc", "https://idp.fuzz.test", "keymint-fuzz-client", ("ES256", "PS256", "EdDSA")
    ),
)

POLICY = {
    "version": 1,
    "roles": {
        "deployer": {"scopes": ["deploy:read", "deploy:write"], "max_ttl_seconds": 600},
        "orders-reader": {"scopes": ["orders:read"], "max_ttl_seconds": 900},
    },
    "audiences": {DEPLOY: {"route_keys": ["deploy"]}, ORDERS: {"route_keys": ["orders"]}},
    "bindings": [
        {
            "name": "ci-deploys",
            "role": "deployer",
            "match": {
                "kind": "github_actions",
                "issuer": OIDC_ISSUER,
                "claims": {"repository_id": "74", "repository_owner_id": "65"},
            },
            "routes": {"audiences": [DEPLOY]},
        },
        {
            "name": "shop-reads-orders",
            "role": "orders-reader",
            "match": {"kind": "spiffe", "ids": [f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/*"]},
            "routes": {"audiences": [ORDERS]},
        },
    ],
}


def now() -> float:
    return float(FUZZ_NOW)


def now_datetime() -> datetime.datetime:
    return datetime.datetime.fromtimestamp(FUZZ_NOW, datetime.UTC)


def _scalar(label: str) -> int:
    return int.from_bytes(hashlib.sha256(label.encode()).digest(), "big")


def ec_key(label: str) -> ec.EllipticCurvePrivateKey:
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    return ec.derive_private_key(_scalar(label) % (order - 1) + 1, ec.SECP256R1())


def ed_key(label: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(sign, False, False, False, False, ca, ca, False, False)


@functools.cache
def ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The trust bundle's CA for SPIFFE IDs in fuzz.test."""
    key = ec_key("fuzz ca")
    name = _name("fuzz.test root CA")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2040, 1, 1, tzinfo=datetime.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(sign=False, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def svid(path: str, *, key_label: str | None = None) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """An X.509-SVID for spiffe://fuzz.test<path>, valid around FUZZ_NOW: (PEM, key)."""
    authority, authority_key = ca()
    key = ec_key(key_label or f"svid {path}")
    start = now_datetime() - datetime.timedelta(days=1)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("workload"))
        .issuer_name(authority.subject)
        .public_key(key.public_key())
        .serial_number(_scalar(path) >> 100)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign=True, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key.public_key()), False
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{TRUST_DOMAIN}{path}")]
            ),
            False,
        )
        .sign(authority_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key


@functools.cache
def oidc_public_key() -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key((WORLD / "oidc-public.pem").read_bytes())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


@functools.cache
def frost_group() -> tuple[tuple[KeyShare, ...], PublicKeyPackage]:
    """A 2-of-3 group key, the same in every process."""
    shares, package, _ = trusted_dealer_keygen(
        2, 3, secret_key=_scalar("fuzz group secret") % (2**252), rng=random.Random(7).randbytes
    )
    return tuple(shares), package


# --- the gateway ------------------------------------------------------------------------------


class StaticKeys:
    """The OIDC issuer's keys, from memory (the real JwksCache fetches them over HTTP)."""

    issuer = OIDC_ISSUER

    async def verification_key(self, kid: str) -> VerificationKey:
        if kid != OIDC_KID:
            raise IdentityError(Reason.UNKNOWN_KID, "no such key")
        return VerificationKey(kid, oidc_public_key(), frozenset({"RS256"}))


class ScrubbingAudit:
    """The audit writer without the disk: each record scrubbed and encoded as `AuditLog` does."""

    async def append(self, event: str, data: Mapping[str, object] | None = None) -> object:
        return canonical_json(scrub(dict(data or {})))


class InProcessSigner:
    """Threshold signing by signers 1 and 2 of the FROST group, in this process."""

    async def sign(
        self,
        message: bytes,
        *,
        evidence: object = None,
        request_id: str = "",
        timeout: float = 2.0,
    ) -> Signed:
        shares, package = frost_group()
        chosen = shares[:2]
        nonces = [commit(share) for share in chosen]
        commitments = [n.commitment for n in nonces]
        signature_shares = [
            sign(share, n, message, commitments) for share, n in zip(chosen, nonces, strict=True)
        ]
        signature = aggregate(commitments, message, package, signature_shares)
        return Signed(signature, tuple(share.identifier for share in chosen))


@dataclass(frozen=True)
class Signed:
    signature: bytes
    signers: tuple[int, ...]


def github_issuer() -> IssuerConfig:
    (config,) = github_configs([OIDC_ISSUER], audiences=[OIDC_AUDIENCE])
    return config


def token_verifier() -> JwtVerifier:
    """Every issuer of the world: GitHub's keys from memory, the others' from their JWKS files
    (read here, once: the clock never moves, so no cooldown ever lets them be read again)."""
    verifiers = [IssuerVerifier(github_issuer(), StaticKeys(), clock=now)]
    for issuer in ISSUERS:
        config = issuer.config()
        svid = config.preset.name == "spiffe_jwt"
        keys = JwksFile(
            config.label,
            issuer.jwks,
            algorithms=config.algorithms,
            uses=(USE_SIGNATURE, USE_JWT_SVID) if svid else (USE_SIGNATURE,),
            clock=now,
        )
        verifiers.append(IssuerVerifier(config, keys, clock=now))
    return JwtVerifier(verifiers)


def certificates() -> X509Verifier:
    return X509Verifier(spiffe_bundles=[TrustBundle(TRUST_DOMAIN, (ca()[0],))], clock=now)


def identifier() -> Identifier:
    verifier = certificates()
    return Identifier(
        oidc=JwtVerifier([IssuerVerifier(github_issuer(), StaticKeys(), clock=now)]),
        certificates=verifier,
        xfcc=XfccIdentifier(
            trusted_proxies=TrustedProxies.parse([PROXY_ID]), certificates=verifier
        ),
    )


def engine() -> PolicyEngine:
    """The policy from its file (fuzz/seeds/_world/policy.json), so that its version (the file's
    SHA-256) is the one the seeds' sign requests name."""
    policy = PolicyStore(WORLD / "policy.json", load=parse_policy)
    return PolicyEngine(limits=Limits(SCOPES, 900), policy=policy)


def own_tokens() -> OwnTokenVerifier:
    return OwnTokenVerifier(
        issuer=KEYMINT_ISSUER, group_keys=lambda: [frost_group()[1].group_public_key], clock=now
    )


def pipeline(signer: InProcessSigner | None = None) -> Pipeline:
    group_key = frost_group()[1].group_public_key
    minter = Minter(
        settings=MintSettings(issuer=KEYMINT_ISSUER),
        signer=signer or InProcessSigner(),
        group_public_key=lambda: group_key,
        clock=now,
    )
    return Pipeline(
        identifier=identifier(),
        engine=engine(),
        minter=minter,
        audit=ScrubbingAudit(),
        own_tokens=own_tokens(),
        clock=now,
    )


# --- a signer ---------------------------------------------------------------------------------


COORDINATOR_ID = spiffe_id(coordinator_name())


@functools.cache
def coordinator_certificate() -> bytes:
    """What the Sign RPC's authenticated peer shows: a certificate with the coordinator's ID."""
    key = ed_key("fuzz coordinator")
    name = _name("coordinator")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2040, 1, 1, tzinfo=datetime.UTC))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(COORDINATOR_ID)]), False
        )
        .sign(key, None)
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def signer_service(identifier_: int = 1) -> tuple[SignerService, NoncePool]:
    """Signer `identifier_` of the FROST group, its guard composed with the gateway's checker."""
    shares, package = frost_group()
    keys = KeyState([SigningKey(shares[identifier_ - 1], package)])
    guard = KeyedGuard(
        key_state=keys,
        checker=GatewayEvidenceChecker(identifier=identifier(), engine=engine()),
        issuer=KEYMINT_ISSUER,
        max_ttl=3600,
        budget=EvidenceBudget(BudgetSettings(limit=1 << 30, window_seconds=3600)),
        clock=now,
    )
    nonces = NoncePool(clock=now)
    service = SignerService(
        key_state=keys,
        guard=guard,
        audit=ScrubbingAudit(),  # type: ignore[arg-type]
        allowed_callers=[COORDINATOR_ID],
        nonces=nonces,
    )
    return service, nonces


# --- ceremonies -------------------------------------------------------------------------------


@functools.cache
def ceremony_pki() -> dict[int, tuple[bytes, bytes]]:
    """Ed25519 certificates (deterministic signatures: the same bytes in every process) for
    signers 1-3 under one CA; index 0 is the CA itself. Values are (certificate PEM, key PEM)."""
    ca_key = ed_key("fuzz ceremony ca")
    ca_name = _name("fuzz ceremony CA")
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    end = datetime.datetime(2040, 1, 1, tzinfo=datetime.UTC)
    authority = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(10)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, None)
    )
    out = {0: (authority.public_bytes(serialization.Encoding.PEM), b"")}
    for i in (1, 2, 3):
        key = ed_key(f"fuzz ceremony signer {i}")
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(signer_name(i)))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(10 + i)
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(spiffe_id(signer_name(i)))]
                ),
                False,
            )
            .sign(ca_key, None)
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        out[i] = (certificate.public_bytes(serialization.Encoding.PEM), key_pem)
    return out


def deterministic_rng(label: str) -> Any:
    return random.Random(_scalar(label)).randbytes
