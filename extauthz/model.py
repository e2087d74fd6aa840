"""Typed values that flow through the Check pipeline: identify -> authorize -> mint -> respond."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum


class IdentityKind(Enum):
    SPIFFE = "spiffe"  # an X.509-SVID: a client certificate whose URI SAN is a SPIFFE ID
    X509 = "x509"  # a client certificate without a SPIFFE ID
    GITHUB_ACTIONS = "github_actions"  # a GitHub Actions OIDC token
    GITLAB_CI = "gitlab_ci"  # a GitLab CI/CD `id_tokens` token
    KUBERNETES = "kubernetes"  # a projected Kubernetes service-account token
    SPIFFE_JWT = "spiffe_jwt"  # a JWT-SVID: `sub` is a SPIFFE ID
    OIDC = "oidc"  # any other OIDC issuer's ID token (engineers' IdPs, generic workloads)


# The kinds verified from a JWT (evidence "oidc_token"): proof-bearing, audience-bound tokens.
TOKEN_KINDS = frozenset(
    {
        IdentityKind.GITHUB_ACTIONS,
        IdentityKind.GITLAB_CI,
        IdentityKind.KUBERNETES,
        IdentityKind.SPIFFE_JWT,
        IdentityKind.OIDC,
    }
)


@dataclass(frozen=True, slots=True)
class SpiffeId:
    trust_domain: str
    path: str  # begins with "/", or is empty

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}{self.path}"


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the caller presented, carried to the signers so their guards can re-verify it.

    `kind` is "oidc_token" (value: the compact JWT) or "certificate" (value: the PEM chain, leaf
    first). Never logged: only `credential_hash` is.
    """

    kind: str
    value: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Identity:
    """One verified caller identity, whatever credential it came from."""

    kind: IdentityKind
    subject: str  # SPIFFE ID, certificate subject DN, or `<issuer>#<claims>` for tokens
    issuer: str  # OIDC issuer URL, or the trust domain / CA name for certificates
    credential_hash: str  # hex SHA-256 of the presented credential (cache key, log reference)
    expires_at: int  # unix seconds: the credential's own expiry (cert notAfter or token exp)
    evidence: Evidence
    spiffe_id: SpiffeId | None = None
    certificate_sha256: bytes | None = None  # DER SHA-256 of the leaf, for cnf x5t#S256
    claims: Mapping[str, str] = field(default_factory=dict)  # OIDC claims, ids as strings
    # Claims whose value is a list of strings (`groups`, `amr`): policy matches any element.
    claim_lists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # What minted tokens carry about where this identity came from (see extauthz.server.claims).
    provenance: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Route:
    """What the request is for, as Envoy described it."""

    host: str
    path: str
    method: str
    context_extensions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Grant:
    """What policy allows this identity for this route: the minted token's audience and scope."""

    audience: str
    scopes: tuple[str, ...]
    ttl_seconds: int
    rule: str  # the binding/role that granted it, for audit and metadata
