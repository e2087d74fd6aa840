"""Round-one state: peers' commitments are a cache of validated ones, held only while useful."""

from __future__ import annotations

from signer.frost import commit, trusted_dealer_keygen
from signer.frost.encoding import commitment_key, encode_signing_commitment
from signer.nonces import PeerCommitments
from tests.helpers import ManualClock


def test_a_peers_commitment_is_forgotten_once_used_or_stale() -> None:
    """Each commitment is used once; an announced one stays only until a Sign names it or its TTL
    passes, so a signer holds its peers' outstanding commitments, not every one ever announced."""
    shares, _, _ = trusted_dealer_keygen(2, 3)
    clock = ManualClock(1000.0)
    peers = PeerCommitments(ttl_seconds=60, clock=clock)
    first = [commit(shares[1]).commitment for _ in range(3)]
    assert peers.announce([encode_signing_commitment(c) for c in first], own_identifier=1) == 3

    peers.forget([commitment_key(first[0])])  # named by a Sign: spent at its signer
    assert commitment_key(first[0]) not in peers
    assert len(peers) == 2

    clock.advance(61)
    later = commit(shares[2]).commitment
    peers.announce([encode_signing_commitment(later)], own_identifier=1)
    assert list(peers) == [commitment_key(later)]  # the stale ones went when it came
