"""One signer's side of a ceremony, driven in memory (no gRPC): phases, expiry, equivocation."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path

import pytest

from signer.ceremony.approvals import ReplaceApprovals
from signer.ceremony.envelope import StatementSigner, StatementVerifier
from signer.ceremony.errors import CeremonyError
from signer.ceremony.participant import Participant
from signer.ceremony.wire import CeremonyKind, CeremonyParameters
from signer.devca import TlsFiles, make_dev_pki, signer_name
from signer.frost import CheatingParticipant, trusted_dealer_keygen
from signer.keystate import KeyState
from signer.proto import ceremony_pb2 as pb
from tests.signer.ceremony.support import signs

START = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime.datetime:
        return self.now


def _participants(
    pki: dict[str, TlsFiles], identifiers: Iterable[int], clock: Clock
) -> dict[int, Participant]:
    return {
        i: Participant(
            identifier=i,
            key_state=KeyState(),
            statement_signer=StatementSigner.from_tls_files(i, pki[signer_name(i)]),
            verifier=StatementVerifier(ca_pem=pki[signer_name(i)].ca.read_bytes(), clock=clock),
            approvals=ReplaceApprovals(pki[signer_name(i)].ca.parent / signer_name(i)),
            clock=clock,
        )
        for i in identifiers
    }


def _dkg_params(ceremony_id: bytes = b"\x01" * 16, threshold: int = 2) -> CeremonyParameters:
    return CeremonyParameters(
        ceremony_id=ceremony_id,
        kind=CeremonyKind.DKG,
        min_participants=threshold,
        dealers=(1, 2, 3),
        recipients=(1, 2, 3),
    )


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TlsFiles]:
    return make_dev_pki(tmp_path, [1, 2, 3], now=START)


def test_a_dkg_runs_in_memory_through_every_phase(pki: dict[str, TlsFiles]) -> None:
    clock = Clock()
    parties = _participants(pki, [1, 2, 3], clock)
    params = _dkg_params()
    announcements = [p.begin(params.encode()) for p in parties.values()]
    sealed = [s for p in parties.values() for s in p.deal(params.ceremony_id, announcements)]
    confirmations = [
        p.stage(
            pb.StageRequest(
                ceremony_id=params.ceremony_id,
                announcements=announcements,
                shares=[s for s in sealed if s.recipient == i],
            )
        )
        for i, p in parties.items()
    ]
    committed = {i: p.commit(params.ceremony_id, confirmations) for i, p in parties.items()}
    assert len({c.package for c in committed.values()}) == 1
    first, third = committed[1].key, committed[3].key
    assert first is not None
    assert third is not None
    assert signs([first.share, third.share], first.package)
    assert all(p.in_progress == [] for p in parties.values())


def test_a_ceremony_expires_and_is_forgotten(pki: dict[str, TlsFiles]) -> None:
    clock = Clock()
    parties = _participants(pki, [1, 2, 3], clock)
    params = _dkg_params()
    announcements = [p.begin(params.encode()) for p in parties.values()]
    assert parties[1].in_progress == [params.ceremony_name]
    clock.now += datetime.timedelta(minutes=6)
    assert parties[1].in_progress == []
    with pytest.raises(CeremonyError, match="no ceremony"):
        parties[1].deal(params.ceremony_id, announcements)


def test_steps_out_of_order_end_the_ceremony(pki: dict[str, TlsFiles]) -> None:
    parties = _participants(pki, [1, 2, 3], Clock())
    params = _dkg_params()
    announcements = [p.begin(params.encode()) for p in parties.values()]
    with pytest.raises(CeremonyError, match="must deal before it stages"):
        parties[1].stage(
            pb.StageRequest(ceremony_id=params.ceremony_id, announcements=announcements)
        )
    assert parties[1].in_progress == []
    with pytest.raises(CeremonyError, match="already begun"):
        parties[2].begin(params.encode())


def test_a_participant_given_other_parameters_is_named(pki: dict[str, TlsFiles]) -> None:
    """An equivocating driver: participant 3 was told threshold 3; the others refuse its word."""
    parties = _participants(pki, [1, 2, 3], Clock())
    params = _dkg_params()
    announcements = [
        parties[1].begin(params.encode()),
        parties[2].begin(params.encode()),
        parties[3].begin(_dkg_params(threshold=3).encode()),
    ]
    with pytest.raises(CheatingParticipant, match="different parameters") as refused:
        parties[1].deal(params.ceremony_id, announcements)
    assert refused.value.identifier == 3


def test_a_replaced_own_announcement_is_noticed(pki: dict[str, TlsFiles]) -> None:
    parties = _participants(pki, [1, 2, 3], Clock())
    params = _dkg_params()
    announcements = [p.begin(params.encode()) for p in parties.values()]
    other = _participants(pki, [1], Clock())[1].begin(params.encode())
    with pytest.raises(CeremonyError, match="own announcement was altered"):
        parties[1].deal(params.ceremony_id, [other, *announcements[1:]])


def test_only_holders_of_the_key_may_deal_in_a_reshare(pki: dict[str, TlsFiles]) -> None:
    _, package, _ = trusted_dealer_keygen(2, 3)
    params = CeremonyParameters(
        ceremony_id=b"\x02" * 16,
        kind=CeremonyKind.RESHARE,
        min_participants=2,
        dealers=(1, 2),
        recipients=(1, 2, 3),
        old_package=package,
    )
    parties = _participants(pki, [1], Clock())
    with pytest.raises(CeremonyError, match="does not hold the key being reshared"):
        parties[1].begin(params.encode())


def test_a_ceremony_id_begins_only_once_even_after_an_abort(pki: dict[str, TlsFiles]) -> None:
    """Two signed announcements for one ceremony would let a driver show peers different ones."""
    party = _participants(pki, [1], Clock())[1]
    params = _dkg_params()
    party.begin(params.encode())
    assert party.abort(params.ceremony_id, 0, "operator gave up")
    with pytest.raises(CeremonyError, match="already begun"):
        party.begin(params.encode())


def test_a_key_installed_meanwhile_voids_the_ceremony(pki: dict[str, TlsFiles]) -> None:
    clock = Clock()
    parties = _participants(pki, [1, 2, 3], clock)
    params = _dkg_params()
    announcements = [p.begin(params.encode()) for p in parties.values()]
    sealed = [s for p in parties.values() for s in p.deal(params.ceremony_id, announcements)]
    confirmations = [
        p.stage(
            pb.StageRequest(
                ceremony_id=params.ceremony_id,
                announcements=announcements,
                shares=[s for s in sealed if s.recipient == i],
            )
        )
        for i, p in parties.items()
    ]
    shares, package, _ = trusted_dealer_keygen(2, 3)
    parties[1]._keys.install(shares[0], package)  # another ceremony got there first
    with pytest.raises(CeremonyError, match="changed during the ceremony"):
        parties[1].commit(params.ceremony_id, confirmations)
    assert parties[1].in_progress == []
