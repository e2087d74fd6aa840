"""Signers served for real over loopback mTLS, and a relay that records what the driver carries."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import Message

from signer.ceremony import CeremonyServicer, add_to_server
from signer.ceremony.approvals import ReplaceApprovals
from signer.ceremony.driver import CeremonyClient, CeremonyDriver, GrpcCeremonyClient
from signer.devca import TlsFiles, make_dev_pki, operator_name, signer_name, spiffe_id
from signer.frost import KeyShare, PublicKeyPackage
from signer.keystate import KeyState
from signer.proto import ceremony_pb2 as pb
from signer.proto import ceremony_pb2_grpc
from signer.tls import secure_channel, server_credentials
from tests.signer.frost.support import threshold_sign

MESSAGE = b"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJjZXJlbW9ueSJ9"


def dev_pki(directory: Path, identifiers: Iterable[int] = (1, 2, 3, 4, 5)) -> dict[str, TlsFiles]:
    return make_dev_pki(directory, list(identifiers))


@dataclass
class SignerNode:
    identifier: int
    key_state: KeyState
    servicer: CeremonyServicer
    server: grpc.aio.Server
    address: str


@dataclass
class Cluster:
    """Signer processes' ceremony services, each on its own OS-chosen loopback port.

    They accept `operators` as driver (the dev PKI's "operator"); `allow_trusted_dealer` is their
    development switch; `min_threshold` the deployment's FROST_T; each keeps local approvals under
    `state_dir(identifier)`.
    """

    pki: dict[str, TlsFiles]
    nodes: dict[int, SignerNode] = field(default_factory=dict)
    allow_trusted_dealer: bool = False
    min_threshold: int = 2
    operators: tuple[str, ...] = (spiffe_id(operator_name()),)

    def state_dir(self, identifier: int) -> Path:
        return self.pki[signer_name(identifier)].ca.parent / "state" / signer_name(identifier)

    def approvals(self, identifier: int) -> ReplaceApprovals:
        return ReplaceApprovals(self.state_dir(identifier))

    async def start(self, identifier: int, key_state: KeyState | None = None) -> SignerNode:
        files = self.pki[signer_name(identifier)]
        key_state = key_state or KeyState()
        servicer = CeremonyServicer(
            identifier=identifier,
            key_state=key_state,
            tls_files=files,
            operators=self.operators,
            ca_pem=files.ca.read_bytes(),
            approvals=self.approvals(identifier),
            allow_trusted_dealer=self.allow_trusted_dealer,
            min_threshold=self.min_threshold,
        )
        server = grpc.aio.server()
        add_to_server(servicer, server)
        port = server.add_secure_port("127.0.0.1:0", server_credentials(files))
        await server.start()
        node = SignerNode(identifier, key_state, servicer, server, f"127.0.0.1:{port}")
        self.nodes[identifier] = node
        return node

    async def stop(self, identifier: int) -> None:
        await self.nodes[identifier].server.stop(grace=None)

    def addresses(self) -> dict[int, str]:
        return {i: node.address for i, node in self.nodes.items()}

    def key(self, identifier: int) -> tuple[KeyShare, PublicKeyPackage]:
        current = self.nodes[identifier].key_state.current
        return current.share, current.package

    def in_progress(self) -> list[str]:
        return [c for node in self.nodes.values() for c in node.servicer.ceremonies_in_progress]


@contextlib.asynccontextmanager
async def running_signers(
    pki: dict[str, TlsFiles],
    identifiers: Iterable[int],
    *,
    allow_trusted_dealer: bool = False,
    min_threshold: int = 2,
) -> AsyncIterator[Cluster]:
    cluster = Cluster(pki, allow_trusted_dealer=allow_trusted_dealer, min_threshold=min_threshold)
    try:
        for identifier in identifiers:
            await cluster.start(identifier)
        yield cluster
    finally:
        for node in cluster.nodes.values():
            await node.server.stop(grace=None)


Hook = Callable[[int, Message], Awaitable[Message | None]]


class Relay:
    """A CeremonyClient in front of a real one: records every message, lets a test rewrite some.

    A hook gets (signer, message) and may return a replacement; `before` hooks see requests, `after`
    hooks responses, keyed by method name ("begin", "deal", "stage", ...).
    """

    def __init__(
        self,
        identifier: int,
        inner: CeremonyClient,
        record: list[bytes],
        *,
        before: Mapping[str, Hook] | None = None,
        after: Mapping[str, Hook] | None = None,
    ) -> None:
        self.identifier = identifier
        self._inner = inner
        self._record = record
        self._before = dict(before or {})
        self._after = dict(after or {})

    async def _relay(
        self, name: str, request: Message, call: Callable[[Message], Awaitable[Message]]
    ) -> Message:
        if name in self._before:
            request = await self._before[name](self.identifier, request) or request
        self._record.append(request.SerializeToString())
        response = await call(request)
        if name in self._after:
            response = await self._after[name](self.identifier, response) or response
        self._record.append(response.SerializeToString())
        return response

    async def status(self, request: pb.StatusRequest) -> pb.StatusResponse:
        return await self._relay("status", request, self._inner.status)  # type: ignore[arg-type,return-value]

    async def begin(self, request: pb.BeginRequest) -> pb.BeginResponse:
        return await self._relay("begin", request, self._inner.begin)  # type: ignore[arg-type,return-value]

    async def deal(self, request: pb.DealRequest) -> pb.DealResponse:
        return await self._relay("deal", request, self._inner.deal)  # type: ignore[arg-type,return-value]

    async def stage(self, request: pb.StageRequest) -> pb.StageResponse:
        return await self._relay("stage", request, self._inner.stage)  # type: ignore[arg-type,return-value]

    async def commit(self, request: pb.CommitRequest) -> pb.CommitResponse:
        return await self._relay("commit", request, self._inner.commit)  # type: ignore[arg-type,return-value]

    async def abort(self, request: pb.AbortRequest) -> pb.AbortResponse:
        return await self._relay("abort", request, self._inner.abort)  # type: ignore[arg-type,return-value]


@contextlib.asynccontextmanager
async def relayed_driver(
    cluster: Cluster,
    *,
    driver_files: TlsFiles | None = None,
    record: list[bytes] | None = None,
    before: Mapping[str, Hook] | None = None,
    after: Mapping[str, Hook] | None = None,
) -> AsyncIterator[CeremonyDriver]:
    """A driver whose every call goes through a Relay, over real mTLS channels."""
    files = driver_files or cluster.pki[operator_name()]
    record = record if record is not None else []
    channels = {
        i: secure_channel(address, files, signer_name(i))
        for i, address in cluster.addresses().items()
    }
    try:
        clients = {
            i: Relay(
                i, GrpcCeremonyClient(i, channel, timeout=10.0), record, before=before, after=after
            )
            for i, channel in channels.items()
        }
        yield CeremonyDriver(clients=clients, ca_pem=files.ca.read_bytes())
    finally:
        for channel in channels.values():
            await channel.close()


def raw_stub(cluster: Cluster, identifier: int, files: TlsFiles) -> tuple[grpc.aio.Channel, Any]:
    """A bare stub, for calls no driver would make."""
    channel = secure_channel(cluster.nodes[identifier].address, files, signer_name(identifier))
    return channel, ceremony_pb2_grpc.KeyCeremonyStub(channel)  # type: ignore[no-untyped-call]


def signs(shares: Iterable[KeyShare], package: PublicKeyPackage) -> bool:
    """Threshold-sign MESSAGE with `shares` and check it as a plain Ed25519 signature."""
    signature = threshold_sign(list(shares), package, MESSAGE)
    Ed25519PublicKey.from_public_bytes(package.group_public_key).verify(signature, MESSAGE)
    return True


def every_quorum_signs(cluster: Cluster, identifiers: Iterable[int], threshold: int) -> None:
    keys = {i: cluster.key(i) for i in identifiers}
    package = next(iter(keys.values()))[1]
    for quorum in combinations(sorted(keys), threshold):
        assert signs([keys[i][0] for i in quorum], package), quorum
