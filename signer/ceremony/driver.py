"""The ceremony driver: one client runs DKG, refresh, reshare or a dev install over running signers.

The driver relays every message, but it is a courier: public messages are signed by the signers'
own mTLS keys and private ones sealed between their per-ceremony X25519 keys (see `envelope`). It
checks what it relays as every signer will (so a cheater is named early), and finishes with two
phases: every recipient stages its new key and signs the public key package it derived; only when
all of them signed the same package does it tell each to install. Any failure before that aborts
the ceremony on every participant and leaves every signer on its old key.

    async with connect({1: "10.0.0.1:7443", 2: ..., 3: ...}, tls_files=files) as driver:
        result = await driver.dkg(min_participants=2)
        print(result.kid)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import grpc

from signer.ceremony.checks import VerifiedAnnouncement, check_announcements, check_confirmations
from signer.ceremony.envelope import (
    DEALER,
    Clock,
    SealContext,
    StatementVerifier,
    ephemeral_public_bytes,
    new_ephemeral_key,
    seal,
    utc_now,
)
from signer.ceremony.errors import CeremonyError, CeremonyFailed, CommitIncomplete
from signer.ceremony.service import CULPRIT_METADATA
from signer.ceremony.wire import (
    CEREMONY_ID_SIZE,
    CeremonyKind,
    CeremonyParameters,
    encode_vss_commitment,
    parameters_digest,
)
from signer.devca import TlsFiles, signer_name
from signer.errors import SignerError
from signer.frost import CheatingParticipant, PublicKeyPackage, trusted_dealer_keygen
from signer.frost.encoding import decode_public_key_package
from signer.frost.group import RandomBytes, serialize_scalar
from signer.proto import ceremony_pb2 as pb
from signer.proto import ceremony_pb2_grpc
from signer.tls import secure_channel
from signer.token import kid_for

log = logging.getLogger(__name__)

DEFAULT_RPC_TIMEOUT = 30.0
T = TypeVar("T")


class CeremonyClient(Protocol):
    """One signer's ceremony service as the driver sees it (a gRPC stub, or a test double)."""

    async def status(self, request: pb.StatusRequest) -> pb.StatusResponse: ...
    async def begin(self, request: pb.BeginRequest) -> pb.BeginResponse: ...
    async def deal(self, request: pb.DealRequest) -> pb.DealResponse: ...
    async def stage(self, request: pb.StageRequest) -> pb.StageResponse: ...
    async def commit(self, request: pb.CommitRequest) -> pb.CommitResponse: ...
    async def abort(self, request: pb.AbortRequest) -> pb.AbortResponse: ...


class ParticipantError(CeremonyError):
    """A signer refused a step or could not be reached; `culprit` is whom it blamed, if anyone."""

    def __init__(self, signer: int, code: str, details: str, culprit: int | None) -> None:
        self.signer = signer
        self.code = code
        self.details = details
        self.culprit = culprit
        super().__init__(f"signer {signer}: {code}: {details}")


class GrpcCeremonyClient:
    """CeremonyClient over a KeyCeremony stub; gRPC errors become ParticipantError."""

    def __init__(self, identifier: int, channel: grpc.aio.Channel, *, timeout: float) -> None:
        self.identifier = identifier
        self._stub = ceremony_pb2_grpc.KeyCeremonyStub(channel)  # type: ignore[no-untyped-call]
        self._timeout = timeout

    async def status(self, request: pb.StatusRequest) -> pb.StatusResponse:
        return await self._call(self._stub.Status, request)

    async def begin(self, request: pb.BeginRequest) -> pb.BeginResponse:
        return await self._call(self._stub.Begin, request)

    async def deal(self, request: pb.DealRequest) -> pb.DealResponse:
        return await self._call(self._stub.Deal, request)

    async def stage(self, request: pb.StageRequest) -> pb.StageResponse:
        return await self._call(self._stub.Stage, request)

    async def commit(self, request: pb.CommitRequest) -> pb.CommitResponse:
        return await self._call(self._stub.Commit, request)

    async def abort(self, request: pb.AbortRequest) -> pb.AbortResponse:
        return await self._call(self._stub.Abort, request)

    async def _call(self, method: Callable[..., Awaitable[T]], request: object) -> T:
        try:
            return await method(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise ParticipantError(
                self.identifier, exc.code().name, exc.details() or "", _culprit(exc)
            ) from None


def _culprit(exc: grpc.aio.AioRpcError) -> int | None:
    for key, value in exc.trailing_metadata() or ():
        if key == CULPRIT_METADATA and str(value).isdigit():
            return int(value)
    return None


@dataclass(frozen=True, slots=True)
class CeremonyResult:
    """What every recipient installed: the same public key package, confirmed by each."""

    ceremony_id: str
    kind: CeremonyKind
    package: PublicKeyPackage
    package_bytes: bytes

    @property
    def group_public_key(self) -> bytes:
        return bytes(self.package.group_public_key)

    @property
    def kid(self) -> str:
        return kid_for(self.group_public_key)


class CeremonyDriver:
    """Runs ceremonies over `clients` (identifier -> that signer's ceremony service)."""

    def __init__(
        self,
        *,
        clients: Mapping[int, CeremonyClient],
        ca_pem: bytes,
        rng: RandomBytes = os.urandom,
        clock: Clock = utc_now,
    ) -> None:
        self._clients = dict(clients)
        self._verifier = StatementVerifier(ca_pem=ca_pem, clock=clock)
        self._rng = rng

    async def dkg(
        self,
        min_participants: int,
        participants: Sequence[int] | None = None,
        *,
        replace_existing_key: bool = False,
    ) -> CeremonyResult:
        """A new group key, made by the participants together; none of them ever holds it."""
        identifiers = tuple(sorted(participants or self._clients))
        params = self._parameters(
            CeremonyKind.DKG,
            min_participants,
            identifiers,
            identifiers,
            replace=replace_existing_key,
        )
        return await self._run(params)

    async def refresh(self, participants: Sequence[int] | None = None) -> CeremonyResult:
        """Every share changes; the group key, threshold and participants do not."""
        holders = tuple(sorted(participants or self._clients))
        old = await self._current_package(holders)
        if tuple(old.identifiers) != holders:
            raise CeremonyError(
                f"a refresh needs every holder {old.identifiers}, got {list(holders)}; "
                "reshare to change who holds the key"
            )
        params = self._parameters(
            CeremonyKind.RESHARE, old.min_participants, holders, holders, old=old
        )
        return await self._run(params)

    async def reshare(
        self,
        min_participants: int,
        recipients: Sequence[int],
        *,
        dealers: Sequence[int] | None = None,
    ) -> CeremonyResult:
        """The same group key onto `recipients` with a new threshold; t_old holders deal.

        Without `dealers`, the lowest-numbered current holders this driver can reach deal.
        """
        candidates = tuple(sorted(dealers or self._clients))
        holding = await self._holders(candidates, tolerate_unreachable=dealers is None)
        if not holding:
            raise CeremonyError(f"none of {list(candidates)} holds a key to reshare")
        old = _same_package(holding)
        chosen = tuple(dealers) if dealers else tuple(sorted(holding))[: old.min_participants]
        params = self._parameters(
            CeremonyKind.RESHARE,
            min_participants,
            tuple(sorted(chosen)),
            tuple(sorted(recipients)),
            old=old,
        )
        return await self._run(params)

    async def deal(
        self,
        min_participants: int,
        participants: Sequence[int] | None = None,
        *,
        replace_existing_key: bool = False,
    ) -> CeremonyResult:
        """DEVELOPMENT ONLY: this process makes the group secret and deals every share.

        Signers take part only when started with KEYMINT_DEV_ALLOW_TRUSTED_DEALER=true.
        """
        identifiers = tuple(sorted(participants or self._clients))
        if identifiers != tuple(range(1, len(identifiers) + 1)):
            raise CeremonyError("a trusted-dealer install deals to signers 1..n")
        params = self._parameters(
            CeremonyKind.DEAL, min_participants, (), identifiers, replace=replace_existing_key
        )
        return await self._run(params)

    def _parameters(
        self,
        kind: CeremonyKind,
        min_participants: int,
        dealers: tuple[int, ...],
        recipients: tuple[int, ...],
        *,
        old: PublicKeyPackage | None = None,
        replace: bool = False,
    ) -> CeremonyParameters:
        params = CeremonyParameters(
            ceremony_id=self._rng(CEREMONY_ID_SIZE),
            kind=kind,
            min_participants=min_participants,
            dealers=dealers,
            recipients=recipients,
            old_package=old,
            replace_existing_key=replace,
        )
        unknown = [i for i in params.participants if i not in self._clients]
        if unknown:
            raise CeremonyError(f"no address for participants {unknown}")
        return params

    async def _current_package(self, holders: tuple[int, ...]) -> PublicKeyPackage:
        """The public key package every one of `holders` reports; they must all agree."""
        holding = await self._holders(holders, tolerate_unreachable=False)
        if sorted(holding) != sorted(holders):
            missing = sorted(set(holders) - set(holding))
            raise CeremonyError(f"signers {missing} hold no key")
        return _same_package(holding)

    async def _holders(
        self, candidates: tuple[int, ...], *, tolerate_unreachable: bool
    ) -> dict[int, bytes]:
        """Encoded package of each candidate holding a key (skipping unreachable ones if told)."""
        results = await asyncio.gather(
            *(self._clients[i].status(pb.StatusRequest()) for i in candidates),
            return_exceptions=True,
        )
        holding: dict[int, bytes] = {}
        for identifier, outcome in zip(candidates, results, strict=True):
            if isinstance(outcome, BaseException):
                if not tolerate_unreachable or not isinstance(outcome, ParticipantError):
                    raise outcome
                log.warning("signer %d is unreachable, it will not deal: %s", identifier, outcome)
                continue
            if outcome.identifier != identifier:
                raise CeremonyError(f"the signer at {identifier}'s address is {outcome.identifier}")
            if outcome.public_key_package:
                holding[identifier] = outcome.public_key_package
        return holding

    async def _run(self, params: CeremonyParameters) -> CeremonyResult:
        name = params.ceremony_name
        log.info(
            "ceremony %s: %s, dealers %s, recipients %s, threshold %d",
            name,
            params.kind.name,
            list(params.dealers),
            list(params.recipients),
            params.min_participants,
        )
        try:
            package, confirmations = await self._stage_everywhere(params)
        except BaseException as exc:
            await self._abort_everywhere(params, exc)
            if isinstance(exc, CheatingParticipant):
                raise CeremonyFailed(name, exc.reason, culprit=exc.identifier) from exc
            if isinstance(exc, ParticipantError):
                raise CeremonyFailed(
                    name, str(exc), culprit=exc.culprit, reporter=exc.signer
                ) from exc
            if isinstance(exc, SignerError):
                raise CeremonyFailed(name, str(exc)) from exc
            raise
        await self._commit_everywhere(params, package, confirmations)
        result = CeremonyResult(name, params.kind, decode_public_key_package(package), package)
        log.info(
            "ceremony %s: complete on %s; group key %s, kid %s",
            name,
            list(params.recipients),
            result.group_public_key.hex(),
            result.kid,
        )
        return result

    async def _stage_everywhere(
        self, params: CeremonyParameters
    ) -> tuple[bytes, list[pb.SignedStatement]]:
        """Round one, round two and staging: the package all recipients confirmed, and how."""
        encoded = params.encode()
        begun = await self._gather(
            params.participants, lambda _, c: c.begin(pb.BeginRequest(parameters=encoded))
        )
        announcements = [begun[i].announcement for i in params.participants]
        verified = check_announcements(
            announcements, params, parameters_digest(encoded), self._verifier
        )
        if params.kind is CeremonyKind.DEAL:
            dealt = self._deal_as_trusted_dealer(params, verified)
        else:
            dealt = _Dealt(await self._collect_dealings(params, announcements))

        def stage_request(recipient: int) -> pb.StageRequest:
            return pb.StageRequest(
                ceremony_id=params.ceremony_id,
                announcements=announcements,
                shares=[s for s in dealt.shares if s.recipient == recipient],
                dealer_commitment=dealt.dealer_commitment,
                dealer_ephemeral_public_key=dealt.dealer_ephemeral_public_key,
            )

        staged = await self._gather(params.recipients, lambda r, c: c.stage(stage_request(r)))
        confirmations = [staged[r].confirmation for r in params.recipients]
        agreed = check_confirmations(confirmations, params, self._verifier)
        old = params.old_package
        if old is not None and decode_public_key_package(agreed).group_public_key != (
            old.group_public_key
        ):
            raise CeremonyError("the recipients derived a different group key")
        return agreed, confirmations

    async def _collect_dealings(
        self, params: CeremonyParameters, announcements: list[pb.SignedStatement]
    ) -> list[pb.SealedShare]:
        request = pb.DealRequest(ceremony_id=params.ceremony_id, announcements=announcements)
        dealt = await self._gather(params.dealers, lambda _, c: c.deal(request))
        sealed: list[pb.SealedShare] = []
        for dealer, response in sorted(dealt.items()):
            # A DKG participant keeps its own share; a reshare dealer seals one to itself too.
            expected = [
                r for r in params.recipients if r != dealer or params.kind is CeremonyKind.RESHARE
            ]
            addressed = sorted(s.recipient for s in response.shares)
            if addressed != expected or any(s.sender != dealer for s in response.shares):
                raise CheatingParticipant(dealer, f"sealed shares for {addressed}, not {expected}")
            sealed.extend(response.shares)
        return sealed

    def _deal_as_trusted_dealer(
        self, params: CeremonyParameters, verified: Mapping[int, VerifiedAnnouncement]
    ) -> _Dealt:
        log.warning(
            "ceremony %s: TRUSTED DEALER: this driver process is generating the whole group "
            "secret and every share; whoever can read its memory holds the key. DEVELOPMENT ONLY.",
            params.ceremony_name,
        )
        shares, _, commitment = trusted_dealer_keygen(
            params.min_participants, len(params.recipients), rng=self._rng
        )
        ephemeral = new_ephemeral_key(self._rng)
        sealed = [
            pb.SealedShare(
                sender=DEALER,
                recipient=share.identifier,
                ciphertext=seal(
                    serialize_scalar(share.signing_share),
                    sender_key=ephemeral,
                    recipient_public=verified[share.identifier].ephemeral_public_key,
                    context=SealContext(params.ceremony_id, DEALER, share.identifier),
                    rng=self._rng,
                ),
            )
            for share in shares
        ]
        # Python cannot wipe memory; dropping the references is all this process can do.
        del shares
        return _Dealt(sealed, encode_vss_commitment(commitment), ephemeral_public_bytes(ephemeral))

    async def _commit_everywhere(
        self,
        params: CeremonyParameters,
        package: bytes,
        confirmations: list[pb.SignedStatement],
    ) -> None:
        """Phase two. Dealers leaving the group are told too, so they drop their dealing."""
        request = pb.CommitRequest(ceremony_id=params.ceremony_id, confirmations=confirmations)
        results = await asyncio.gather(
            *(self._clients[i].commit(request) for i in params.participants),
            return_exceptions=True,
        )
        kid = kid_for(decode_public_key_package(package).group_public_key)
        installed: list[int] = []
        pending: list[int] = []
        for identifier, outcome in zip(params.participants, results, strict=True):
            recipient = identifier in params.recipients
            if isinstance(outcome, BaseException):
                problem = str(outcome)
            elif outcome.public_key_package != package or (recipient and outcome.kid != kid):
                problem = "it reports a different key"
            elif recipient:
                installed.append(identifier)
                continue
            else:
                continue
            log.error(
                "ceremony %s: commit on signer %d failed: %s",
                params.ceremony_name,
                identifier,
                problem,
            )
            if recipient:
                pending.append(identifier)
        if pending:
            await self._abort_everywhere(params, CeremonyError("commit failed"), pending)
            raise CommitIncomplete(params.ceremony_name, installed, pending)

    async def _abort_everywhere(
        self,
        params: CeremonyParameters,
        cause: BaseException,
        participants: Sequence[int] | None = None,
    ) -> None:
        culprit = getattr(cause, "identifier", None) or getattr(cause, "culprit", None) or 0
        reason = str(cause) or type(cause).__name__
        log.warning(
            "ceremony %s: aborting on every participant (culprit %s): %s",
            params.ceremony_name,
            culprit or "none",
            reason,
        )
        request = pb.AbortRequest(ceremony_id=params.ceremony_id, culprit=culprit, reason=reason)
        targets = participants if participants is not None else params.participants
        results = await asyncio.gather(
            *(self._clients[i].abort(request) for i in targets), return_exceptions=True
        )
        for identifier, outcome in zip(targets, results, strict=True):
            if isinstance(outcome, BaseException):
                # It drops the ceremony anyway when it expires; nothing staged is ever installed.
                log.warning(
                    "ceremony %s: abort on signer %d failed: %s",
                    params.ceremony_name,
                    identifier,
                    outcome,
                )

    async def _gather(
        self,
        identifiers: Sequence[int],
        call: Callable[[int, CeremonyClient], Awaitable[T]],
    ) -> dict[int, T]:
        """Call every signer at once; on failure raise the most telling error, in signer order."""
        results = await asyncio.gather(
            *(call(i, self._clients[i]) for i in identifiers), return_exceptions=True
        )
        values: dict[int, T] = {}
        errors: list[BaseException] = []
        for identifier, outcome in zip(identifiers, results, strict=True):
            if isinstance(outcome, BaseException):
                errors.append(outcome)
            else:
                values[identifier] = outcome
        if errors:
            raise min(errors, key=_how_telling)
        return values


def _same_package(holding: Mapping[int, bytes]) -> PublicKeyPackage:
    if len(set(holding.values())) != 1:
        raise CeremonyError(
            f"signers {sorted(holding)} do not all hold the same key; name the dealers"
        )
    return decode_public_key_package(next(iter(holding.values())))


def _how_telling(error: BaseException) -> int:
    """Rank errors: cancellation first, then a named culprit, then any refusal, then the rest."""
    if not isinstance(error, Exception):
        return 0
    if isinstance(error, ParticipantError):
        return 1 if error.culprit is not None else 2
    return 3


@dataclass(frozen=True, slots=True)
class _Dealt:
    """What round two produced: sealed shares, plus the trusted dealer's public part in DEAL."""

    shares: list[pb.SealedShare]
    dealer_commitment: bytes = b""
    dealer_ephemeral_public_key: bytes = b""


@contextlib.asynccontextmanager
async def connect(
    addresses: Mapping[int, str],
    *,
    tls_files: TlsFiles,
    server_name_for: Callable[[int], str] = signer_name,
    rpc_timeout: float = DEFAULT_RPC_TIMEOUT,
    rng: RandomBytes = os.urandom,
    clock: Clock = utc_now,
) -> AsyncIterator[CeremonyDriver]:
    """A driver over mTLS channels to each signer (identifier -> "host:port").

    `tls_files` is the driver's own identity: an operator's certificate (the "operator" one in the
    dev PKI), one the signers list in KEYMINT_OPERATOR_IDS; they refuse the coordinator's. Each
    channel accepts only `server_name_for(identifier)`.
    """
    channels = {
        identifier: secure_channel(address, tls_files, server_name_for(identifier))
        for identifier, address in addresses.items()
    }
    try:
        clients = {
            identifier: GrpcCeremonyClient(identifier, channel, timeout=rpc_timeout)
            for identifier, channel in channels.items()
        }
        yield CeremonyDriver(
            clients=clients, ca_pem=tls_files.ca.read_bytes(), rng=rng, clock=clock
        )
    finally:
        for channel in channels.values():
            await channel.close()
