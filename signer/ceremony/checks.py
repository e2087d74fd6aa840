"""Checks on what participants broadcast, from public data only.

Every signer runs them on what the driver relays, and so does the driver itself, so a participant
that cheats is named before anything further is relayed. A failure names the participant whose
signed statement is at fault with frost's CheatingParticipant; a message missing or repeated (the
driver's doing, or a signer down) is a CeremonyError naming nobody.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from signer.ceremony.envelope import Purpose, StatementVerifier
from signer.ceremony.errors import CeremonyError
from signer.ceremony.wire import (
    CeremonyKind,
    CeremonyParameters,
    decode_round1_package,
    decode_vss_commitment,
)
from signer.frost import CheatingParticipant, EncodingError, dkg
from signer.frost.group import Element, scalar_mult
from signer.frost.polynomial import derive_interpolating_value
from signer.proto import ceremony_pb2 as pb


@dataclass(frozen=True, slots=True)
class VerifiedAnnouncement:
    """A participant's round-one message after its signature and payload were checked."""

    identifier: int
    ephemeral_public_key: bytes
    round1: dkg.Round1Package | None  # DKG
    commitment: tuple[Element, ...] | None  # RESHARE dealers


def check_announcements(
    statements: Iterable[pb.SignedStatement],
    params: CeremonyParameters,
    digest: bytes,
    verifier: StatementVerifier,
) -> dict[int, VerifiedAnnouncement]:
    """Exactly one valid, signed announcement per participant, for the parameters with `digest`."""
    found: dict[int, VerifiedAnnouncement] = {}
    for statement in statements:
        who = statement.signer
        if who not in params.participants or who in found:
            raise CeremonyError(f"unexpected or repeated announcement from {who}")
        signed = verifier.verify(statement, Purpose.ANNOUNCEMENT)
        try:
            body = pb.Announcement.FromString(signed)
        except DecodeError:
            raise CheatingParticipant(who, "signed an unreadable announcement") from None
        if body.identifier != who or body.ceremony_id != params.ceremony_id:
            raise CheatingParticipant(who, "announcement names another participant or ceremony")
        if body.parameters_digest != digest:
            raise CheatingParticipant(who, "announcement was made for different parameters")
        found[who] = _check_payload(who, body, params)
    missing = sorted(set(params.participants) - set(found))
    if missing:
        raise CeremonyError(f"no announcement from {missing}")
    return found


def _check_payload(
    who: int, body: pb.Announcement, params: CeremonyParameters
) -> VerifiedAnnouncement:
    t = params.min_participants
    round1: dkg.Round1Package | None = None
    commitment: tuple[Element, ...] | None = None
    try:
        if params.kind is CeremonyKind.DKG:
            round1 = decode_round1_package(body.round1)
            commitment = round1.commitment
            if round1.identifier != who:
                raise CheatingParticipant(who, "round-one package names another participant")
        elif who in params.dealers:
            commitment = decode_vss_commitment(body.round1)
        elif body.round1:
            raise CheatingParticipant(who, "a participant that does not deal sent a commitment")
    except EncodingError as exc:
        raise CheatingParticipant(who, f"unreadable round-one payload: {exc}") from None
    if commitment is not None and len(commitment) != t:
        raise CheatingParticipant(who, f"commitment has {len(commitment)} terms, not {t}")
    if round1 is not None and not dkg.verify_proof_of_knowledge(round1):
        raise CheatingParticipant(who, "proof of knowledge of the secret does not verify")
    if params.old_package is not None and commitment is not None:
        weight = derive_interpolating_value(params.dealers, who)
        if commitment[0] != scalar_mult(weight, params.old_package.verifying_shares[who]):
            raise CheatingParticipant(who, "constant term is not its share of the group key")
    return VerifiedAnnouncement(who, body.ephemeral_public_key, round1, commitment)


def check_confirmations(
    statements: Iterable[pb.SignedStatement],
    params: CeremonyParameters,
    verifier: StatementVerifier,
) -> bytes:
    """The encoded public key package every recipient signed, if they all signed the same one."""
    packages: dict[int, bytes] = {}
    for statement in statements:
        who = statement.signer
        if who not in params.recipients or who in packages:
            raise CeremonyError(f"unexpected or repeated confirmation from {who}")
        signed = verifier.verify(statement, Purpose.CONFIRMATION)
        try:
            body = pb.Confirmation.FromString(signed)
        except DecodeError:
            raise CheatingParticipant(who, "signed an unreadable confirmation") from None
        if body.identifier != who or body.ceremony_id != params.ceremony_id:
            raise CheatingParticipant(who, "confirmation names another participant or ceremony")
        packages[who] = body.public_key_package
    missing = sorted(set(params.recipients) - set(packages))
    if missing:
        raise CeremonyError(f"no confirmation from {missing}")
    # Blame whoever differs from the most common report, not whoever happens to come first.
    agreed, _ = Counter(packages.values()).most_common(1)[0]
    for who, package in sorted(packages.items()):
        if package != agreed:
            raise CheatingParticipant(who, "confirmed a different public key package")
    return agreed


def round1_packages(
    announcements: Mapping[int, VerifiedAnnouncement], exclude: int
) -> dict[int, dkg.Round1Package]:
    return {j: a.round1 for j, a in announcements.items() if j != exclude and a.round1 is not None}
