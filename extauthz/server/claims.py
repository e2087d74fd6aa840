"""What a minted token says about its caller, derived once from a verified Identity.

The gateway writes these claims into tokens, and its evidence checker (running inside each signer)
derives them again from the same evidence, so a signer's guard can insist they match.
"""

from __future__ import annotations

from extauthz.model import TOKEN_KINDS, Identity
from signer.token import b64url


def provenance_claims(identity: Identity) -> dict[str, str]:
    """Claims beyond the registered ones that describe where the caller's identity came from:
    for a token, the claims its issuer's configuration names (`IssuerConfig.provenance`; GitHub's
    ids and names, GitLab's project and namespace, a service account's namespace...); for a
    SPIFFE identity, its SPIFFE ID."""
    if identity.kind in TOKEN_KINDS:
        return dict(identity.provenance)
    if identity.spiffe_id is not None:
        return {"spiffe_id": str(identity.spiffe_id)}
    return {}


def confirmation_claim(identity: Identity) -> dict[str, str] | None:
    """RFC 8705 `cnf`: binds a certificate caller's token to the certificate it presented."""
    if identity.certificate_sha256 is None:
        return None
    return {"x5t#S256": b64url(identity.certificate_sha256)}
