"""One signer's side of a key ceremony, without I/O: the servicer puts it behind gRPC.

A ceremony moves a participant through begun -> dealt (dealers) -> staged (recipients); the driver
then either commits (the staged key is handed out to be installed) or aborts (it is dropped). Any
error also drops the ceremony here, so nothing half-checked can be installed later. Sessions live
in memory only and expire after `ttl`.

What others broadcast is checked in `checks`, which the driver runs too. Three rules belong to the
signer's host rather than to the ceremony: a trusted-dealer install is refused unless the signer
was started with the development switch; no ceremony may make a key that needs fewer signers than
the deployment's threshold (FROST_T, `min_threshold`); and a ceremony that destroys a key held
here (`replace_existing_key`) needs a local approval (`approvals`), checked at begin and at commit.
"""

from __future__ import annotations

import datetime
import enum
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nacl.public import PrivateKey

from signer.ceremony.approvals import ReplaceApprovals
from signer.ceremony.checks import (
    VerifiedAnnouncement,
    check_announcements,
    check_confirmations,
    round1_packages,
)
from signer.ceremony.envelope import (
    DEALER,
    Clock,
    Purpose,
    SealContext,
    StatementSigner,
    StatementVerifier,
    ephemeral_public_bytes,
    new_ephemeral_key,
    open_sealed,
    seal,
    utc_now,
)
from signer.ceremony.errors import CeremonyError
from signer.ceremony.wire import (
    CeremonyKind,
    CeremonyParameters,
    decode_vss_commitment,
    encode_round1_package,
    encode_vss_commitment,
    parameters_digest,
)
from signer.frost import (
    CheatingParticipant,
    EncodingError,
    InvalidScalar,
    KeyShare,
    PublicKeyPackage,
    dkg,
    reshare,
)
from signer.frost.encoding import encode_public_key_package
from signer.frost.group import (
    RandomBytes,
    Scalar,
    deserialize_scalar,
    serialize_scalar,
)
from signer.frost.keys import derive_public_key_package
from signer.frost.polynomial import vss_verify
from signer.keystate import KeyState, SigningKey
from signer.proto import ceremony_pb2 as pb
from signer.token import kid_for

log = logging.getLogger(__name__)

DEFAULT_TTL = datetime.timedelta(minutes=5)
MAX_SESSIONS = 8  # ceremonies are rare; a bound keeps a confused driver from filling memory
MAX_REMEMBERED_IDS = 4096
DEV_DEALER_SETTING = "KEYMINT_DEV_ALLOW_TRUSTED_DEALER"
MIN_THRESHOLD_SETTING = "FROST_T"
MAX_KEYS = 16  # keys one signer holds at once; a bound keeps a confused driver from filling disk


class Phase(enum.Enum):
    BEGUN = "begun"
    DEALT = "dealt"
    STAGED = "staged"


@dataclass(frozen=True, slots=True)
class Committed:
    """The agreed package, and the key to install when this participant is a recipient.

    `replaced` names the keys the install destroys here; their approvals are used up with it.
    With `replace_existing`, installing it drops every other key held here.
    """

    package: bytes
    key: SigningKey | None = field(repr=False)
    replaced: tuple[str, ...] = ()
    replace_existing: bool = False


@dataclass(slots=True)
class Session:
    params: CeremonyParameters
    digest: bytes
    expires_at: datetime.datetime
    ephemeral: PrivateKey = field(repr=False)
    own_announcement: pb.SignedStatement
    phase: Phase = Phase.BEGUN
    dkg_secret: dkg.Round1Secret | None = field(default=None, repr=False)
    dealing: reshare.ReshareDealing | None = field(default=None, repr=False)
    announcements: dict[int, VerifiedAnnouncement] | None = None
    staged: SigningKey | None = field(default=None, repr=False)
    staged_package: bytes = b""
    keys_at_begin: tuple[tuple[str, bytes], ...] = ()  # (kid, encoded package) held at begin


class Participant:
    """The ceremonies one signer takes part in, keyed by ceremony id."""

    def __init__(
        self,
        *,
        identifier: int,
        key_state: KeyState,
        statement_signer: StatementSigner,
        verifier: StatementVerifier,
        approvals: ReplaceApprovals,
        allow_trusted_dealer: bool = False,
        min_threshold: int = 2,
        rng: RandomBytes = os.urandom,
        clock: Clock = utc_now,
        ttl: datetime.timedelta = DEFAULT_TTL,
    ) -> None:
        self.identifier = identifier
        self._approvals = approvals
        self._allow_trusted_dealer = allow_trusted_dealer
        self._min_threshold = min_threshold
        self._keys = key_state
        self._signer = statement_signer
        self._verifier = verifier
        self._rng = rng
        self._clock = clock
        self._ttl = ttl
        self._sessions: dict[bytes, Session] = {}
        self._used_ids: dict[bytes, None] = {}  # insertion-ordered, oldest forgotten first

    @property
    def in_progress(self) -> list[str]:
        """Ids of the ceremonies this participant holds state for (nothing secret)."""
        self.expire()
        return sorted(ceremony_id.hex() for ceremony_id in self._sessions)

    def begin(self, encoded_params: bytes) -> pb.SignedStatement:
        self.expire()
        params = CeremonyParameters.decode(encoded_params)
        self._check_dealer_allowed(params)
        self._check_threshold(params)
        me = self.identifier
        if params.ceremony_id in self._used_ids:
            # Never two announcements for one ceremony id: a driver holding both could show
            # different participants different round-one messages and frame this signer.
            raise CeremonyError(f"ceremony {params.ceremony_name} has already begun here")
        if len(self._sessions) >= MAX_SESSIONS:
            raise CeremonyError(f"{MAX_SESSIONS} ceremonies are already in progress here")
        if me not in params.participants:
            raise CeremonyError(f"participant {me} has no part in ceremony {params.ceremony_name}")
        self._check_key_may_change(params)
        self._check_replace_approved(params)
        ephemeral = new_ephemeral_key(self._rng)
        secret: dkg.Round1Secret | None = None
        dealing: reshare.ReshareDealing | None = None
        round1 = b""
        if params.kind is CeremonyKind.DKG:
            n = len(params.recipients)
            secret, package = dkg.part1(me, params.min_participants, n, rng=self._rng)
            round1 = encode_round1_package(package)
        elif params.kind is CeremonyKind.RESHARE and me in params.dealers:
            held = self._held(params.old_package)
            assert held is not None, "_check_key_may_change refuses a dealer without the key"
            dealing = reshare.deal(held.share, params.reshare_plan(), rng=self._rng)
            round1 = encode_vss_commitment(dealing.commitment)
        body = pb.Announcement(
            ceremony_id=params.ceremony_id,
            identifier=me,
            parameters_digest=parameters_digest(encoded_params),
            ephemeral_public_key=ephemeral_public_bytes(ephemeral),
            round1=round1,
        )
        announcement = self._signer.sign(Purpose.ANNOUNCEMENT, body.SerializeToString())
        self._remember(params.ceremony_id)
        self._sessions[params.ceremony_id] = Session(
            params=params,
            digest=parameters_digest(encoded_params),
            expires_at=self._clock() + self._ttl,
            ephemeral=ephemeral,
            own_announcement=announcement,
            dkg_secret=secret,
            dealing=dealing,
            keys_at_begin=self._held_packages(),
        )
        log.info(
            "ceremony %s: began %s as participant %d (dealers %s, recipients %s, threshold %d)",
            params.ceremony_name,
            params.kind.name,
            me,
            list(params.dealers),
            list(params.recipients),
            params.min_participants,
        )
        return announcement

    def _held(self, package: PublicKeyPackage | None) -> SigningKey | None:
        """The key held here with the group key of `package`, if any."""
        if package is None:
            return None
        return self._keys.get(kid_for(package.group_public_key))

    def _held_packages(self) -> tuple[tuple[str, bytes], ...]:
        return tuple((k.kid, encode_public_key_package(k.package)) for k in self._keys.keys)

    def _remember(self, ceremony_id: bytes) -> None:
        self._used_ids[ceremony_id] = None
        while len(self._used_ids) > MAX_REMEMBERED_IDS:
            del self._used_ids[next(iter(self._used_ids))]

    def _check_dealer_allowed(self, params: CeremonyParameters) -> None:
        """A trusted dealer knows the whole group secret: only signers started for development."""
        if params.kind is CeremonyKind.DEAL and not self._allow_trusted_dealer:
            raise CeremonyError(
                f"participant {self.identifier} refuses a trusted-dealer install: its driver "
                f"would know the whole group secret; only a signer started with "
                f"{DEV_DEALER_SETTING}=true (development) takes part in one"
            )

    def _check_threshold(self, params: CeremonyParameters) -> None:
        """Every kind, before any state is kept: a reshare keeps the group key that verifiers
        trust, so a threshold lowered below the deployment's would let fewer signers than it mint
        tokens that verify everywhere. A refresh keeps the threshold, so it passes whenever the
        key it refreshes does; raising the threshold is allowed."""
        if params.min_participants < self._min_threshold:
            raise CeremonyError(
                f"participant {self.identifier} refuses a {params.kind.name} making a "
                f"{params.min_participants}-of-{len(params.recipients)} key: its threshold "
                f"{params.min_participants} is below this signer's minimum "
                f"{MIN_THRESHOLD_SETTING}={self._min_threshold}"
            )

    def _check_replace_approved(self, params: CeremonyParameters) -> tuple[str, ...]:
        """The keys held here that this ceremony destroys, each approved on this host.

        A reshare recipient keeps the key being reshared (a new share of the same group key);
        anything else it holds goes, as does every key a DKG or dealer recipient holds.
        """
        if not params.replace_existing_key or self.identifier not in params.recipients:
            return ()
        kept = kid_for(params.old_package.group_public_key) if params.old_package else None
        destroyed = [kid for kid in self._held_kids() if kid != kept]
        return self._approvals.require(destroyed)

    def _held_kids(self) -> list[str]:
        return list(self._keys.kids)

    def _check_key_may_change(self, params: CeremonyParameters) -> None:
        """A reshare deals from, and replaces the share of, the one key it names; a new group key
        is added beside the keys held, destroying nothing. (Dropping the other keys, which
        `replace_existing_key` asks for, is a separate decision.)"""
        me = self.identifier
        old = params.old_package
        held = self._held(old)
        same = held is not None and old is not None and _same_package(held.package, old)
        if old is not None and me in params.dealers and not same:
            raise CeremonyError(f"dealer {me} does not hold the key being reshared")
        adds_a_key = me in params.recipients and held is None
        if adds_a_key and not params.replace_existing_key and len(self._keys.keys) >= MAX_KEYS:
            raise CeremonyError(
                f"participant {me} already holds {MAX_KEYS} keys; a new one needs "
                "replace_existing_key (which drops the others)"
            )

    def deal(
        self, ceremony_id: bytes, statements: Iterable[pb.SignedStatement]
    ) -> list[pb.SealedShare]:
        with self._session(ceremony_id, {Phase.BEGUN}) as session:
            params = session.params
            if self.identifier not in params.dealers:
                raise CeremonyError(f"participant {self.identifier} does not deal")
            announcements = self._announcements(session, statements)
            shares = self._shares_to_deal(session, announcements)
            sealed = [
                pb.SealedShare(
                    sender=self.identifier,
                    recipient=recipient,
                    ciphertext=seal(
                        serialize_scalar(share),
                        sender_key=session.ephemeral,
                        recipient_public=announcements[recipient].ephemeral_public_key,
                        context=SealContext(params.ceremony_id, self.identifier, recipient),
                        rng=self._rng,
                    ),
                )
                for recipient, share in sorted(shares.items())
            ]
            session.phase = Phase.DEALT
            if self.identifier not in params.recipients:
                log.warning(
                    "ceremony %s: participant %d deals but leaves the group; its old share "
                    "must be erased from its vault once the ceremony commits",
                    params.ceremony_name,
                    self.identifier,
                )
            log.info("ceremony %s: sealed %d shares", params.ceremony_name, len(sealed))
            return sealed

    def _shares_to_deal(
        self, session: Session, announcements: Mapping[int, VerifiedAnnouncement]
    ) -> dict[int, int]:
        if session.dkg_secret is not None:
            round1 = round1_packages(announcements, exclude=self.identifier)
            return {j: p.share for j, p in dkg.part2(session.dkg_secret, round1).items()}
        assert session.dealing is not None, "a reshare dealer made its dealing at begin"
        return dict(session.dealing.shares)

    def stage(self, request: pb.StageRequest) -> pb.SignedStatement:
        with self._session(request.ceremony_id, {Phase.BEGUN, Phase.DEALT}) as session:
            params = session.params
            me = self.identifier
            if me not in params.recipients:
                raise CeremonyError(f"participant {me} receives nothing in this ceremony")
            if me in params.dealers and session.phase is not Phase.DEALT:
                raise CeremonyError(f"participant {me} must deal before it stages")
            announcements = self._announcements(session, request.announcements)
            sealed = {s.sender: s for s in request.shares if s.recipient == me}
            if sorted(sealed) != self._senders(params) or len(request.shares) != len(sealed):
                raise CeremonyError(
                    f"expected one sealed share from each of {self._senders(params)}"
                )
            if params.kind is CeremonyKind.DEAL:
                share, package = self._receive_dealt(session, request, sealed[DEALER])
            else:
                opened = {
                    sender: self._open(session, item, announcements[sender].ephemeral_public_key)
                    for sender, item in sealed.items()
                }
                share, package = self._receive(session, announcements, opened)
            session.staged = SigningKey(share, package)
            session.staged_package = encode_public_key_package(package)
            session.phase = Phase.STAGED
            confirmation = pb.Confirmation(
                ceremony_id=params.ceremony_id,
                identifier=me,
                public_key_package=session.staged_package,
            )
            log.info("ceremony %s: staged a new share, not in use yet", params.ceremony_name)
            return self._signer.sign(Purpose.CONFIRMATION, confirmation.SerializeToString())

    def _senders(self, params: CeremonyParameters) -> list[int]:
        """Who seals a share to this recipient: a DKG participant keeps its own share to itself."""
        if params.kind is CeremonyKind.DEAL:
            return [DEALER]
        if params.kind is CeremonyKind.DKG:
            return [d for d in params.dealers if d != self.identifier]
        return list(params.dealers)

    def _receive(
        self,
        session: Session,
        announcements: Mapping[int, VerifiedAnnouncement],
        opened: Mapping[int, Scalar],
    ) -> tuple[KeyShare, PublicKeyPackage]:
        me, params = self.identifier, session.params
        if session.dkg_secret is not None:
            round1 = round1_packages(announcements, exclude=me)
            round2 = {j: dkg.Round2Package(j, me, s) for j, s in opened.items()}
            return dkg.part3(session.dkg_secret, round1, round2)
        assert params.old_package is not None, "checked when the parameters were parsed"
        dealings = {d: (announcements[d].commitment or (), opened[d]) for d in params.dealers}
        return reshare.receive(me, params.reshare_plan(), params.old_package, dealings)

    def _receive_dealt(
        self, session: Session, request: pb.StageRequest, sealed: pb.SealedShare
    ) -> tuple[KeyShare, PublicKeyPackage]:
        params = session.params
        try:
            commitment = decode_vss_commitment(request.dealer_commitment)
        except EncodingError as exc:
            raise CeremonyError(f"unreadable dealer commitment: {exc}") from None
        share = self._open(session, sealed, request.dealer_ephemeral_public_key)
        if len(commitment) != params.min_participants or not vss_verify(
            self.identifier, share, commitment
        ):
            raise CeremonyError("the trusted dealer's share does not match its commitment")
        package = derive_public_key_package(commitment, params.recipients)
        key_share = KeyShare(
            self.identifier,
            share,
            package.group_public_key,
            params.min_participants,
            len(params.recipients),
        )
        log.warning(
            "ceremony %s: installing a TRUSTED-DEALER share: the driver held the whole group "
            "secret; development only",
            params.ceremony_name,
        )
        return key_share, package

    def _open(self, session: Session, sealed: pb.SealedShare, sender_public: bytes) -> Scalar:
        context = SealContext(session.params.ceremony_id, sealed.sender, self.identifier)
        plaintext = open_sealed(
            sealed.ciphertext,
            recipient_key=session.ephemeral,
            sender_public=sender_public,
            context=context,
        )
        try:
            return deserialize_scalar(plaintext)
        except InvalidScalar as exc:
            raise CheatingParticipant(
                sealed.sender, f"sealed share is not a scalar: {exc}"
            ) from None

    def commit(self, ceremony_id: bytes, confirmations: Iterable[pb.SignedStatement]) -> Committed:
        """Once every recipient confirmed the same package: the staged key to install, if any.

        A dealer that receives nothing (it leaves the group in a reshare) commits too, so it learns
        the ceremony is over and drops its dealing.
        """
        with self._session(ceremony_id, {Phase.STAGED, Phase.DEALT}) as session:
            params = session.params
            if self.identifier in params.recipients and session.phase is not Phase.STAGED:
                raise CeremonyError(f"participant {self.identifier} has staged no key")
            agreed = check_confirmations(confirmations, params, self._verifier)
            if session.staged is not None and agreed != session.staged_package:
                raise CeremonyError("the confirmed package is not the one staged here")
            if self._held_packages() != session.keys_at_begin:
                # Another ceremony installed a key meanwhile; this one was planned against the old.
                raise CeremonyError("the keys here changed during the ceremony")
            # Again: the approval may have expired or been withdrawn since the ceremony began.
            replaced = self._check_replace_approved(params)
            committed = Committed(agreed, session.staged, replaced, params.replace_existing_key)
        del self._sessions[ceremony_id]
        if committed.key is None:
            log.warning(
                "ceremony %s: complete; participant %d is no longer in the group: erase its old "
                "share from its vault",
                params.ceremony_name,
                self.identifier,
            )
        return committed

    def abort(self, ceremony_id: bytes, culprit: int, reason: str) -> bool:
        session = self._sessions.pop(ceremony_id, None)
        if session is not None:
            log.warning(
                "ceremony %s: aborted by the driver (culprit %s): %s",
                ceremony_id.hex(),
                culprit or "none",
                reason,
            )
        return session is not None

    def expire(self) -> None:
        now = self._clock()
        for ceremony_id, session in list(self._sessions.items()):
            if session.expires_at <= now:
                del self._sessions[ceremony_id]
                log.warning("ceremony %s: expired unfinished; dropped", ceremony_id.hex())

    def _announcements(
        self, session: Session, statements: Iterable[pb.SignedStatement]
    ) -> dict[int, VerifiedAnnouncement]:
        """Checked once; a dealer that also receives keeps the set it dealt against."""
        if session.announcements is None:
            statements = list(statements)
            mine = [s for s in statements if s.signer == self.identifier]
            if mine != [session.own_announcement]:
                raise CeremonyError("this participant's own announcement was altered in transit")
            session.announcements = check_announcements(
                statements, session.params, session.digest, self._verifier
            )
        return session.announcements

    def _session(self, ceremony_id: bytes, phases: set[Phase]) -> _SessionStep:
        self.expire()
        session = self._sessions.get(ceremony_id)
        if session is None:
            raise CeremonyError(f"no ceremony {ceremony_id.hex()} in progress here")
        if session.phase not in phases:
            self._sessions.pop(ceremony_id)
            raise CeremonyError(
                f"ceremony {ceremony_id.hex()} is {session.phase.value}: out of order"
            )
        return _SessionStep(self._sessions, ceremony_id, session)


def _same_package(a: PublicKeyPackage, b: PublicKeyPackage) -> bool:
    return encode_public_key_package(a) == encode_public_key_package(b)


class _SessionStep:
    """One step on a session: any error drops the ceremony, so it can never be resumed."""

    def __init__(
        self, sessions: dict[bytes, Session], ceremony_id: bytes, session: Session
    ) -> None:
        self._sessions = sessions
        self._ceremony_id = ceremony_id
        self._session = session

    def __enter__(self) -> Session:
        return self._session

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            self._sessions.pop(self._ceremony_id, None)
