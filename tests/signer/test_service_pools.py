"""The nonce pool a SignerService is given is the one it uses. Found by `make fuzz` (the
sign_request target): `nonces or NoncePool()` swapped an empty pool (every pool, at start) for a
default one, so a pool built with another clock, TTL or capacity was silently ignored."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from signer.devca import coordinator_name, make_dev_pki, spiffe_id
from signer.frost import commit, trusted_dealer_keygen
from signer.frost.encoding import decode_signing_commitment, encode_commitment_list
from signer.keystate import KeyState, SigningKey
from signer.nonces import NoncePool, PeerCommitments
from signer.proto import signer_pb2
from signer.service import SignerService
from tests.helpers import ManualClock


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class Context:
    """What a call from the coordinator looks like to the service; abort raises."""

    def __init__(self, certificate: bytes) -> None:
        self._certificate = certificate

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self._certificate]}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Aborted(code, details)


class AcceptAll:
    async def check(self, message: bytes, evidence: object) -> object:
        return None


class Audit:
    async def append(self, event: str, data: dict[str, object]) -> object:
        return None


def test_the_injected_pools_are_the_ones_used(tmp_path: Path) -> None:
    shares, package, _ = trusted_dealer_keygen(2, 3)
    clock = ManualClock(1000.0)
    nonces, peers = NoncePool(ttl_seconds=60, clock=clock), PeerCommitments()
    service = SignerService(
        key_state=KeyState([SigningKey(shares[0], package)]),
        guard=AcceptAll(),
        audit=Audit(),
        allowed_callers=[spiffe_id(coordinator_name())],
        nonces=nonces,
        peers=peers,
    )
    context = Context(make_dev_pki(tmp_path, [1])["coordinator"].cert.read_bytes())

    async def run() -> None:
        issued = await service.Commit(signer_pb2.CommitRequest(count=2), context)  # type: ignore[arg-type]
        assert len(nonces) == 2  # in the pool given, not in one of the service's own
        assert issued.ttl_seconds == 60
        own = decode_signing_commitment(issued.commitments[0])
        clock.advance(61)  # the injected clock expires it
        request = signer_pb2.SignRequest(
            message=b"e30.e30",
            commitment_list=encode_commitment_list([own, commit(shares[1]).commitment]),
        )
        with pytest.raises(Aborted) as refused:
            await service.Sign(request, context)  # type: ignore[arg-type]
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert str(refused.value).startswith("commitment_unknown")

    asyncio.run(run())
