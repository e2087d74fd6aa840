"""One signer's side of a ceremony, driven in memory (no gRPC): phases, expiry, equivocation."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path

import pytest

from signer.ceremony.approvals import ReplaceApprovals, ReplaceNotApproved
from signer.ceremony.envelope import StatementSigner, StatementVerifier
from signer.ceremony.errors import CeremonyError
from signer.ceremony.participant import Participant
from signer.ceremony.wire import CeremonyKind, CeremonyParameters
from signer.devca import TlsFiles, make_dev_pki, signer_name
from signer.frost import CheatingParticipant, PublicKeyPackage, trusted_dealer_keygen
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
    pki: dict[str, TlsFiles],
    identifiers: Iterable[int],
    clock: Clock,
    *,
    min_threshold: int = 2,
    allow_trusted_dealer: bool = False,
) -> dict[int, Participant]:
    return {
        i: Participant(
            identifier=i,
            key_state=KeyState(),
            statement_signer=StatementSigner.from_tls_files(i, pki[signer_name(i)]),
            verifier=StatementVerifier(ca_pem=pki[signer_name(i)].ca.read_bytes(), clock=clock),
            approvals=_approvals(pki, i, clock),
            allow_trusted_dealer=allow_trusted_dealer,
            min_threshold=min_threshold,
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


def _deal_params(ceremony_id: bytes = b"\x03" * 16) -> CeremonyParameters:
    return CeremonyParameters(
        ceremony_id=ceremony_id,
        kind=CeremonyKind.DEAL,
        min_participants=2,
        dealers=(),
        recipients=(1, 2, 3),
    )


def _replacing_dkg() -> CeremonyParameters:
    return CeremonyParameters(
        ceremony_id=b"\x04" * 16,
        kind=CeremonyKind.DKG,
        min_participants=2,
        dealers=(1, 2, 3),
        recipients=(1, 2, 3),
        replace_existing_key=True,
    )


def _holding_a_key(parties: dict[int, Participant]) -> str:
    """Every party holds a share of one dealt key; its kid."""
    shares, package, _ = trusted_dealer_keygen(2, len(parties))
    for share in shares:
        parties[share.identifier]._keys.install(share, package)
    return parties[1]._keys.current.kid


def _approvals(pki: dict[str, TlsFiles], identifier: int, clock: Clock) -> ReplaceApprovals:
    return ReplaceApprovals(
        pki[signer_name(identifier)].ca.parent / signer_name(identifier), clock=clock
    )


def test_a_trusted_dealer_install_is_refused_without_the_development_switch(
    pki: dict[str, TlsFiles],
) -> None:
    party = _participants(pki, [1], Clock())[1]
    with pytest.raises(CeremonyError, match="KEYMINT_DEV_ALLOW_TRUSTED_DEALER=true") as refused:
        party.begin(_deal_params().encode())
    assert "would know the whole group secret" in str(refused.value)
    assert party.in_progress == []
    # Refused before anything was kept: the ceremony id is not even remembered as used.
    party.begin(_dkg_params(ceremony_id=_deal_params().ceremony_id).encode())


def test_the_development_switch_lets_a_signer_take_part_in_a_dealt_install(
    pki: dict[str, TlsFiles],
) -> None:
    clock = Clock()
    party = Participant(
        identifier=1,
        key_state=KeyState(),
        statement_signer=StatementSigner.from_tls_files(1, pki[signer_name(1)]),
        verifier=StatementVerifier(ca_pem=pki[signer_name(1)].ca.read_bytes(), clock=clock),
        approvals=_approvals(pki, 1, clock),
        allow_trusted_dealer=True,
        clock=clock,
    )
    party.begin(_deal_params().encode())
    assert party.in_progress == [_deal_params().ceremony_name]


def test_replacing_a_held_key_is_refused_at_begin_without_a_local_approval(
    pki: dict[str, TlsFiles],
) -> None:
    clock = Clock()
    parties = _participants(pki, [1, 2, 3], clock)
    kid = _holding_a_key(parties)
    with pytest.raises(ReplaceNotApproved) as refused:
        parties[1].begin(_replacing_dkg().encode())
    assert refused.value.kid == kid
    assert refused.value.problem.startswith("no approval at ")
    assert "signer approve-replace --state-dir" in str(refused.value)
    assert parties[1].in_progress == []
    _approvals(pki, 1, clock).approve(kid)
    parties[1].begin(_replacing_dkg().encode())
    assert parties[1].in_progress == [_replacing_dkg().ceremony_name]


def test_an_approval_withdrawn_before_commit_voids_the_replacement_there(
    pki: dict[str, TlsFiles],
) -> None:
    clock = Clock()
    parties = _participants(pki, [1, 2, 3], clock)
    kid = _holding_a_key(parties)
    approved = {i: _approvals(pki, i, clock).approve(kid)[0] for i in (1, 2)}
    _approvals(pki, 3, clock).approve(kid, valid_for=datetime.timedelta(minutes=2))
    params = _replacing_dkg()
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
    approved[1].unlink()
    with pytest.raises(ReplaceNotApproved, match="no approval at"):
        parties[1].commit(params.ceremony_id, confirmations)
    assert parties[1].in_progress == []
    clock.now += datetime.timedelta(minutes=3)  # signer 3's approval expired meanwhile
    with pytest.raises(ReplaceNotApproved, match="expired at 2030-06-01T12:02:00Z"):
        parties[3].commit(params.ceremony_id, confirmations)
    committed = parties[2].commit(params.ceremony_id, confirmations)
    assert committed.replaced == (kid,)  # the servicer deletes its approval once installed
    assert committed.key is not None


def test_a_reshare_of_the_held_key_destroys_nothing_and_needs_no_approval(
    pki: dict[str, TlsFiles],
) -> None:
    parties = _participants(pki, [1, 2, 3], Clock())
    _holding_a_key(parties)
    params = CeremonyParameters(
        ceremony_id=b"\x05" * 16,
        kind=CeremonyKind.RESHARE,
        min_participants=2,
        dealers=(1, 2),
        recipients=(1, 2, 3),
        old_package=parties[1]._keys.current.package,
        replace_existing_key=True,
    )
    for party in parties.values():
        party.begin(params.encode())
    assert all(p.in_progress == [params.ceremony_name] for p in parties.values())


# ------------------------------------------------------------------------------------------------
# The deployment's threshold (FROST_T): no ceremony makes a key that fewer signers could use.


def _lowering(kind: CeremonyKind, old: PublicKeyPackage) -> CeremonyParameters:
    """A ceremony of `kind` making a 2-of-3 key (a reshare: of `old`, a 3-of-3 key)."""
    return CeremonyParameters(
        ceremony_id=bytes([0x10 + kind.value]) * 16,
        kind=kind,
        min_participants=2,
        dealers=() if kind is CeremonyKind.DEAL else (1, 2, 3),
        recipients=(1, 2, 3),
        old_package=old if kind is CeremonyKind.RESHARE else None,
    )


def _holding(parties: dict[int, Participant], t: int) -> PublicKeyPackage:
    """Every party holds a share of one dealt t-of-n key; its package."""
    shares, package, _ = trusted_dealer_keygen(t, len(parties))
    for share in shares:
        parties[share.identifier]._keys.install(share, package)
    return package


@pytest.mark.parametrize("kind", list(CeremonyKind), ids=lambda k: k.name)
def test_a_ceremony_below_frost_t_is_refused_at_begin_naming_both_thresholds(
    pki: dict[str, TlsFiles], kind: CeremonyKind
) -> None:
    parties = _participants(pki, [1, 2, 3], Clock(), min_threshold=3, allow_trusted_dealer=True)
    old = _holding(parties, 3)
    params = _lowering(kind, old)
    for i, party in parties.items():
        with pytest.raises(CeremonyError) as refused:
            party.begin(params.encode())
        assert str(refused.value) == (
            f"participant {i} refuses a {kind.name} making a 2-of-3 key: its threshold 2 is "
            "below this signer's minimum FROST_T=3"
        )
        assert party.in_progress == []
        assert party._keys.current.package == old  # nothing changed here
    # Refused before anything was kept: the ceremony id is not remembered as used.
    raised = CeremonyParameters(
        ceremony_id=params.ceremony_id,
        kind=kind,
        min_participants=3,
        dealers=params.dealers,
        recipients=params.recipients,
        old_package=params.old_package,
    )
    parties[1].begin(raised.encode())


def test_at_or_above_frost_t_a_ceremony_begins_and_a_reshare_may_raise_the_threshold(
    pki: dict[str, TlsFiles],
) -> None:
    parties = _participants(pki, [1, 2, 3], Clock(), min_threshold=2)
    old = _holding(parties, 2)
    raising = CeremonyParameters(
        ceremony_id=b"\x20" * 16,
        kind=CeremonyKind.RESHARE,
        min_participants=3,
        dealers=(1, 2),
        recipients=(1, 2, 3),
        old_package=old,
    )
    refresh = CeremonyParameters(
        ceremony_id=b"\x21" * 16,
        kind=CeremonyKind.RESHARE,
        min_participants=2,
        dealers=(1, 2, 3),
        recipients=(1, 2, 3),
        old_package=old,
    )
    for params in (raising, refresh, _dkg_params(b"\x22" * 16, threshold=2)):
        parties[1].begin(params.encode())
    assert len(parties[1].in_progress) == 3
