"""The fuzz targets: what each feeds its input to, and which exceptions are its documented refusals.

A target runs one input. It may end normally, or raise one of its `refusals` (the documented way
that code says no); anything else it raises, an assertion of an oracle included, is a crash.

- check_request: CheckRequest bytes -> Pipeline.check. Refusals: protobuf's DecodeError (gRPC
  parses before keymint sees anything); the pipeline itself must always answer.
- xfcc: an x-forwarded-client-cert value -> parse_xfcc, XfccIdentifier. Refusals: IdentityError.
- jwt_identity: a bearer token -> the verifier of every issuer in the world (GitHub's RS256, and
  one issuer of each other preset: Kubernetes ES256, GitLab RS256, JWT-SVIDs ES256/ES384, an OIDC
  IdP ES256/PS256/EdDSA; the token's `iss`, or its SPIFFE ID, picks the issuer), keymint's
  own-token verifier and the unverified reader. Refusals: IdentityError.
- jwt_signer: a signing input, an endorsement, an endorsement chain or a trust root -> the signer's
  parsers and the endorsement guard. Refusals: TokenFormatError, EndorsementFormatError,
  EndorsementError, GuardRefusal.
- token_form: Content-Type, query string and body -> parse_exchange. Refusals: ExchangeError.
- sign_request: SignRequest bytes -> SignerService.Sign with the guard composed with the gateway's
  evidence checker. Refusals: DecodeError, and an abort with PERMISSION_DENIED or
  FAILED_PRECONDITION (the Sign RPC's documented refusals; INTERNAL or any exception is a crash).
- ceremony: Begin, Deal, Stage, Commit and Abort messages -> Participant, resumed in the phase each
  step needs. Refusals: DecodeError, SignerError (CeremonyError, CheatingParticipant, FrostError:
  what the ceremony servicer turns into FAILED_PRECONDITION or ABORTED).
- frost_encoding: any FROST or ceremony wire encoding -> its decoder. Refusals: FrostError
  (EncodingError and the rest), CeremonyError (unreadable ceremony parameters).

Oracles besides "no other exception":
- check_request: the answer is a CheckResponse; a denial is 401, 403 or 429 (never the 503
  `internal_error` the pipeline's last net gives an unexpected exception, nor a quorum 503: the
  signer here is always there); an allow carries a token that verifies under the group key.
- xfcc: what parses re-parses to the same elements once serialised back.
- jwt_identity: OwnTokenVerifier.key_for never raises, and names no key but the group's.
- token_form: an accepted form has a subject token and well-formed scopes.
- sign_request: a share is given only for a keymint token (or endorsement) of this issuer and
  group key.
- frost_encoding: decode(encode(x)) == x for whatever decodes.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.protobuf.message import DecodeError

from extauthz.identity import ALLOWED_ALGORITHMS, IdentityError, TrustedProxies, XfccIdentifier
from extauthz.identity._jws import read_unverified
from extauthz.identity.xfcc import XfccElement, parse_xfcc
from extauthz.server.token_exchange import ExchangeError, parse_exchange
from fuzz import world
from signer.ceremony.errors import CeremonyError
from signer.ceremony.wire import (
    CeremonyParameters,
    decode_round1_package,
    decode_vss_commitment,
    encode_round1_package,
    encode_vss_commitment,
)
from signer.endorsement import (
    EndorsementError,
    EndorsementFormatError,
    TrustRoot,
    read_endorsement,
    verify_chain,
)
from signer.endorsement_guard import check_endorsement
from signer.errors import SignerError
from signer.frost import FrostError, commit
from signer.frost import encoding as enc
from signer.guard import GuardRefusal
from signer.keystate import KeyState, SigningKey
from signer.proto import ceremony_pb2 as cpb
from signer.proto import signer_pb2
from signer.token import TokenFormatError, kid_for, parse_signing_input

_LOOP = asyncio.new_event_loop()


def _run(coroutine: Any) -> Any:
    return _LOOP.run_until_complete(coroutine)


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    refusals: tuple[type[BaseException], ...]
    max_len: int = 8192


# --- check_request ------------------------------------------------------------------------------

ALLOWED_DENIALS = frozenset({401, 403, 429})


def _check_request() -> Target:
    pipeline = world.pipeline()
    group_key = world.frost_group()[1].group_public_key

    def run(data: bytes) -> None:
        request = CheckRequest.FromString(data)
        response = _run(pipeline.check(request))
        assert isinstance(response, CheckResponse)
        if response.status.code == 0:
            _assert_minted(response, group_key)
            return
        status = response.denied_response.status.code
        assert status in ALLOWED_DENIALS, f"denied with {status}: {response.denied_response.body}"

    return Target("check_request", run, (DecodeError,), max_len=32768)


def _assert_minted(response: CheckResponse, group_key: bytes) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from signer.token import b64url_decode

    (header,) = [h for h in response.ok_response.headers if h.header.key == "authorization"]
    token = header.header.value.removeprefix("Bearer ")
    signing_input, _, signature = token.rpartition(".")
    public = Ed25519PublicKey.from_public_bytes(group_key)
    public.verify(b64url_decode(signature), signing_input.encode())


# --- xfcc ---------------------------------------------------------------------------------------


def _serialise(element: XfccElement) -> str:
    pairs = [
        (key, value)
        for key, value in (
            ("By", element.by),
            ("Hash", element.hash),
            ("Cert", element.cert),
            ("Chain", element.chain),
            ("Subject", element.subject),
        )
        if value is not None
    ]
    pairs += [("URI", u) for u in element.uris] + [("DNS", d) for d in element.dns]
    return ";".join(f'{k}="{v.replace(chr(34), chr(92) + chr(34))}"' for k, v in pairs)


def _xfcc() -> Target:
    identifier = XfccIdentifier(
        trusted_proxies=TrustedProxies.parse([world.PROXY_ID]), certificates=world.certificates()
    )

    def run(data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        try:
            elements = parse_xfcc(text)
        except IdentityError:
            elements = None
        # The format cannot quote a value that ends in a backslash: only the others round-trip.
        if (
            elements is not None
            and "\\" not in repr(elements)
            and all(_serialise(e) for e in elements)  # unknown keys only: nothing to write back
        ):
            again = parse_xfcc(",".join(_serialise(e) for e in elements))
            assert again == elements, (elements, again)
        identifier.forwarded_certificate(text, world.PROXY_ID)
        identifier.forwarded_identity(text, world.PROXY_ID)

    return Target("xfcc", run, (IdentityError,), max_len=16384)


# --- jwt_identity -------------------------------------------------------------------------------


def _jwt_identity() -> Target:
    verifier = world.token_verifier()
    own = world.own_tokens()
    group_key = world.frost_group()[1].group_public_key

    def run(data: bytes) -> None:
        mode, token = data[:1], data[1:].decode("utf-8", "replace")
        if mode == b"o":  # keymint's own token, presented back
            key = own.key_for(token)
            assert key in (None, group_key)
            if key is not None:
                own.verify(token, key, world.DEPLOY, None)
            return
        if mode == b"u":
            read_unverified(token, algorithms=ALLOWED_ALGORITHMS, types=("JWT", "JOSE"))
            return
        _run(verifier.verify(token if mode != b"b" else token.encode("utf-8", "surrogateescape")))

    return Target("jwt_identity", run, (IdentityError,))


# --- jwt_signer ---------------------------------------------------------------------------------


def _jwt_signer() -> Target:
    shares, package = world.frost_group()
    keys = KeyState([SigningKey(shares[0], package)])
    root = TrustRoot(world.KEYMINT_ISSUER, (package.group_public_key,))

    def run(data: bytes) -> None:
        mode, rest = data[:1], data[1:]
        if mode == b"p":
            parse_signing_input(rest)
        elif mode == b"e":
            read_endorsement(rest)
        elif mode == b"g":
            check_endorsement(rest, keys=keys, issuer=world.KEYMINT_ISSUER, now=world.now())
        elif mode == b"c":
            chain = rest.decode("utf-8", "replace").split("\n")
            verify_chain(root, chain)
        else:
            import json

            try:
                document = json.loads(rest)
            except (ValueError, RecursionError):
                return
            TrustRoot.from_document(document)

    return Target(
        "jwt_signer",
        run,
        (TokenFormatError, EndorsementFormatError, EndorsementError, GuardRefusal),
    )


# --- token_form ---------------------------------------------------------------------------------


def _token_form() -> Target:
    def run(data: bytes) -> None:
        # Content-Type, the URL's query string and the body, on lines of their own.
        content_type, _, rest = data.partition(b"\n")
        query, _, body = rest.partition(b"\n")
        request = parse_exchange(
            content_type.decode("latin-1"), body, query.decode("utf-8", "replace")
        )
        assert request.subject_token
        assert all(request.scopes)
        assert len(set(request.scopes)) == len(request.scopes)

    return Target("token_form", run, (ExchangeError,), max_len=20000)


# --- sign_request -------------------------------------------------------------------------------


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code


class FuzzContext:
    """The ServicerContext a Sign call sees: the coordinator as peer; abort raises."""

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [world.coordinator_certificate()]}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Aborted(code, details)


class SignRefused(Exception):
    """A Sign call refused with the status its refusal is documented to have."""


SIGN_REFUSALS = frozenset({grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION})


def _sign_request() -> Target:
    service, nonces = world.signer_service(1)
    shares, package = world.frost_group()
    group_kid = kid_for(package.group_public_key)
    context = FuzzContext()

    def run(data: bytes) -> None:
        flag, rest = data[:1], data[1:]
        request = signer_pb2.SignRequest.FromString(rest)
        if flag == b"c":  # a commitment list this signer issued, so the guard is reached
            own = nonces.issue(shares[0], 1)[0]
            peer = commit(shares[1]).commitment
            request.commitment_list = enc.encode_commitment_list([own, peer])
        try:
            response = _run(service.Sign(request, context))
        except Aborted as aborted:
            if aborted.code in SIGN_REFUSALS:
                raise SignRefused(str(aborted)) from None
            raise
        enc.decode_signature_share(response.signature_share)
        # A share leaves only for a keymint token of this issuer and key (or an endorsement).
        signed = parse_signing_input(request.message)
        assert signed.header.get("kid") == group_kid, signed.header
        assert signed.claims.get("iss") == world.KEYMINT_ISSUER, signed.claims

    return Target("sign_request", run, (DecodeError, SignRefused), max_len=32768)


# --- ceremony -----------------------------------------------------------------------------------


def _ceremony() -> Target:
    flow = world_ceremony()
    begun, dealt, staged = flow.templates

    def run(data: bytes) -> None:
        mode, rest = data[:1], data[1:]
        participant = flow.fresh_participant()
        if mode == b"b":
            participant.begin(rest)
            return
        cid = flow.params.ceremony_id
        if mode == b"d":
            participant._sessions = {cid: copy.copy(begun)}
            participant.deal(cid, cpb.DealRequest.FromString(rest).announcements)
        elif mode == b"s":
            participant._sessions = {cid: copy.copy(dealt)}
            request = cpb.StageRequest.FromString(rest)
            request.ceremony_id = cid
            participant.stage(request)
        elif mode == b"c":
            participant._sessions = {cid: copy.copy(staged)}
            participant.commit(cid, cpb.CommitRequest.FromString(rest).confirmations)
        else:
            participant._sessions = {cid: copy.copy(begun)}
            participant.abort(rest[:16], 0, rest[16:].decode("utf-8", "replace"))

    return Target("ceremony", run, (DecodeError, SignerError), max_len=65536)


def world_ceremony() -> Any:
    from fuzz.ceremony import CeremonyFlow

    return CeremonyFlow.run()


# --- frost_encoding -----------------------------------------------------------------------------

_DECODERS: list[tuple[Callable[[bytes], Any], Callable[[Any], bytes]]] = [
    (enc.decode_key_share, enc.encode_key_share),
    (enc.decode_public_key_package, enc.encode_public_key_package),
    (enc.decode_signing_commitment, enc.encode_signing_commitment),
    (enc.decode_commitment_list, enc.encode_commitment_list),
    (enc.decode_signature_share, enc.encode_signature_share),
    (decode_round1_package, encode_round1_package),
    (decode_vss_commitment, encode_vss_commitment),
    (CeremonyParameters.decode, CeremonyParameters.encode),
]


def _frost_encoding() -> Target:
    def run(data: bytes) -> None:
        if not data:
            return
        decode, encode = _DECODERS[data[0] % len(_DECODERS)]
        value = decode(data[1:])
        assert decode(encode(value)) == value

    return Target("frost_encoding", run, (FrostError, CeremonyError))


TARGETS: dict[str, Callable[[], Target]] = {
    "check_request": _check_request,
    "xfcc": _xfcc,
    "jwt_identity": _jwt_identity,
    "jwt_signer": _jwt_signer,
    "token_form": _token_form,
    "sign_request": _sign_request,
    "ceremony": _ceremony,
    "frost_encoding": _frost_encoding,
}


def _canary() -> Target:
    """Not run by default: it crashes on purpose, to show the runner counts crashes."""

    def run(data: bytes) -> None:
        if data.startswith(b"crash"):
            raise RuntimeError("the canary crashed, as it should")
        if data.startswith(b"refuse"):
            raise ValueError("a documented refusal")

    return Target("canary", run, (ValueError,), max_len=64)


HIDDEN: dict[str, Callable[[], Target]] = {"canary": _canary}

__all__ = ["HIDDEN", "TARGETS", "Target"]
