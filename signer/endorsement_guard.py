"""What a signer agrees to endorse: only a key it holds a share of, by another key it holds.

`check_endorsement` is the guard for messages of typ `keymint-key-endorsement+jwt`
(`signer.endorsement`). It needs no evidence: what it vouches for is a fact about this signer's own
key state. Every key a signer holds came from a ceremony it took part in (and checked), or was
unsealed from its own vault, so "holds a share of" is "took part in making". It refuses, naming
the first rule broken, in this order:

1. not the canonical encoding of exactly the endorsement's header and payload (`not_a_token`,
   `not_canonical`, `header_alg`, `header_extra`, `endorsement_claims`, `endorsement_key`);
2. the endorsing kid is not a key this signer holds (`header_kid`), or that key needs fewer
   signers than the deployment's minimum, FROST_T (`key_threshold`);
3. iss is not this signer's issuer (`issuer`); iat further from now than the clock skew
   (`iat_skew`);
4. the endorsed key is the endorsing key (`endorsement_self`), is not a key this signer holds
   (`endorsement_key_unknown`), or needs fewer signers than the endorsing key
   (`endorsement_threshold`), so an endorsement never lowers the bar for minting.
"""

from __future__ import annotations

import math

from signer.endorsement import Endorsement, EndorsementFormatError, read_endorsement
from signer.guard import GuardRefusal, check_key_threshold
from signer.keystate import KeyState


def check_endorsement(
    message: bytes,
    *,
    keys: KeyState,
    issuer: str,
    now: float,
    max_clock_skew_seconds: int = 60,
    min_threshold: int = 2,
) -> Endorsement:
    """Accept `message` for signing as an endorsement now, or raise GuardRefusal."""
    if not math.isfinite(now):
        raise ValueError(f"the guard's clock gave {now!r}")
    try:
        endorsement = read_endorsement(message)
    except EndorsementFormatError as refused:
        raise GuardRefusal(refused.rule, refused.detail) from None
    endorser = keys.get(endorsement.endorser_kid)
    if endorser is None:
        raise GuardRefusal("header_kid", "the endorsing kid is not a key this signer holds")
    check_key_threshold(endorser.kid, endorser.package.min_participants, min_threshold)
    if endorsement.issuer != issuer:
        raise GuardRefusal("issuer", f"iss is not {issuer!r}")
    skew = max_clock_skew_seconds
    if not now - skew <= endorsement.issued_at <= now + skew:
        raise GuardRefusal("iat_skew", f"iat is more than {skew} s from now")
    if endorsement.kid == endorser.kid:
        raise GuardRefusal("endorsement_self", f"key {endorser.kid} would endorse itself")
    endorsed = keys.get(endorsement.kid)
    if endorsed is None:
        raise GuardRefusal(
            "endorsement_key_unknown",
            f"key {endorsement.kid} is not a key this signer holds a share of",
        )
    if endorsed.package.min_participants < endorser.package.min_participants:
        raise GuardRefusal(
            "endorsement_threshold",
            f"key {endorsed.kid} needs {endorsed.package.min_participants} signers, "
            f"key {endorser.kid} needs {endorser.package.min_participants}",
        )
    return endorsement
