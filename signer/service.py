"""The signer sidecar's gRPC service: its key shares, nonces in memory, a guard before every share.

A signer may hold several keys (`KeyState`), all under its one FROST identifier. Nonces do not
depend on the key, so one pool of commitments serves every key; Sign signs with the share of the
key its message's header names by kid. Every Sign consumes the nonces it names before anything
else, so a refused or failed request can never be replayed against the same commitment. Each
signature share and each refusal is appended to the signer's audit log; a share's record names the
commitment it used (`commitment_sha256`, a digest of the public commitment), so the log itself
shows that no commitment served twice (`extauthz audit reconcile`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Collection
from typing import Protocol

import grpc

from signer import tracing
from signer.errors import SignerError
from signer.frost import FrostError, sign
from signer.frost.encoding import (
    commitment_key,
    decode_commitment_list,
    encode_public_key_package,
    encode_signature_share,
    encode_signing_commitment,
)
from signer.frost.group import serialize_scalar
from signer.guard import GuardEvidence, GuardRefusal
from signer.keystate import KeyState, NoKey
from signer.nonces import KnownCommitments, NoncePool, PeerCommitments
from signer.observability import request_context
from signer.proto import signer_pb2, signer_pb2_grpc
from signer.tls import require_peer
from signer.token import TokenFormatError, parse_signing_input

log = logging.getLogger(__name__)

MAX_BATCH = 256
# How a signer that cannot serve at all says so (UNAVAILABLE with these details): it answered, so
# the coordinator sets it aside with back-off instead of taking it back once it answers a probe.
REFUSING_SERVICE = "refusing_service:"


class MessageGuard(Protocol):
    async def check(self, message: bytes, evidence: GuardEvidence | None) -> object: ...


class AuditSink(Protocol):
    """The signer's audit log (`signer.audit.AsyncAuditLog`): `append` may start the write
    before its result is awaited, so the record can become durable while the guard runs."""

    def append(self, event: str, data: dict[str, object]) -> Awaitable[object]: ...


class SignerService(signer_pb2_grpc.SignerServicer):
    def __init__(
        self,
        *,
        key_state: KeyState,
        guard: MessageGuard,
        audit: AuditSink,
        allowed_callers: Collection[str],
        nonces: NoncePool | None = None,
        peers: PeerCommitments | None = None,
    ) -> None:
        self._keys = key_state
        self._guard = guard
        self._audit = audit
        self._allowed = frozenset(allowed_callers)
        # Not `or`: an empty pool (the usual start) is falsy, and would be swapped for another.
        self._nonces = nonces if nonces is not None else NoncePool()
        self._peers = peers if peers is not None else PeerCommitments()
        self.boot_id = os.urandom(16)

    async def GetInfo(
        self, request: signer_pb2.InfoRequest, context: grpc.aio.ServicerContext
    ) -> signer_pb2.InfoResponse:
        await require_peer(context, self._allowed)
        key = await self._key_or_abort(context)
        return signer_pb2.InfoResponse(
            identifier=serialize_scalar(key.share.identifier),
            boot_id=self.boot_id,
            keys=[
                signer_pb2.KeyInfo(
                    kid=held.kid, public_key_package=encode_public_key_package(held.package)
                )
                for held in self._keys.keys
            ],
        )

    async def Commit(
        self, request: signer_pb2.CommitRequest, context: grpc.aio.ServicerContext
    ) -> signer_pb2.CommitResponse:
        await require_peer(context, self._allowed)
        key = await self._key_or_abort(context)  # any key: nonces depend only on the identifier
        count = min(max(request.count, 1), MAX_BATCH)
        self._nonces.expire()
        issued = self._nonces.issue(key.share, count)
        return signer_pb2.CommitResponse(
            boot_id=self.boot_id,
            commitments=[encode_signing_commitment(c) for c in issued],
            ttl_seconds=int(self._nonces.ttl_seconds),
        )

    async def Announce(
        self, request: signer_pb2.AnnounceRequest, context: grpc.aio.ServicerContext
    ) -> signer_pb2.AnnounceResponse:
        await require_peer(context, self._allowed)
        key = await self._key_or_abort(context)
        try:
            accepted = self._peers.announce(request.commitments, key.share.identifier)
        except FrostError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad commitment: {exc}")
            raise
        return signer_pb2.AnnounceResponse(accepted=accepted)

    async def Sign(
        self, request: signer_pb2.SignRequest, context: grpc.aio.ServicerContext
    ) -> signer_pb2.SignResponse:
        """`_sign`, with the caller's request id on this request's log lines and, when tracing,
        in a span that continues the coordinator's (its context comes in the call's metadata)."""
        metadata = tuple(context.invocation_metadata() or ())
        request_id = next((str(v) for k, v in metadata if k == "x-request-id"), "")
        with request_context(request_id):
            if not tracing.enabled():
                return await self._sign(request, context)
            with tracing.span(
                tracing.SIGN_SPAN,
                server=True,
                parent=tracing.context_from(metadata),
                attributes={"keymint.signer": self._identifier_or_zero(), "rpc.method": "Sign"},
            ):
                return await self._sign(request, context)

    def _identifier_or_zero(self) -> int:
        try:
            return self._keys.current.share.identifier
        except NoKey:
            return 0

    async def _sign(
        self, request: signer_pb2.SignRequest, context: grpc.aio.ServicerContext
    ) -> signer_pb2.SignResponse:
        await require_peer(context, self._allowed)
        me = (await self._key_or_abort(context)).share.identifier
        try:
            commitment_list = decode_commitment_list(
                request.commitment_list, known=KnownCommitments(self._nonces, self._peers)
            )
        except FrostError as exc:
            return await self._refuse(context, request, "bad_commitment_list", str(exc))
        # Whatever happens next, every commitment named here is spent at its own signer.
        self._peers.forget(commitment_key(c) for c in commitment_list if c.identifier != me)
        own = next((c for c in commitment_list if c.identifier == me), None)
        nonces = self._nonces.take(commitment_key(own)) if own is not None else None
        if own is None or nonces is None:
            return await self._refuse(
                context,
                request,
                "commitment_unknown",
                "this signer's commitment was never issued by this process, or was already used",
                code=grpc.StatusCode.FAILED_PRECONDITION,
            )
        # The request's record is made durable while the guard and the signing run; a share
        # leaves only after it. A refusal record with the same request_id means none left.
        record = asyncio.ensure_future(
            self._audit.append(
                "sign_request",
                {
                    "request_id": _shown(request.request_id),
                    "message_sha256": hashlib.sha256(request.message).hexdigest(),
                    "signers": [c.identifier for c in commitment_list],
                    # Which of this signer's commitments the share uses: public, never the
                    # nonce behind it. No two records of one signer may name the same one.
                    "commitment_sha256": hashlib.sha256(commitment_key(own)).hexdigest(),
                    "claims": _claims_summary(request.message),
                },
            )
        )
        evidence = (
            GuardEvidence.from_message(request.evidence) if request.HasField("evidence") else None
        )
        try:
            await self._guard.check(request.message, evidence)
        except GuardRefusal as refusal:
            await _settle(record, request)
            return await self._refuse(context, request, f"guard:{refusal.rule}", refusal.detail)
        except Exception as exc:  # a faulty evidence checker refuses: fail closed, on the record
            log.exception("evidence checker fault on request %s", _shown(request.request_id))
            await _settle(record, request)
            return await self._refuse(
                context, request, "guard:checker_fault", f"{type(exc).__name__} in the guard"
            )
        key = self._keys.for_message(request.message)
        if key is None:  # the guard checked the kid; a ceremony dropped the key meanwhile
            await _settle(record, request)
            return await self._refuse(
                context, request, "guard:header_kid", "kid is not a key this signer holds"
            )
        try:
            share = sign(key.share, nonces, request.message, commitment_list)
        except FrostError as exc:
            await _settle(record, request)
            return await self._refuse(context, request, "bad_commitment_list", str(exc))
        try:
            await record
        except Exception as exc:  # no share leaves without its record
            log.error(
                "no share for request %s: its record could not be written: %s",
                _shown(request.request_id),
                exc,
            )
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"{REFUSING_SERVICE} the audit log cannot be written; no share leaves without "
                "its record",
            )
            raise
        return signer_pb2.SignResponse(signature_share=encode_signature_share(share))

    async def _key_or_abort(self, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        try:
            return self._keys.current
        except NoKey as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise

    async def _refuse(
        self,
        context: grpc.aio.ServicerContext,
        request: signer_pb2.SignRequest,
        rule: str,
        detail: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED,
    ) -> signer_pb2.SignResponse:
        request_id = _shown(request.request_id)
        log.warning("refused request %s: %s: %s", request_id, rule, _shown(detail))
        try:
            # The log scrubs what the request put in these values; it never drops the record
            # for their content. Only a failing disk can, and then the refusal still stands.
            await self._audit.append(
                "refusal",
                {
                    "request_id": request_id,
                    "rule": rule,
                    "detail": detail,
                    "message_sha256": hashlib.sha256(request.message).hexdigest(),
                },
            )
        except Exception:
            log.exception("the refusal of request %s could not be recorded", request_id)
        await context.abort(code, f"{rule}: {detail}")
        raise SignerError("unreachable: abort raises")


MAX_SHOWN = 256  # characters of a caller's free text (request id, refusal detail) in a record


def _shown(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."


async def _settle(record: asyncio.Future[object], request: signer_pb2.SignRequest) -> None:
    """Wait for the request's record on the way to a refusal: if it failed, say so and go on,
    since the refusal record that follows is the one that must be written."""
    try:
        await record
    except Exception:
        log.exception("the record of request %s could not be written", _shown(request.request_id))


def _claims_summary(message: bytes) -> dict[str, object]:
    """Who and what the message is for (jti, sub, aud, exp; or the kid a key endorsement
    endorses), as it claims; never the token.

    Total: a message that does not parse, however it fails, is summarised as unparseable (the
    guard refuses it next, and that refusal must be recorded too)."""
    try:
        claims = parse_signing_input(message).claims
    except TokenFormatError as exc:
        return {"unparseable": exc.reason}
    except Exception as exc:
        return {"unparseable": type(exc).__name__}
    summary: dict[str, object] = {
        k: _shown(v) if isinstance(v, str) else v
        for k in ("jti", "sub", "aud", "exp")
        if isinstance(v := claims.get(k), str | int)
    }
    key = claims.get("key")
    if isinstance(key, dict) and isinstance(key.get("kid"), str):
        summary["endorses"] = key["kid"][:64]
    return summary
