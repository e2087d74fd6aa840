"""Round-one state of a signer: nonces issued and not yet used, and peers' validated commitments.

Nonces live in memory only. Each is handed out once, removed on first use whatever the outcome,
expires unused after a TTL, and the pool is bounded (the oldest are dropped first). A process
restart therefore voids every outstanding commitment, as it must.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping

from signer.frost import KeyShare, SigningCommitment, SigningNonces, commit
from signer.frost.encoding import commitment_key, decode_signing_commitment
from signer.frost.group import RandomBytes


class NoncePool(Mapping[bytes, SigningCommitment]):
    """Issued nonces by `commitment_key`; as a mapping it shows only their public commitments."""

    def __init__(
        self,
        *,
        capacity: int = 4096,
        ttl_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        rng: RandomBytes = os.urandom,
    ) -> None:
        self._entries: OrderedDict[bytes, tuple[SigningNonces, float]] = OrderedDict()
        self._capacity = capacity
        self._ttl = ttl_seconds
        self._clock = clock
        self._rng = rng

    @property
    def ttl_seconds(self) -> float:
        return self._ttl

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, key: bytes) -> SigningCommitment:
        return self._entries[key][0].commitment

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._entries)

    def issue(self, share: KeyShare, count: int) -> list[SigningCommitment]:
        expires = self._clock() + self._ttl
        issued = []
        for _ in range(count):
            nonces = commit(share, self._rng)
            self._entries[commitment_key(nonces.commitment)] = (nonces, expires)
            issued.append(nonces.commitment)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
        return issued

    def take(self, key: bytes) -> SigningNonces | None:
        """The nonces behind a commitment, removed for good; None if unknown, used or stale."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        nonces, expires = entry
        return nonces if self._clock() < expires else None

    def clear(self) -> None:
        self._entries.clear()

    def expire(self) -> int:
        now = self._clock()
        stale = [k for k, (_, expires) in self._entries.items() if expires <= now]
        for k in stale:
            del self._entries[k]
        return len(stale)


class PeerCommitments(Mapping[bytes, SigningCommitment]):
    """Other signers' commitments, validated when announced so signing need not re-check them.

    A read-only mapping from `commitment_key` to the commitment, as `decode_commitment_list` takes.
    It is a cache: a commitment not in it is validated when it is used. Each commitment is used
    once, so one named by a Sign request is forgotten (`forget`), and stale ones go whenever new
    ones are announced: the signer holds its peers' outstanding commitments, not every one it was
    ever told of.
    """

    def __init__(
        self,
        *,
        capacity: int = 16384,
        ttl_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[bytes, tuple[SigningCommitment, float]] = OrderedDict()
        self._capacity = capacity
        self._ttl = ttl_seconds
        self._clock = clock

    def announce(self, encoded: Iterable[bytes], own_identifier: int) -> int:
        """Validate and remember commitments; returns how many were accepted."""
        expires = self._clock() + self._ttl
        accepted = 0
        for data in encoded:
            commitment = decode_signing_commitment(data)  # raises EncodingError if invalid
            if commitment.identifier == own_identifier:
                continue
            self._entries[commitment_key(commitment)] = (commitment, expires)
            accepted += 1
        now = self._clock()
        while len(self._entries) > self._capacity or (
            self._entries and next(iter(self._entries.values()))[1] <= now
        ):
            self._entries.popitem(last=False)  # one TTL for all: the oldest expire first
        return accepted

    def forget(self, keys: Iterable[bytes]) -> None:
        """Drop commitments a Sign request named: their signers have spent them."""
        for key in keys:
            self._entries.pop(key, None)

    def __getitem__(self, key: bytes) -> SigningCommitment:
        commitment, expires = self._entries[key]
        if expires <= self._clock():
            raise KeyError(key)
        return commitment

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class KnownCommitments(Mapping[bytes, SigningCommitment]):
    """This signer's own issued commitments and its peers' validated ones, looked up together."""

    def __init__(self, own: NoncePool, peers: PeerCommitments) -> None:
        self._own = own
        self._peers = peers

    def __getitem__(self, key: bytes) -> SigningCommitment:
        if key in self._own:
            return self._own[key]
        return self._peers[key]

    def __iter__(self) -> Iterator[bytes]:
        yield from self._own
        yield from self._peers

    def __len__(self) -> int:
        return len(self._own) + len(self._peers)
