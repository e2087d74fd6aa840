"""Key ceremonies attacked with what the gateway holds, against real signer processes.

The signers (SignerCluster: three processes holding a 2-of-3 key, started as in production: the
trusted dealer off, the dev PKI's "operator" the only identity in KEYMINT_OPERATOR_IDS) face an
attacker holding the coordinator's mTLS certificate and key (`cluster.coordinator_tls`), the
ceremony driver's code and network reach to every signer; in the last attacks it holds the
operator's credential too, but not write access to every signer's host. One test per attack: each
asserts the refusal by its status and message, then that the signers still sign with their
original key. The last attacks lower the threshold below the deployment's FROST_T, on signers of
their own started with FROST_T=3.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from extauthz.dev.settings import ISSUER
from signer.ceremony import CeremonyDriver, CeremonyFailed, CeremonyResult, connect
from signer.ceremony.approvals import ReplaceApprovals
from signer.ceremony.driver import ParticipantError
from signer.ceremony.errors import CeremonyError
from signer.ceremony.wire import CEREMONY_ID_SIZE, CeremonyKind, CeremonyParameters
from signer.cli import main as signer_command
from signer.coordinator import Coordinator, SigningRefused
from signer.devca import TlsFiles, signer_name, spiffe_id
from signer.frost import trusted_dealer_keygen
from signer.proto import ceremony_pb2 as pb
from signer.proto import ceremony_pb2_grpc
from signer.tls import secure_channel
from signer.token import compact, kid_for
from tests.signer.harness import SignerCluster, evidence_for, token_message

SIGNERS = (1, 2, 3)
NOT_AN_OPERATOR = (
    f"PERMISSION_DENIED: caller {spiffe_id('coordinator')} is not an operator of this signer "
    "(KEYMINT_OPERATOR_IDS)"
)
DEALER_OFF = (
    "FAILED_PRECONDITION: participant {i} refuses a trusted-dealer install: its driver would "
    "know the whole group secret; only a signer started with "
    "KEYMINT_DEV_ALLOW_TRUSTED_DEALER=true (development) takes part in one"
)
# The kid of a key the attacker made up: an approval for it must not count for the real one.
OTHER_KID = "T1RIRVJrZXlpZGVudGlmaWVyMDEyMzQ1Njc4OWFiY2Q"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignerCluster]:
    signers = SignerCluster(tmp_path_factory.mktemp("ceremonies"), 2, 3)
    signers.start()
    yield signers
    signers.stop()


@pytest.fixture(autouse=True)
def clean_hosts(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each attack starts with no approval on any signer host, whatever the last one left."""
    yield
    if "cluster" in request.fixturenames:
        signers: SignerCluster = request.getfixturevalue("cluster")
        for i in SIGNERS:
            shutil.rmtree(signers.state_dir(i) / "approvals", ignore_errors=True)


def _kid(cluster: SignerCluster) -> str:
    assert cluster.package is not None
    return kid_for(cluster.package.group_public_key)


def _attempt(
    cluster: SignerCluster,
    files: TlsFiles,
    ceremony: Callable[[CeremonyDriver], Awaitable[CeremonyResult]],
) -> CeremonyError:
    """Run `ceremony` over every signer as the holder of `files`; the error it must end in."""

    async def run() -> CeremonyError:
        addresses = cluster.addresses(SIGNERS)
        async with connect(addresses, tls_files=files, rpc_timeout=10.0) as driver:
            with pytest.raises(CeremonyError) as refused:
                await ceremony(driver)
        return refused.value

    return asyncio.run(run())


def _raw_calls(
    cluster: SignerCluster, files: TlsFiles, call: Callable[[Any], Awaitable[Any]]
) -> dict[int, grpc.aio.AioRpcError]:
    """`call` on each signer's bare KeyCeremony stub, as no driver would make it; the refusals."""

    async def run() -> dict[int, grpc.aio.AioRpcError]:
        refusals: dict[int, grpc.aio.AioRpcError] = {}
        for i in SIGNERS:
            channel = secure_channel(cluster.signers[i].address, files, signer_name(i))
            try:
                stub = ceremony_pb2_grpc.KeyCeremonyStub(channel)  # type: ignore[no-untyped-call]
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call(stub)
                refusals[i] = refused.value
            finally:
                await channel.close()
        return refusals

    return asyncio.run(run())


def _assert_every_call_is_not_an_operator(refusals: dict[int, grpc.aio.AioRpcError]) -> None:
    assert sorted(refusals) == list(SIGNERS)
    for refused in refusals.values():
        assert f"{refused.code().name}: {refused.details()}" == NOT_AN_OPERATOR


def _approve_everywhere(cluster: SignerCluster, kid: str, *, on: tuple[int, ...] = SIGNERS) -> None:
    """What each signer host's operator runs locally: `signer approve-replace`."""
    for i in on:
        state = str(cluster.state_dir(i))
        assert signer_command(["approve-replace", "--state-dir", state, f"--kid={kid}"]) == 0


def _approval(cluster: SignerCluster, i: int, kid: str) -> Path:
    return ReplaceApprovals(cluster.state_dir(i)).path(kid)


def _not_approved(cluster: SignerCluster, i: int, kid: str, problem: str) -> str:
    state = cluster.state_dir(i)
    return (
        f"signer {i}: FAILED_PRECONDITION: replace_existing_key would destroy key {kid} here and "
        f"is not approved: {problem}; the operator of this signer's host approves it with "
        f"`signer approve-replace --state-dir {state} --kid={kid}`"
    )


def _sign(cluster: SignerCluster) -> tuple[bytes, bytes]:
    """A token signed by the signers through a real Coordinator: (signing input, signature)."""

    async def run() -> tuple[bytes, bytes]:
        coordinator = Coordinator(
            endpoints=cluster.endpoints(), tls=cluster.coordinator_tls, threshold=cluster.threshold
        )
        await coordinator.start()
        try:
            (package,) = coordinator.packages.values()  # the one key this cluster holds
            message = token_message(package.group_public_key)
            outcome = await coordinator.sign(message, evidence=evidence_for("svc"))
        finally:
            await coordinator.close()
        return message, outcome.signature

    return asyncio.run(run())


def _assert_signs_with(cluster: SignerCluster, group_public_key: bytes) -> None:
    message, signature = _sign(cluster)
    public_key = Ed25519PublicKey.from_public_bytes(group_public_key)
    public_key.verify(signature, message)
    claims = jwt.decode(
        compact(message, signature),
        public_key,
        algorithms=["EdDSA"],
        audience="https://api.internal",
        issuer=ISSUER,
    )
    assert claims["sub"] == "svc"


def _assert_original_key_signs(cluster: SignerCluster) -> None:
    assert cluster.package is not None
    _assert_signs_with(cluster, cluster.package.group_public_key)


def _reshare_begin(cluster: SignerCluster, dealers: tuple[int, ...]) -> pb.BeginRequest:
    """A reshare (a refresh when every holder deals) that the attacker plans itself, skipping
    the driver's Status call: the group package is public, the coordinator learns it."""
    params = CeremonyParameters(
        ceremony_id=os.urandom(CEREMONY_ID_SIZE),
        kind=CeremonyKind.RESHARE,
        min_participants=2,
        dealers=dealers,
        recipients=SIGNERS,
        old_package=cluster.package,
    )
    return pb.BeginRequest(parameters=params.encode())


# ------------------------------------------------------------------------------------------------
# The gateway's own identity: refused on every ceremony RPC, whatever the ceremony.


def test_dkg_through_the_coordinator_identity_is_permission_denied(
    cluster: SignerCluster,
) -> None:
    refused = _attempt(cluster, cluster.coordinator_tls, lambda d: d.dkg(2))
    assert isinstance(refused, CeremonyFailed)
    assert refused.reason == f"signer 1: {NOT_AN_OPERATOR}"
    _assert_original_key_signs(cluster)


def test_dkg_replacing_the_key_through_the_coordinator_identity_is_permission_denied(
    cluster: SignerCluster,
) -> None:
    # Even with every host's approval in place, the gateway's identity drives nothing.
    _approve_everywhere(cluster, _kid(cluster))
    refused = _attempt(
        cluster, cluster.coordinator_tls, lambda d: d.dkg(2, replace_existing_key=True)
    )
    assert isinstance(refused, CeremonyFailed)
    assert refused.reason == f"signer 1: {NOT_AN_OPERATOR}"
    assert all(_approval(cluster, i, _kid(cluster)).exists() for i in SIGNERS)
    _assert_original_key_signs(cluster)


def test_deal_without_replacing_through_the_coordinator_identity_is_permission_denied(
    cluster: SignerCluster,
) -> None:
    # A trusted-dealer install that asks to destroy nothing: still not the gateway's to drive,
    # neither through the driver nor as a bare Begin.
    refused = _attempt(cluster, cluster.coordinator_tls, lambda d: d.deal(2))
    assert isinstance(refused, CeremonyFailed)
    assert refused.reason == f"signer 1: {NOT_AN_OPERATOR}"
    params = CeremonyParameters(
        ceremony_id=os.urandom(CEREMONY_ID_SIZE),
        kind=CeremonyKind.DEAL,
        min_participants=2,
        dealers=(),
        recipients=SIGNERS,
        replace_existing_key=False,
    )
    request = pb.BeginRequest(parameters=params.encode())
    _assert_every_call_is_not_an_operator(
        _raw_calls(cluster, cluster.coordinator_tls, lambda stub: stub.Begin(request))
    )
    _assert_original_key_signs(cluster)


def test_deal_through_the_coordinator_identity_is_permission_denied(
    cluster: SignerCluster,
) -> None:
    refused = _attempt(
        cluster, cluster.coordinator_tls, lambda d: d.deal(2, replace_existing_key=True)
    )
    assert isinstance(refused, CeremonyFailed)
    assert refused.reason == f"signer 1: {NOT_AN_OPERATOR}"
    _assert_original_key_signs(cluster)


def test_refresh_through_the_coordinator_identity_is_permission_denied(
    cluster: SignerCluster,
) -> None:
    refused = _attempt(cluster, cluster.coordinator_tls, lambda d: d.refresh())
    assert isinstance(refused, ParticipantError)
    assert (refused.signer, f"{refused.code}: {refused.details}") == (1, NOT_AN_OPERATOR)
    request = _reshare_begin(cluster, dealers=SIGNERS)
    _assert_every_call_is_not_an_operator(
        _raw_calls(cluster, cluster.coordinator_tls, lambda stub: stub.Begin(request))
    )
    _assert_original_key_signs(cluster)


def test_reshare_through_the_coordinator_identity_is_permission_denied(
    cluster: SignerCluster,
) -> None:
    refused = _attempt(
        cluster, cluster.coordinator_tls, lambda d: d.reshare(2, list(SIGNERS), dealers=[1, 2])
    )
    assert isinstance(refused, ParticipantError)
    assert (refused.signer, f"{refused.code}: {refused.details}") == (1, NOT_AN_OPERATOR)
    request = _reshare_begin(cluster, dealers=(1, 2))
    _assert_every_call_is_not_an_operator(
        _raw_calls(cluster, cluster.coordinator_tls, lambda stub: stub.Begin(request))
    )
    _assert_original_key_signs(cluster)


def test_status_through_the_coordinator_identity_is_permission_denied(
    cluster: SignerCluster,
) -> None:
    _assert_every_call_is_not_an_operator(
        _raw_calls(cluster, cluster.coordinator_tls, lambda stub: stub.Status(pb.StatusRequest()))
    )
    _assert_original_key_signs(cluster)


# ------------------------------------------------------------------------------------------------
# A stolen operator credential: no trusted dealer on production signers, and no key destroyed
# without an approval placed locally on each signer's host.


def test_deal_through_the_operator_identity_is_refused_on_production_signers(
    cluster: SignerCluster,
) -> None:
    # Approvals on every host do not switch the trusted dealer on.
    _approve_everywhere(cluster, _kid(cluster))
    refused = _attempt(
        cluster, cluster.operator_tls, lambda d: d.deal(2, replace_existing_key=True)
    )
    assert isinstance(refused, CeremonyFailed)
    assert refused.reason == f"signer 1: {DEALER_OFF.format(i=1)}"
    assert all(_approval(cluster, i, _kid(cluster)).exists() for i in SIGNERS)
    _assert_original_key_signs(cluster)


def test_replace_through_the_operator_without_local_approval_is_refused_naming_it(
    cluster: SignerCluster,
) -> None:
    kid = _kid(cluster)
    refused = _attempt(cluster, cluster.operator_tls, lambda d: d.dkg(2, replace_existing_key=True))
    assert isinstance(refused, CeremonyFailed)
    missing = f"no approval at {_approval(cluster, 1, kid)}"
    assert refused.reason == _not_approved(cluster, 1, kid, missing)
    _assert_original_key_signs(cluster)


def test_replace_through_the_operator_with_an_approval_for_another_kid_is_refused(
    cluster: SignerCluster,
) -> None:
    kid = _kid(cluster)
    _approve_everywhere(cluster, OTHER_KID)
    refused = _attempt(cluster, cluster.operator_tls, lambda d: d.dkg(2, replace_existing_key=True))
    assert isinstance(refused, CeremonyFailed)
    problem = (
        f"no approval at {_approval(cluster, 1, kid)} (approvals here name only ['{OTHER_KID}'])"
    )
    assert refused.reason == _not_approved(cluster, 1, kid, problem)
    _assert_original_key_signs(cluster)


def test_replace_through_the_operator_with_an_expired_approval_is_refused(
    cluster: SignerCluster,
) -> None:
    kid = _kid(cluster)
    two_hours_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2)
    for i in SIGNERS:  # yesterday's approvals, left behind: valid for one hour, two hours ago
        ReplaceApprovals(cluster.state_dir(i), clock=lambda: two_hours_ago).approve(kid)
    refused = _attempt(cluster, cluster.operator_tls, lambda d: d.dkg(2, replace_existing_key=True))
    assert isinstance(refused, CeremonyFailed)
    expired = (two_hours_ago + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    problem = f"the approval at {_approval(cluster, 1, kid)} expired at {expired}"
    assert refused.reason == _not_approved(cluster, 1, kid, problem)
    _assert_original_key_signs(cluster)


def test_replace_through_the_operator_with_approvals_on_only_some_signers_is_refused(
    cluster: SignerCluster,
) -> None:
    kid = _kid(cluster)
    _approve_everywhere(cluster, kid, on=(1, 2))  # t hosts, but signer 3 also holds the key
    refused = _attempt(cluster, cluster.operator_tls, lambda d: d.dkg(2, replace_existing_key=True))
    assert isinstance(refused, CeremonyFailed)
    missing = f"no approval at {_approval(cluster, 3, kid)}"
    assert refused.reason == _not_approved(cluster, 3, kid, missing)
    # Aborted everywhere before any key changed: the approvals on 1 and 2 are not used up.
    assert _approval(cluster, 1, kid).exists()
    assert _approval(cluster, 2, kid).exists()
    _assert_original_key_signs(cluster)


# ------------------------------------------------------------------------------------------------
# The legitimate path, on signers of its own: the operator's credential AND every host's approval.


def test_replace_with_approvals_on_every_signer_installs_a_new_key_and_uses_them_up(
    tmp_path: Path,
) -> None:
    signers = SignerCluster(tmp_path, 2, 3)
    signers.start()
    try:
        old_kid = _kid(signers)
        _approve_everywhere(signers, old_kid)

        async def replace() -> CeremonyResult:
            addresses = signers.addresses(SIGNERS)
            async with connect(addresses, tls_files=signers.operator_tls) as driver:
                return await driver.dkg(2, replace_existing_key=True)

        result = asyncio.run(replace())
        assert result.kid != old_kid
        assert not any(_approval(signers, i, old_kid).exists() for i in SIGNERS)
        _assert_signs_with(signers, result.group_public_key)
        message, signature = _sign(signers)
        assert signers.package is not None
        with pytest.raises(InvalidSignature):  # the old key's shares are gone
            Ed25519PublicKey.from_public_bytes(signers.package.group_public_key).verify(
                signature, message
            )
    finally:
        signers.stop()


# ------------------------------------------------------------------------------------------------
# The deployment's threshold: signers started with FROST_T=3 (SignerCluster gives its signers its
# t), holding a 3-of-3 key. The attacker holds the operator's credential, and in the last attack
# the coordinator's too (it runs a coordinator of its own that adopts a key below FROST_T).

BELOW_FROST_T = (
    "FAILED_PRECONDITION: participant {i} refuses a {kind} making a {t}-of-{n} key: its "
    "threshold {t} is below this signer's minimum FROST_T=3"
)


def _threshold_cluster(
    tmp_path: Path, prepare: Callable[[SignerCluster], None] | None = None
) -> SignerCluster:
    signers = SignerCluster(tmp_path, 3, 3)
    if prepare is not None:
        prepare(signers)
    signers.start()
    return signers


def test_a_reshare_lowering_the_threshold_below_frost_t_through_the_operator_is_refused(
    tmp_path: Path,
) -> None:
    signers = _threshold_cluster(tmp_path)
    try:
        assert all(p.env["FROST_T"] == "3" for p in signers.signers.values())
        refused = _attempt(signers, signers.operator_tls, lambda d: d.reshare(2, SIGNERS))
        assert isinstance(refused, CeremonyFailed)
        assert refused.reason == (
            "signer 1: " + BELOW_FROST_T.format(i=1, kind="RESHARE", t=2, n=3)
        )
        # Each signer refuses on its own account, however the ceremony is planned: a Begin sent
        # straight to each, skipping the driver, is refused by every one of them too.
        direct = _raw_calls(
            signers,
            signers.operator_tls,
            lambda stub: stub.Begin(_reshare_begin(signers, SIGNERS)),
        )
        assert sorted(direct) == list(SIGNERS)
        for i, refusal in direct.items():
            said = f"{refusal.code().name}: {refusal.details()}"
            assert said == BELOW_FROST_T.format(i=i, kind="RESHARE", t=2, n=3)
        # A DKG of a new 2-of-3 key is refused alike; the 3-of-3 key still signs, with 3 signers.
        refused = _attempt(signers, signers.operator_tls, lambda d: d.dkg(2))
        assert isinstance(refused, CeremonyFailed)
        assert refused.reason == "signer 1: " + BELOW_FROST_T.format(i=1, kind="DKG", t=2, n=3)
        _assert_original_key_signs(signers)
    finally:
        signers.stop()


def test_a_reshare_raising_the_threshold_above_frost_t_is_allowed(tmp_path: Path) -> None:
    """The 2-of-3 dev cluster (FROST_T=2) reshared to 3-of-3: more signers per token is fine."""
    signers = SignerCluster(tmp_path, 2, 3)
    signers.start()
    try:

        async def raise_it() -> CeremonyResult:
            async with connect(signers.addresses(SIGNERS), tls_files=signers.operator_tls) as d:
                return await d.reshare(3, SIGNERS)

        result = asyncio.run(raise_it())
        assert signers.package is not None
        assert result.group_public_key == signers.package.group_public_key
        assert result.package.min_participants == 3
    finally:
        signers.stop()


def test_a_key_lowered_before_frost_t_was_set_signs_nothing(tmp_path: Path) -> None:
    """A 2-of-3 key at rest on signers now started with FROST_T=3 (made by a reshare before they
    knew FROST_T, or installed otherwise). A coordinator of the attacker's, told t=2, adopts it;
    every signer it asks refuses to sign with it."""
    shares, lowered, _ = trusted_dealer_keygen(2, 3)

    def seal_lowered(cluster: SignerCluster) -> None:
        for share in shares:
            cluster.seal_key(share.identifier, share, lowered)

    signers = _threshold_cluster(tmp_path, seal_lowered)
    try:

        async def sign_lowered() -> SigningRefused:
            coordinator = Coordinator(
                endpoints=signers.endpoints(), tls=signers.coordinator_tls, threshold=2
            )
            await coordinator.start()
            try:
                assert kid_for(lowered.group_public_key) in coordinator.packages
                message = token_message(lowered.group_public_key)
                with pytest.raises(SigningRefused) as refused:
                    await coordinator.sign(message, evidence=evidence_for("svc"), timeout=5.0)
                return refused.value
            finally:
                await coordinator.close()

        refusal = asyncio.run(sign_lowered())
        assert len(refusal.refusals) >= 2
        detail = (
            f"key {kid_for(lowered.group_public_key)} needs 2 signers, below this signer's "
            "minimum FROST_T (3)"
        )
        assert set(refusal.refusals.values()) == {f"guard:key_threshold: {detail}"}
        _assert_original_key_signs(signers)  # the 3-of-3 key beside it is untouched
    finally:
        signers.stop()
