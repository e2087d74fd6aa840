"""Who may call the ceremony service: operators only, never the coordinator; none when unset."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from signer.devca import spiffe_id
from signer.proto import ceremony_pb2 as pb
from tests.signer.ceremony.support import Cluster, dev_pki, raw_stub, running_signers

CEREMONY_ID = bytes(range(16))
# Every RPC of keymint.ceremony.v1.KeyCeremony, with a request that would otherwise be served.
CALLS: dict[str, Callable[[Any], Any]] = {
    "Status": lambda stub: stub.Status(pb.StatusRequest()),
    "Begin": lambda stub: stub.Begin(pb.BeginRequest(parameters=b"")),
    "Deal": lambda stub: stub.Deal(pb.DealRequest(ceremony_id=CEREMONY_ID)),
    "Stage": lambda stub: stub.Stage(pb.StageRequest(ceremony_id=CEREMONY_ID)),
    "Commit": lambda stub: stub.Commit(pb.CommitRequest(ceremony_id=CEREMONY_ID)),
    "Abort": lambda stub: stub.Abort(pb.AbortRequest(ceremony_id=CEREMONY_ID)),
}


async def _refusal(cluster: Cluster, identity: str, method: str) -> grpc.aio.AioRpcError:
    channel, stub = raw_stub(cluster, 1, cluster.pki[identity])
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await CALLS[method](stub)
        return refused.value
    finally:
        await channel.close()


@pytest.mark.parametrize("method", sorted(CALLS))
def test_the_coordinator_identity_is_refused_every_ceremony_call(
    tmp_path: Path, method: str
) -> None:
    async def scenario() -> None:
        async with running_signers(dev_pki(tmp_path), [1]) as cluster:
            refused = await _refusal(cluster, "coordinator", method)
            assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
            assert refused.details() == (
                f"caller {spiffe_id('coordinator')} is not an operator of this signer "
                "(KEYMINT_OPERATOR_IDS)"
            )
            assert cluster.in_progress() == []

    asyncio.run(scenario())


def test_an_operator_identity_is_served(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_signers(dev_pki(tmp_path), [1]) as cluster:
            channel, stub = raw_stub(cluster, 1, cluster.pki["operator"])
            try:
                status = await stub.Status(pb.StatusRequest())
            finally:
                await channel.close()
            assert (status.identifier, status.kid) == (1, "")

    asyncio.run(scenario())


@pytest.mark.parametrize("method", sorted(CALLS))
def test_a_signer_without_operators_serves_no_ceremony_call(tmp_path: Path, method: str) -> None:
    async def scenario() -> None:
        cluster = Cluster(dev_pki(tmp_path), operators=())
        try:
            await cluster.start(1)
            refused = await _refusal(cluster, "operator", method)
            assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
            assert refused.details() == (
                "this signer serves no key ceremony: it was started without KEYMINT_OPERATOR_IDS"
            )
        finally:
            await cluster.stop(1)

    asyncio.run(scenario())
