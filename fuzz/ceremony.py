"""A DKG among signers 1-3 of the fuzz world, run in memory and the same in every process.

Ed25519 statement keys sign deterministically and every participant draws its randomness from a
seeded generator, so the announcements, sealed shares and confirmations are the same bytes each
time: the seeds (`python -m fuzz.seeds`) hold real messages of this very ceremony, and a mutated
one is checked as deeply as the mutation allows. `templates` are participant 1's session after
begin, after deal and after stage, for the ceremony target to resume from on each input.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fuzz import world
from signer.ceremony.approvals import ReplaceApprovals
from signer.ceremony.envelope import StatementSigner, StatementVerifier
from signer.ceremony.participant import Participant, Session
from signer.ceremony.wire import CeremonyKind, CeremonyParameters
from signer.keystate import KeyState, SigningKey
from signer.proto import ceremony_pb2 as cpb

SIGNERS = (1, 2, 3)
CEREMONY_ID = bytes(range(16))


@dataclass
class CeremonyFlow:
    params: CeremonyParameters
    approvals: Path
    announcements: list[cpb.SignedStatement]
    inbox: dict[int, list[cpb.SealedShare]]
    confirmations: list[cpb.SignedStatement]
    templates: tuple[Session, Session, Session]

    @staticmethod
    def participant(identifier: int, approvals: Path) -> Participant:
        shares, package = world.frost_group()
        certificate, key = world.ceremony_pki()[identifier]
        return Participant(
            identifier=identifier,
            key_state=KeyState([SigningKey(shares[identifier - 1], package)]),
            statement_signer=StatementSigner(
                identifier=identifier, certificate_pem=certificate, private_key_pem=key
            ),
            verifier=StatementVerifier(ca_pem=world.ceremony_pki()[0][0], clock=world.now_datetime),
            approvals=ReplaceApprovals(approvals, clock=world.now_datetime),
            rng=world.deterministic_rng(f"participant {identifier}"),
            clock=world.now_datetime,
        )

    def fresh_participant(self) -> Participant:
        return self.participant(1, self.approvals)

    @classmethod
    def run(cls) -> CeremonyFlow:
        approvals = Path(tempfile.mkdtemp(prefix="fuzz-ceremony-"))
        params = CeremonyParameters(
            ceremony_id=CEREMONY_ID,
            kind=CeremonyKind.DKG,
            min_participants=2,
            dealers=SIGNERS,
            recipients=SIGNERS,
        )
        encoded = params.encode()
        participants = {i: cls.participant(i, approvals) for i in SIGNERS}
        announcements = [participants[i].begin(encoded) for i in SIGNERS]
        begun = copy.copy(participants[1]._sessions[CEREMONY_ID])
        inbox: dict[int, list[cpb.SealedShare]] = {i: [] for i in SIGNERS}
        for i in SIGNERS:
            for share in participants[i].deal(CEREMONY_ID, announcements):
                inbox[share.recipient].append(share)
        dealt = copy.copy(participants[1]._sessions[CEREMONY_ID])
        confirmations = [
            participants[i].stage(
                cpb.StageRequest(
                    ceremony_id=CEREMONY_ID, announcements=announcements, shares=inbox[i]
                )
            )
            for i in SIGNERS
        ]
        staged = copy.copy(participants[1]._sessions[CEREMONY_ID])
        return cls(params, approvals, announcements, inbox, confirmations, (begun, dealt, staged))
