"""Drive a whole signing round in memory, as a coordinator and its signers would."""

from __future__ import annotations

from collections.abc import Sequence

from signer.frost import KeyShare, PublicKeyPackage, SignatureShare, aggregate, commit, sign


def sign_shares(
    shares: Sequence[KeyShare], msg: bytes
) -> tuple[list[SignatureShare], list, list[KeyShare]]:  # type: ignore[type-arg]
    ordered = sorted(shares, key=lambda s: s.identifier)
    nonces = [commit(s) for s in ordered]
    commitment_list = [n.commitment for n in nonces]
    sig_shares = [sign(s, n, msg, commitment_list) for s, n in zip(ordered, nonces, strict=True)]
    return sig_shares, commitment_list, ordered


def threshold_sign(shares: Sequence[KeyShare], package: PublicKeyPackage, msg: bytes) -> bytes:
    sig_shares, commitment_list, _ = sign_shares(shares, msg)
    return aggregate(commitment_list, msg, package, sig_shares)
