"""Identify: verify what a caller presented and turn it into one typed `Identity`.

- `x509.X509Verifier`: client certificates (X.509-SVIDs per trust domain; plain X.509 if asked),
  from Envoy's `source.certificate` or PEM. Never a bare name (`source.principal`): the signers
  verify certificates, and a name is only the gateway's word.
- `xfcc.XfccIdentifier`: `x-forwarded-client-cert`, believed only from trusted proxies, and only
  with the certificate (`Cert`) in it.
- `jwt_verifier.JwtVerifier`: tokens of every configured issuer (`issuers.IssuerConfig`, from
  `KEYMINT_ISSUERS_FILE`), each under its preset (`presets`): GitHub Actions, GitLab CI,
  Kubernetes service accounts, SPIFFE JWT-SVIDs, any OIDC provider. Keys from `jwks.JwksCache`
  (discovery or a configured URL) or `keys.JwksFile`. `github_oidc` keeps GitHub's wiring.

Every refusal is an `IdentityError` with a machine-readable `reason`.
"""

from extauthz.identity.errors import (
    IdentityConfigError,
    IdentityError,
    MissingCredential,
    Reason,
    token_reference,
)
from extauthz.identity.github_oidc import (
    GITHUB_ISSUER,
    GitHubOidcVerifier,
    enterprise_issuer,
    ghes_issuer,
    github_configs,
    github_subject,
)
from extauthz.identity.issuers import IssuerConfig, IssuerConfigError, load_issuers_file
from extauthz.identity.jwks import JwksCache, JwksSettings
from extauthz.identity.jwt_verifier import IssuerVerifier, JwtVerifier
from extauthz.identity.keys import ALLOWED_ALGORITHMS, JwksFile, KeySource, VerificationKey
from extauthz.identity.presets import PRESETS, Preset
from extauthz.identity.spiffe import SpiffeIdPattern, parse_spiffe_id, validate_trust_domain
from extauthz.identity.x509 import TrustBundle, X509Verifier
from extauthz.identity.xfcc import TrustedProxies, XfccElement, XfccIdentifier, parse_xfcc

__all__ = [
    "ALLOWED_ALGORITHMS",
    "GITHUB_ISSUER",
    "PRESETS",
    "GitHubOidcVerifier",
    "IdentityConfigError",
    "IdentityError",
    "IssuerConfig",
    "IssuerConfigError",
    "IssuerVerifier",
    "JwksCache",
    "JwksFile",
    "JwksSettings",
    "JwtVerifier",
    "KeySource",
    "MissingCredential",
    "Preset",
    "Reason",
    "SpiffeIdPattern",
    "TrustBundle",
    "TrustedProxies",
    "VerificationKey",
    "X509Verifier",
    "XfccElement",
    "XfccIdentifier",
    "enterprise_issuer",
    "ghes_issuer",
    "github_configs",
    "github_subject",
    "load_issuers_file",
    "parse_spiffe_id",
    "parse_xfcc",
    "token_reference",
    "validate_trust_domain",
]
