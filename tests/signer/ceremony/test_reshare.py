"""Refresh and reshare among running signers: the group key stays, the shares do not."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import grpc
import pytest

from signer.ceremony import CeremonyFailed, connect
from signer.ceremony.wire import CEREMONY_ID_SIZE, CeremonyKind, CeremonyParameters
from signer.frost import InvalidSignatureShare
from signer.proto import ceremony_pb2 as pb
from tests.signer.ceremony.support import (
    MESSAGE,
    dev_pki,
    every_quorum_signs,
    raw_stub,
    running_signers,
    signs,
)
from tests.signer.frost.support import threshold_sign


def test_reshare_two_of_three_to_three_of_five_onto_new_signers(tmp_path: Path) -> None:
    async def scenario() -> None:
        pki = dev_pki(tmp_path)
        async with running_signers(pki, [1, 2, 3]) as cluster:
            async with connect(cluster.addresses(), tls_files=pki["operator"]) as driver:
                made = await driver.dkg(min_participants=2)
            old = {i: cluster.key(i)[0] for i in (1, 2, 3)}
            old_package = cluster.key(1)[1]
            for newcomer in (4, 5):
                assert not (await cluster.start(newcomer)).key_state.has_key

            async with connect(cluster.addresses(), tls_files=pki["operator"]) as driver:
                reshared = await driver.reshare(3, [1, 2, 3, 4, 5])

            assert reshared.group_public_key == made.group_public_key
            assert reshared.package.min_participants == 3
            assert reshared.package.identifiers == [1, 2, 3, 4, 5]
            every_quorum_signs(cluster, [1, 2, 3, 4, 5], threshold=3)
            new = {i: cluster.key(i)[0] for i in (1, 2, 3, 4, 5)}
            assert all(new[i].signing_share != old[i].signing_share for i in (1, 2, 3))
            # An old share no longer combines with new ones (it is named as the bad share) ...
            with pytest.raises(InvalidSignatureShare) as bad:
                threshold_sign([old[1], new[2], new[3]], reshared.package, MESSAGE)
            assert bad.value.culprits == (1,)
            # ... although old shares alone still lie on the old polynomial: the reason a signer
            # leaving the group must erase its share.
            assert signs([old[1], old[2]], old_package)

    asyncio.run(scenario())


def test_reshare_can_shrink_the_group_with_chosen_dealers_down_to_frost_t(tmp_path: Path) -> None:
    """3-of-5 to 2-of-3: lower, but not below the deployment's threshold (FROST_T=2)."""

    async def scenario() -> None:
        pki = dev_pki(tmp_path)
        async with running_signers(pki, [1, 2, 3, 4, 5], min_threshold=2) as cluster:
            async with connect(cluster.addresses(), tls_files=pki["operator"]) as driver:
                made = await driver.dkg(min_participants=3)
                reshared = await driver.reshare(2, [2, 4, 5], dealers=[1, 3, 5])
            assert reshared.group_public_key == made.group_public_key
            assert reshared.package.identifiers == [2, 4, 5]
            every_quorum_signs(cluster, [2, 4, 5], threshold=2)
            # Dealers 1 and 3 left the group: they committed (dropping their dealing), kept no
            # ceremony state, and were not handed the new package.
            assert cluster.in_progress() == []
            assert cluster.key(1)[1].identifiers == [1, 2, 3, 4, 5]

    asyncio.run(scenario())


def test_a_reshare_below_frost_t_is_refused_by_every_signer_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """The same 3-of-5 to 2-of-3 reshare, on signers whose FROST_T is 3."""

    async def scenario() -> None:
        pki = dev_pki(tmp_path)
        async with running_signers(pki, [1, 2, 3, 4, 5], min_threshold=3) as cluster:
            async with connect(cluster.addresses(), tls_files=pki["operator"]) as driver:
                made = await driver.dkg(min_participants=3)
                before = {i: cluster.key(i) for i in (1, 2, 3, 4, 5)}
                with pytest.raises(CeremonyFailed) as refused:
                    await driver.reshare(2, [2, 4, 5], dealers=[1, 3, 5])
            # Whichever signer answered first is named, with both thresholds.
            assert re.fullmatch(
                r"signer (\d): FAILED_PRECONDITION: participant \1 refuses a RESHARE making a "
                r"2-of-3 key: its threshold 2 is below this signer's minimum FROST_T=3",
                refused.value.reason,
            ), refused.value.reason
            # Each signer refuses on its own, before keeping any state: nothing is in progress
            # and every share is the one the DKG made.
            for i in (1, 2, 3, 4, 5):
                params = CeremonyParameters(
                    ceremony_id=bytes([i]) * CEREMONY_ID_SIZE,
                    kind=CeremonyKind.RESHARE,
                    min_participants=2,
                    dealers=(1, 3, 5),
                    recipients=(2, 4, 5),
                    old_package=made.package,
                )
                channel, stub = raw_stub(cluster, i, pki["operator"])
                try:
                    with pytest.raises(grpc.aio.AioRpcError) as direct:
                        await stub.Begin(pb.BeginRequest(parameters=params.encode()))
                finally:
                    await channel.close()
                assert direct.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "below this signer's minimum FROST_T=3" in (direct.value.details() or "")
            assert cluster.in_progress() == []
            assert {i: cluster.key(i) for i in (1, 2, 3, 4, 5)} == before
            every_quorum_signs(cluster, [1, 2, 3, 4, 5], threshold=3)

    asyncio.run(scenario())


def test_refresh_changes_every_share_and_keeps_the_group_key(tmp_path: Path) -> None:
    async def scenario() -> None:
        pki = dev_pki(tmp_path)
        async with running_signers(pki, [1, 2, 3]) as cluster:
            async with connect(cluster.addresses(), tls_files=pki["operator"]) as driver:
                made = await driver.dkg(min_participants=2)
                before = {i: cluster.key(i) for i in (1, 2, 3)}
                refreshed = await driver.refresh()
            after = {i: cluster.key(i) for i in (1, 2, 3)}
            assert refreshed.group_public_key == made.group_public_key
            assert refreshed.package.min_participants == 2
            for i in (1, 2, 3):
                assert after[i][0].signing_share != before[i][0].signing_share
                assert after[i][1].verifying_shares[i] != before[i][1].verifying_shares[i]
            every_quorum_signs(cluster, [1, 2, 3], threshold=2)
            with pytest.raises(InvalidSignatureShare):
                threshold_sign([before[1][0], after[2][0]], refreshed.package, MESSAGE)

    asyncio.run(scenario())
