"""The ceremony service inside each signer process: the sans-IO Participant behind gRPC.

Only the operators' identities may call it (mTLS, SPIFFE ID), never the coordinator's; with no
operator configured, every call is refused. Refusals are gRPC errors: PERMISSION_DENIED for a
caller that is not an operator, ABORTED with the culprit's identifier in the `keymint-culprit`
trailing metadata when a participant cheated, FAILED_PRECONDITION for anything else wrong with the
ceremony (a trusted-dealer install without the development switch, a threshold below FROST_T, a
key replaced without a local approval), INTERNAL when the new key could not be persisted. Register
it on a grpc.aio server next to the signing service:

    servicer = CeremonyServicer(identifier=1, key_state=keys, tls_files=files["signer-1"],
                                operators=[spiffe_id("operator")], ca_pem=ca,
                                approvals=ReplaceApprovals(state_dir))
    add_to_server(servicer, server)
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable, Collection
from typing import TypeVar

import grpc

from signer.ceremony.approvals import ReplaceApprovals
from signer.ceremony.envelope import Clock, StatementSigner, StatementVerifier, utc_now
from signer.ceremony.participant import DEFAULT_TTL, Participant
from signer.devca import TlsFiles
from signer.errors import SignerError
from signer.frost import CheatingParticipant
from signer.frost.encoding import encode_public_key_package
from signer.frost.group import RandomBytes
from signer.keystate import KeyState
from signer.proto import ceremony_pb2 as pb
from signer.proto import ceremony_pb2_grpc
from signer.tls import peer_identity

log = logging.getLogger(__name__)

CULPRIT_METADATA = "keymint-culprit"
OPERATORS_SETTING = "KEYMINT_OPERATOR_IDS"

T = TypeVar("T")


class CeremonyServicer(ceremony_pb2_grpc.KeyCeremonyServicer):
    """keymint.ceremony.v1.KeyCeremony for one signer; ceremony state in memory only."""

    def __init__(
        self,
        *,
        identifier: int,
        key_state: KeyState,
        tls_files: TlsFiles,
        operators: Collection[str],
        ca_pem: bytes,
        approvals: ReplaceApprovals,
        allow_trusted_dealer: bool = False,
        min_threshold: int = 2,
        rng: RandomBytes = os.urandom,
        clock: Clock = utc_now,
        session_ttl: datetime.timedelta = DEFAULT_TTL,
    ) -> None:
        self.identifier = identifier
        self._keys = key_state
        self._operators = frozenset(operators)
        self._approvals = approvals
        self._participant = Participant(
            identifier=identifier,
            key_state=key_state,
            statement_signer=StatementSigner.from_tls_files(identifier, tls_files),
            verifier=StatementVerifier(ca_pem=ca_pem, clock=clock),
            approvals=approvals,
            allow_trusted_dealer=allow_trusted_dealer,
            min_threshold=min_threshold,
            rng=rng,
            clock=clock,
            ttl=session_ttl,
        )

    @property
    def ceremonies_in_progress(self) -> list[str]:
        return self._participant.in_progress

    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusResponse:
        await self._require_operator(context)
        if not self._keys.has_key:
            return pb.StatusResponse(identifier=self.identifier)
        key = self._keys.current
        return pb.StatusResponse(
            identifier=self.identifier,
            public_key_package=encode_public_key_package(key.package),
            kid=key.kid,
        )

    async def Begin(
        self, request: pb.BeginRequest, context: grpc.aio.ServicerContext
    ) -> pb.BeginResponse:
        await self._require_operator(context)
        announcement = await self._step(
            context, "begin", b"", lambda: self._participant.begin(request.parameters)
        )
        return pb.BeginResponse(announcement=announcement)

    async def Deal(
        self, request: pb.DealRequest, context: grpc.aio.ServicerContext
    ) -> pb.DealResponse:
        await self._require_operator(context)
        shares = await self._step(
            context,
            "deal",
            request.ceremony_id,
            lambda: self._participant.deal(request.ceremony_id, request.announcements),
        )
        return pb.DealResponse(shares=shares)

    async def Stage(
        self, request: pb.StageRequest, context: grpc.aio.ServicerContext
    ) -> pb.StageResponse:
        await self._require_operator(context)
        confirmation = await self._step(
            context, "stage", request.ceremony_id, lambda: self._participant.stage(request)
        )
        return pb.StageResponse(confirmation=confirmation)

    async def Commit(
        self, request: pb.CommitRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommitResponse:
        await self._require_operator(context)
        name = request.ceremony_id.hex()
        committed = await self._step(
            context,
            "commit",
            request.ceremony_id,
            lambda: self._participant.commit(request.ceremony_id, request.confirmations),
        )
        if committed.key is None:
            return pb.CommitResponse(public_key_package=committed.package)
        key = committed.key
        try:
            # On the event loop, although the vault may take a moment: KeyState's install
            # listeners (voiding the signing service's nonces) expect the loop's thread.
            installed = self._keys.install(
                key.share, key.package, replace_existing=committed.replace_existing
            )
        except Exception:
            log.exception("ceremony %s: the new key could not be installed; old key kept", name)
            await context.abort(grpc.StatusCode.INTERNAL, "the new key could not be installed")
            raise AssertionError("unreachable: abort raises") from None
        log.info(
            "ceremony %s: installed key %s as participant %d",
            name,
            installed.kid,
            key.share.identifier,
        )
        self._approvals.consume(committed.replaced)
        return pb.CommitResponse(public_key_package=committed.package, kid=installed.kid)

    async def Abort(
        self, request: pb.AbortRequest, context: grpc.aio.ServicerContext
    ) -> pb.AbortResponse:
        await self._require_operator(context)
        self._participant.abort(request.ceremony_id, request.culprit, request.reason)
        return pb.AbortResponse()

    async def _require_operator(self, context: grpc.aio.ServicerContext) -> str:
        """The caller's SPIFFE ID if it is an operator of this signer; else PERMISSION_DENIED."""
        identity = peer_identity(context)
        if not self._operators:
            problem = (
                f"this signer serves no key ceremony: it was started without {OPERATORS_SETTING}"
            )
        elif identity is None or identity not in self._operators:
            problem = (
                f"caller {identity or 'without a SPIFFE ID'} is not an operator of this signer "
                f"({OPERATORS_SETTING})"
            )
        else:
            return identity
        log.warning("ceremony call refused: %s", problem)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)
        raise AssertionError("unreachable: abort raises")

    async def _step(
        self,
        context: grpc.aio.ServicerContext,
        step: str,
        ceremony_id: bytes,
        run: Callable[[], T],
    ) -> T:
        """Run one ceremony step; turn its refusal into a gRPC status (abort raises)."""
        name = ceremony_id.hex() or "(new)"
        try:
            return run()
        except CheatingParticipant as exc:
            log.warning(
                "ceremony %s: %s refused: participant %d cheated: %s",
                name,
                step,
                exc.identifier,
                exc.reason,
            )
            await context.abort(
                grpc.StatusCode.ABORTED,
                str(exc),
                trailing_metadata=((CULPRIT_METADATA, str(exc.identifier)),),
            )
        except SignerError as exc:
            log.warning("ceremony %s: %s refused: %s", name, step, exc)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        raise AssertionError("unreachable: abort raises")


def add_to_server(servicer: CeremonyServicer, server: grpc.aio.Server) -> None:
    """Register the ceremony service on a grpc.aio server (built with tls.server_credentials)."""
    ceremony_pb2_grpc.add_KeyCeremonyServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
