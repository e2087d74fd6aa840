"""Identify: verify what a caller presented and turn it into one typed `Identity`.

- `x509.X509Verifier`: client certificates (X.509-SVIDs per trust domain; plain X.509 if asked),
  from Envoy's `source.certificate` or PEM. Never a bare name (`source.principal`): the signers
  verify certificates, and a name is only the gateway's word.
- `xfcc.XfccIdentifier`: `x-forwarded-client-cert`, believed only from trusted proxies, and only
  with the certificate (`Cert`) in it.
- `github_oidc.GitHubOidcVerifier`: GitHub Actions OIDC tokens, keys from `jwks.JwksCache`; the
  subject is `github_subject` (issuer and numeric ids).

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
    SigningKeySource,
    enterprise_issuer,
    ghes_issuer,
    github_subject,
)
from extauthz.identity.jwks import JwksCache, JwksSettings
from extauthz.identity.spiffe import SpiffeIdPattern, parse_spiffe_id, validate_trust_domain
from extauthz.identity.x509 import TrustBundle, X509Verifier
from extauthz.identity.xfcc import TrustedProxies, XfccElement, XfccIdentifier, parse_xfcc

__all__ = [
    "GITHUB_ISSUER",
    "GitHubOidcVerifier",
    "IdentityConfigError",
    "IdentityError",
    "JwksCache",
    "JwksSettings",
    "MissingCredential",
    "Reason",
    "SigningKeySource",
    "SpiffeIdPattern",
    "TrustBundle",
    "TrustedProxies",
    "X509Verifier",
    "XfccElement",
    "XfccIdentifier",
    "enterprise_issuer",
    "ghes_issuer",
    "github_subject",
    "parse_spiffe_id",
    "parse_xfcc",
    "token_reference",
    "validate_trust_domain",
]
