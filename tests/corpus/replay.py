"""Replaying a case against the running stack: through the front Envoy, and directly against the
gateway's Check port, its `/token`, a signer's Sign RPC and the signers' KeyCeremony RPCs.

Each replay returns what was observed (`Observed`), in the same terms as a case's expected
outcome. Every call runs on the stack's background event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from envoy.config.core.v3.address_pb2 import Address, SocketAddress
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from extauthz.config import GatewaySettings
from extauthz.dev.calls import envoy_channel
from extauthz.dev.envoy import FRONT_HOSTNAME, FRONT_LISTENER
from extauthz.dev.github import b64url
from extauthz.dev.settings import ISSUER
from extauthz.dev.stack import LocalStack
from extauthz.model import Identity, Route
from extauthz.policy import AuthzRequest, Denial
from extauthz.server.app import build_identifier, build_policy_engine
from extauthz.server.claims import confirmation_claim, provenance_claims
from extauthz.server.mint import evidence_message
from signer.ceremony.service import CULPRIT_METADATA
from signer.ceremony.wire import CEREMONY_ID_SIZE, CeremonyKind, CeremonyParameters
from signer.devca import signer_name
from signer.endorsement import TrustRoot, endorsement_message
from signer.frost import SigningCommitment, trusted_dealer_keygen
from signer.frost.encoding import (
    decode_signature_share,
    decode_signing_commitment,
    encode_commitment_list,
)
from signer.frost.group import random_scalar, scalar_base_mult
from signer.proto import ceremony_pb2 as cpb
from signer.proto import ceremony_pb2_grpc, signer_pb2, signer_pb2_grpc
from signer.tls import secure_channel
from signer.token import header_for, parse_signing_input, signing_input
from tests.corpus.build import Builder, Chain, evaluate

PROXY_ID = "spiffe://prod.test/ns/edge/sa/proxy"  # KEYMINT_TRUSTED_PROXIES of the corpus stack
REVOKED_SUBJECT = "spiffe://prod.test/ns/shop/sa/revoked"  # in every signer's revocation list
ROUTE_PATHS = {"deploy": "/deploy/v1/things", "orders": "/orders/v1/things"}
SIGNERS = (1, 2, 3)


@dataclass(frozen=True)
class Observed:
    status: int | str | None = None
    reason: str | None = None
    detail: str | None = None
    culprit: int | None = None
    handshake: str | None = None
    seen: str = ""  # what came back, for the failure message


class Corpus:
    """The stack and everything needed to replay cases against it."""

    def __init__(self, stack: LocalStack, work: Path) -> None:
        self.stack = stack
        self.work = work
        self.builder = Builder(
            issuer=stack.issuer, root=stack.ca, keymint_token=self._keymint_token
        )
        self.proxy = self.builder.certificate({"uris": [PROXY_ID]})
        self._check: grpc.aio.Channel | None = None  # made on the loop that uses it
        self.settings = GatewaySettings.from_env(stack.gateway.env)
        self._session: aiohttp.ClientSession | None = None
        self._channels: dict[tuple[str, int], grpc.aio.Channel] = {}
        self._files = 0

    def run(self, coroutine: Awaitable[Any], timeout: float = 60.0) -> Any:
        async def wrapped() -> Any:
            return await coroutine

        return self.stack.background.run(wrapped(), timeout)

    def close(self) -> None:
        async def close() -> None:
            if self._check is not None:
                await self._check.close()
            for channel in self._channels.values():
                await channel.close()
            if self._session is not None:
                await self._session.close()

        self.run(close())

    # --- check ------------------------------------------------------------------------------

    def _caller(self, spec: Mapping[str, Any]) -> tuple[dict[str, str], Chain | None]:
        """The request's headers and the client certificate the caller presents."""
        headers = {str(k): str(v) for k, v in evaluate(dict(spec.get("headers") or {})).items()}
        if "bearer" in spec:
            scheme = spec.get("scheme", "Bearer")
            headers["authorization"] = f"{scheme} {self.builder.token(spec['bearer'])}"
        for i in range(int(spec.get("many_headers", 0))):
            headers[f"x-many-{i}"] = "v"
        certificates = {
            name: self.builder.certificate(c)
            for name, c in (spec.get("certificates") or {}).items()
        }
        if "xfcc" in spec:
            headers["x-forwarded-client-cert"] = self.builder.xfcc(spec["xfcc"], certificates)
        chain = None
        if spec.get("peer") == "trusted_proxy":
            chain = self.proxy
        elif "certificate" in spec:
            chain = self.builder.certificate(spec["certificate"])
        return headers, chain

    def check_through_envoy(self, spec: Mapping[str, Any]) -> Observed:
        headers, chain = self._caller(spec)
        path = str(evaluate(spec.get("path") or ROUTE_PATHS[spec.get("route", "deploy")]))
        method = spec.get("method", "GET")
        if spec.get("raw_headers") or spec.get("raw"):
            return self.run(self._raw(method, path, headers, spec.get("raw_headers", []), chain))
        return self.run(self._front(method, path, headers, None, chain))

    def check_direct(self, spec: Mapping[str, Any]) -> Observed:
        headers, chain = self._caller(spec)
        for line in spec.get("raw_headers") or []:
            name, _, value = str(evaluate(line)).partition(":")
            headers[name.strip().lower()] = value.strip()
        route = spec.get("route", "deploy")
        path = str(evaluate(spec.get("path") or ROUTE_PATHS[route]))
        source = AttributeContext.Peer(
            address=Address(socket_address=SocketAddress(address="127.0.0.1", port_value=41000))
        )
        if chain is not None:
            source.principal = chain.first_uri
            source.certificate = urllib.parse.quote(chain.leaf_pem.decode(), safe="")
        if "principal" in spec:
            source.principal = spec["principal"]
        if "source_certificate" in spec:
            source.certificate = str(evaluate(spec["source_certificate"]))
        method = spec.get("method", "GET")
        http_headers = {k.lower(): v for k, v in headers.items()}
        http_headers.update({":authority": FRONT_HOSTNAME, ":method": method, ":path": path})
        request = CheckRequest(
            attributes=AttributeContext(
                source=source,
                request=AttributeContext.Request(
                    http=AttributeContext.HttpRequest(
                        method=method,
                        host=FRONT_HOSTNAME,
                        path=path,
                        headers=http_headers,
                        protocol="HTTP/1.1",
                    )
                ),
                context_extensions={"route": route},
            )
        )

        async def call() -> Observed:
            if self._check is None:
                address = f"127.0.0.1:{self.stack.gateway.grpc_port}"
                self._check = envoy_channel(self.stack.directory, address)
            stub = external_auth_pb2_grpc.AuthorizationStub(self._check)
            response = await stub.Check(request, timeout=15)
            if response.status.code == 0:
                return Observed(200, None, seen="OK")
            denied = response.denied_response
            body = json.loads(denied.body)
            return Observed(denied.status.code, body.get("error"), seen=denied.body)

        return self.run(call())

    # --- token ------------------------------------------------------------------------------

    def _form(self, spec: Mapping[str, Any]) -> tuple[dict[str, str], bytes, str]:
        headers = {"content-type": spec.get("content_type", "application/x-www-form-urlencoded")}
        if "body" in spec:
            body = str(evaluate(spec["body"])).encode("utf-8", "surrogateescape")
        else:
            pairs = []
            for name, value in spec.get("form", []):
                if isinstance(value, dict) and "token" in value:
                    value = self.builder.token(value["token"])
                pairs.append((str(name), str(evaluate(value))))
            body = urllib.parse.urlencode(pairs).encode()
        return headers, body, str(spec.get("query", ""))

    def token_through_envoy(self, spec: Mapping[str, Any]) -> Observed:
        headers, body, query = self._form(spec)
        path = "/token" + (f"?{query}" if query else "")
        return self.run(self._front(spec.get("method", "POST"), path, headers, body, None))

    def token_direct(self, spec: Mapping[str, Any]) -> Observed:
        headers, body, query = self._form(spec)
        url = f"http://127.0.0.1:{self.stack.gateway.http_port}/token"
        url += f"?{query}" if query else ""
        return self.run(self._http(spec.get("method", "POST"), url, headers, body, None))

    # --- HTTP plumbing ----------------------------------------------------------------------

    def _context(self, chain: Chain | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.stack.edge_ca))
        if chain is not None:
            self._files += 1
            cert = self.work / f"client-{self._files}.crt"
            key = self.work / f"client-{self._files}.key"
            cert.write_bytes(chain.chain_pem)
            key.write_bytes(chain.key_pem)
            key.chmod(0o600)
            if getattr(chain.key, "key_size", 2048) < 2048:
                # OpenSSL's default security level refuses to present such a key at all; the
                # point is to see what the server does with one.
                context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.load_cert_chain(str(cert), str(key))
        return context

    async def _front(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | None,
        chain: Chain | None,
    ) -> Observed:
        url = f"https://127.0.0.1:{self.stack.front.port(FRONT_LISTENER)}{path}"
        return await self._http(method, url, headers, body, self._context(chain))

    async def _http(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        context: ssl.SSLContext | None,
    ) -> Observed:
        extra: dict[str, Any] = {}
        if context is not None:
            extra = {"ssl": context, "server_hostname": FRONT_HOSTNAME}
        timeout = aiohttp.ClientTimeout(total=20)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(
                    method, url, headers=dict(headers), data=body, allow_redirects=False, **extra
                ) as response,
            ):
                text = (await response.read()).decode("utf-8", "replace")
                return _http_outcome(
                    response.status, response.headers.get("content-type", ""), text
                )
        except (aiohttp.ClientConnectionError, ssl.SSLError) as exc:
            if context is None:
                raise
            return Observed(handshake="refused", seen=f"{type(exc).__name__}: {exc}")

    async def _raw(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        raw_headers: list[str],
        chain: Chain | None,
    ) -> Observed:
        """An HTTP/1.1 request written byte for byte: header lines no client library sends."""
        port = self.stack.front.port(FRONT_LISTENER)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=self._context(chain), server_hostname=FRONT_HOSTNAME
        )
        try:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {FRONT_HOSTNAME}", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            lines += [str(evaluate(line)) for line in raw_headers]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape"))
            await writer.drain()
            response = await asyncio.wait_for(reader.read(), 20)
        finally:
            writer.close()
        head, _, body = response.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        content_type = next(
            (
                h.split(":", 1)[1].strip()
                for h in header_lines
                if h.lower().startswith("content-type:")
            ),
            "",
        )
        return _http_outcome(
            int(status_line.split()[1]), content_type, body.decode("utf-8", "replace")
        )

    # --- keymint's own tokens ---------------------------------------------------------------

    def _keymint_token(self, audience: str) -> str:
        """A fresh keymint token for `audience`, exchanged at the gateway's /token."""
        subject = self.stack.issuer.mint({"jti": str(uuid.uuid4())})
        form = {
            "grant_type": evaluate("$grant_type"),
            "subject_token": subject,
            "subject_token_type": evaluate("$id_token_type"),
            "audience": audience,
        }

        async def exchange() -> str:
            url = f"http://127.0.0.1:{self.stack.gateway.http_port}/token"
            async with aiohttp.ClientSession() as session, session.post(url, data=form) as reply:
                document = await reply.json()
                assert reply.status == 200, document
                return str(document["access_token"])

        # Called from builders, which run on the test's thread: hop onto the loop.
        return self.run(exchange())

    # --- sign -------------------------------------------------------------------------------

    def channel(self, identity: str, signer: int) -> Any:
        """A channel to a signer as `identity` (coordinator or operator), made once."""
        key = (identity, signer)
        if key not in self._channels:
            files = (
                self.stack.cluster.coordinator_tls
                if identity == "coordinator"
                else self.stack.cluster.operator_tls
            )
            address = self.stack.cluster.signers[signer].address
            self._channels[key] = secure_channel(address, files, signer_name(signer))
        return self._channels[key]

    async def _identity(self, spec: Mapping[str, Any]) -> tuple[Identity, Route]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        identifier = build_identifier(self.settings, self._session, time.time)
        if spec.get("credential", "oidc") == "oidc":
            assert identifier.oidc is not None
            token = self.builder.token(spec.get("token") or {})
            route = Route(FRONT_HOSTNAME, ROUTE_PATHS["deploy"], "GET", {"route": "deploy"})
            return await identifier.oidc.verify(token), route
        assert identifier.certificates is not None
        chain = self.builder.certificate(
            {"uris": [f"spiffe://prod.test{spec.get('svid_path', '/ns/shop/sa/web')}"]}
        )
        route = Route(FRONT_HOSTNAME, ROUTE_PATHS["orders"], "GET", {"route": "orders"})
        return identifier.certificates.verify_pem(chain.leaf_pem), route

    async def _honest(
        self, spec: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], signer_pb2.Evidence]:
        """The header, claims and evidence an honest gateway sends for this caller."""
        identity, route = await self._identity(spec)
        engine = build_policy_engine(self.settings)[0]
        request = AuthzRequest(identity, route)
        snapshot = engine.snapshot()
        grant = engine.evaluate(request, snapshot)
        assert not isinstance(grant, Denial), grant
        now = int(time.time())
        ttl = min(grant.ttl_seconds, 900, identity.expires_at - now)
        claims: dict[str, Any] = {
            **provenance_claims(identity),
            "iss": ISSUER,
            "sub": identity.subject,
            "aud": grant.audience,
            "scope": " ".join(grant.scopes),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": str(uuid.uuid4()),
        }
        if (cnf := confirmation_claim(identity)) is not None:
            claims["cnf"] = cnf
        header = dict(header_for(self.stack_group_key()))
        return header, claims, evidence_message(request, snapshot.digest)

    def _endorsement(self, spec: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """An endorsement by the group key of `endorses`: the group key itself, or a key no
        signer holds."""
        group = self.stack_group_key()
        endorsed = group
        if spec.get("endorses") == "unknown_key":
            endorsed = (
                Ed25519PrivateKey.generate()
                .public_key()
                .public_bytes(Encoding.Raw, PublicFormat.Raw)
            )
        message = endorsement_message(group, endorsed, issuer=ISSUER, issued_at=int(time.time()))
        parsed = parse_signing_input(message)
        return dict(parsed.header), dict(parsed.claims)

    def stack_group_key(self) -> bytes:
        root = json.loads(Path(self.stack.env["KEYMINT_TRUST_ROOT"]).read_text())
        return TrustRoot.from_document(root).keys[0]

    def sign_direct(self, spec: Mapping[str, Any]) -> Observed:
        return self.run(self._sign(spec))

    async def _sign(self, spec: Mapping[str, Any]) -> Observed:
        if "endorsement" in spec:
            header, claims = self._endorsement(spec["endorsement"])
            evidence = signer_pb2.Evidence()
            spec = {**spec, "no_evidence": True}
        else:
            header, claims, evidence = await self._honest(spec)
        for name, value in evaluate(dict(spec.get("header") or {})).items():
            header.pop(name, None) if value is None else header.__setitem__(name, value)
        for name, value in evaluate(dict(spec.get("claims") or {})).items():
            claims.pop(name, None) if value is None else claims.__setitem__(name, value)
        if "raw_message" in spec:
            message = str(evaluate(spec["raw_message"])).encode("utf-8", "surrogateescape")
        elif spec.get("noncanonical"):
            message = _noncanonical(header, claims)
        else:
            message = signing_input(header, claims)
        _change_evidence(evidence, evaluate(dict(spec.get("evidence") or {})))
        request_id = str(claims.get("jti", "")) or f"corpus-{uuid.uuid4()}"
        request = signer_pb2.SignRequest(message=message, request_id=request_id)
        if not spec.get("no_evidence"):
            request.evidence.CopyFrom(evidence)
        target, partner = int(spec.get("signer", 1)), int(spec.get("partner", 2))
        caller = spec.get("caller", "coordinator")
        commitments = spec.get("commitments", "fresh")
        observed = Observed()
        for attempt in range(int(spec.get("repeat", 1))):
            fresh = replace_jti(request, attempt) if attempt else request
            fresh.commitment_list = await self._commitment_list(commitments, target, partner)
            observed = await self._call_sign(caller, target, fresh)
            if commitments == "replayed":
                observed = await self._call_sign(caller, target, fresh)
        return observed

    async def _commitment_list(self, kind: str, target: int, partner: int) -> bytes:
        if kind == "garbage":
            return b"KMF\x01\x05 this is not a commitment list"
        own = await self._commit(target)
        other = await self._commit(partner)
        if kind == "unknown":  # well formed, for this signer, but never issued by it
            own = SigningCommitment(
                own.identifier,
                scalar_base_mult(random_scalar(os.urandom)),
                scalar_base_mult(random_scalar(os.urandom)),
            )
        if kind == "without_own":
            third = next(i for i in SIGNERS if i not in (target, partner))
            listed = [other, await self._commit(third)]
        elif kind == "duplicated":
            listed = [own, own, other]
        else:
            listed = [own, other]
        if kind != "duplicated":
            listed.sort(key=lambda c: c.identifier)
        return encode_commitment_list(listed)

    async def _commit(self, signer: int) -> SigningCommitment:
        stub = signer_pb2_grpc.SignerStub(self.channel("coordinator", signer))  # type: ignore[no-untyped-call]
        response = await stub.Commit(signer_pb2.CommitRequest(count=1), timeout=10)
        return decode_signing_commitment(response.commitments[0])

    async def _call_sign(
        self, caller: str, target: int, request: signer_pb2.SignRequest
    ) -> Observed:
        stub = signer_pb2_grpc.SignerStub(self.channel(caller, target))  # type: ignore[no-untyped-call]
        try:
            response = await stub.Sign(request, timeout=15)
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            return Observed(exc.code().name, _sign_reason(details), seen=details)
        share = decode_signature_share(response.signature_share)
        return Observed("OK", None, seen=f"a signature share from participant {share.identifier}")

    # --- ceremony ---------------------------------------------------------------------------

    def ceremony_direct(self, spec: Mapping[str, Any]) -> Observed:
        scenario = SCENARIOS[spec["scenario"]]
        return self.run(Ceremony(self, spec).play(scenario))


def replace_jti(request: signer_pb2.SignRequest, attempt: int) -> signer_pb2.SignRequest:
    """The same request with a new jti in its claims (a repeat is another token)."""
    parsed = parse_signing_input(request.message)
    claims = {**parsed.claims, "jti": f"{parsed.claims.get('jti')}-{attempt}"}
    fresh = signer_pb2.SignRequest()
    fresh.CopyFrom(request)
    fresh.message = signing_input(parsed.header, claims)
    fresh.request_id = claims["jti"]
    return fresh


def _noncanonical(header: Mapping[str, Any], claims: Mapping[str, Any]) -> bytes:
    parts = [b64url(json.dumps(p, indent=1).encode()) for p in (header, claims)]
    return ".".join(parts).encode()


def _change_evidence(evidence: signer_pb2.Evidence, changes: Mapping[str, Any]) -> None:
    for name, value in changes.items():
        if name == "value" and value == "tampered":
            raw = bytearray(evidence.value)
            raw[len(raw) // 2] ^= 0x01
            evidence.value = bytes(raw)
        elif name in ("context_extensions", "headers"):
            target = getattr(evidence, name)
            for key, item in value.items():
                target[key] = item
        elif name == "requested_scopes":
            del evidence.requested_scopes[:]
            evidence.requested_scopes.extend(value)
        else:
            setattr(evidence, name, value)


def _sign_reason(details: str) -> str:
    if details.startswith("guard:"):
        return details.split(":", 2)[1]
    head = details.split(":", 1)[0]
    if head.isidentifier():
        return head
    if "is not authorized" in details:
        return "caller_not_authorized"
    return details


def _http_outcome(status: int, content_type: str, text: str) -> Observed:
    """The status, and of a JSON denial its `error` and (OAuth's, at /token) `error_description`."""
    reason = detail = None
    if status != 200 and content_type.startswith("application/json"):
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if isinstance(document, dict):
            reason, detail = document.get("error"), document.get("error_description")
    return Observed(status, reason, detail, seen=text[:300])


# --- ceremonies -------------------------------------------------------------------------------


class Ceremony:
    """One ceremony scenario, against the real signers, as an operator (or whoever `caller` is)
    driving it by hand; every ceremony it begins is aborted on every signer afterwards."""

    def __init__(self, corpus: Corpus, spec: Mapping[str, Any]) -> None:
        self.corpus = corpus
        self.spec = spec
        self.caller = spec.get("caller", "operator")
        self.begun: list[bytes] = []

    def stub(self, signer: int) -> Any:
        channel = self.corpus.channel(self.caller, signer)
        return ceremony_pb2_grpc.KeyCeremonyStub(channel)  # type: ignore[no-untyped-call]

    async def play(self, scenario: Callable[[Ceremony], Awaitable[None]]) -> Observed:
        try:
            await scenario(self)
        except grpc.aio.AioRpcError as exc:
            culprit = dict(exc.trailing_metadata() or ()).get(CULPRIT_METADATA)
            return Observed(
                exc.code().name,
                detail=exc.details(),
                culprit=int(culprit) if culprit else None,
                seen=f"{exc.code().name}: {exc.details()}",
            )
        finally:
            await self.abort_all()
        return Observed("OK", seen="every step was accepted")

    async def abort_all(self) -> None:
        for ceremony_id in self.begun:
            for signer in SIGNERS:
                stub = ceremony_pb2_grpc.KeyCeremonyStub(self.corpus.channel("operator", signer))  # type: ignore[no-untyped-call]
                await stub.Abort(cpb.AbortRequest(ceremony_id=ceremony_id, reason="corpus"))

    def parameters(self, **changes: Any) -> CeremonyParameters:
        defaults: dict[str, Any] = {
            "ceremony_id": os.urandom(CEREMONY_ID_SIZE),
            "kind": CeremonyKind.DKG,
            "min_participants": 2,
            "dealers": SIGNERS,
            "recipients": SIGNERS,
        }
        params = CeremonyParameters(**{**defaults, **changes})
        self.begun.append(params.ceremony_id)
        return params

    async def begin(
        self, params: CeremonyParameters, on: tuple[int, ...] = SIGNERS
    ) -> dict[int, cpb.SignedStatement]:
        encoded = params.encode()
        out = {}
        for signer in on:
            response = await self.stub(signer).Begin(
                cpb.BeginRequest(parameters=encoded), timeout=15
            )
            out[signer] = response.announcement
        return out

    async def deal(
        self, params: CeremonyParameters, signer: int, statements: list[cpb.SignedStatement]
    ) -> list[cpb.SealedShare]:
        response = await self.stub(signer).Deal(
            cpb.DealRequest(ceremony_id=params.ceremony_id, announcements=statements), timeout=15
        )
        return list(response.shares)

    async def stage(
        self,
        params: CeremonyParameters,
        signer: int,
        statements: list[cpb.SignedStatement],
        shares: list[cpb.SealedShare],
    ) -> cpb.SignedStatement:
        response = await self.stub(signer).Stage(
            cpb.StageRequest(
                ceremony_id=params.ceremony_id, announcements=statements, shares=shares
            ),
            timeout=15,
        )
        return response.confirmation

    async def dealt(
        self, params: CeremonyParameters
    ) -> tuple[dict[int, cpb.SignedStatement], dict[int, list[cpb.SealedShare]]]:
        """Round one and two of a DKG among every signer: announcements, and the sealed shares
        addressed to each recipient."""
        announcements = await self.begin(params)
        statements = [announcements[i] for i in SIGNERS]
        inbox: dict[int, list[cpb.SealedShare]] = {i: [] for i in SIGNERS}
        for dealer in SIGNERS:
            for share in await self.deal(params, dealer, statements):
                inbox[share.recipient].append(share)
        return announcements, inbox


def _altered(statement: cpb.SignedStatement, **changes: Any) -> cpb.SignedStatement:
    copy = cpb.SignedStatement()
    copy.CopyFrom(statement)
    for name, value in changes.items():
        setattr(copy, name, value)
    return copy


def _flip(data: bytes) -> bytes:
    raw = bytearray(data)
    raw[len(raw) // 2] ^= 0x01
    return bytes(raw)


async def _begin_garbage(c: Ceremony) -> None:
    await c.stub(1).Begin(cpb.BeginRequest(parameters=b"\x08\x02garbage\xff\xff"), timeout=15)


async def _begin(c: Ceremony) -> None:
    await c.begin(c.parameters(**_params(c.spec)), on=(1,))


async def _begin_replayed(c: Ceremony) -> None:
    params = c.parameters()
    await c.begin(params, on=(1,))
    await c.begin(params, on=(1,))


async def _begin_reshare_of_a_key_not_held(c: Ceremony) -> None:
    _, package, _ = trusted_dealer_keygen(2, 3)
    params = c.parameters(kind=CeremonyKind.RESHARE, dealers=(1, 2), old_package=package)
    await c.begin(params, on=(1,))


async def _deal_unknown(c: Ceremony) -> None:
    params = c.parameters()
    await c.deal(params, 1, [])


async def _stage_before_deal(c: Ceremony) -> None:
    params = c.parameters()
    announcements = await c.begin(params)
    await c.stage(params, 1, [announcements[i] for i in SIGNERS], [])


async def _commit_before_stage(c: Ceremony) -> None:
    params = c.parameters()
    await c.begin(params)
    await c.stub(1).Commit(cpb.CommitRequest(ceremony_id=params.ceremony_id), timeout=15)


async def _deal_after_abort(c: Ceremony) -> None:
    params = c.parameters()
    announcements = await c.begin(params)
    await c.stub(1).Abort(cpb.AbortRequest(ceremony_id=params.ceremony_id), timeout=15)
    await c.deal(params, 1, [announcements[i] for i in SIGNERS])


async def _deal_with(
    c: Ceremony,
    forge: Callable[
        [Ceremony, CeremonyParameters, dict[int, cpb.SignedStatement]],
        Awaitable[list[cpb.SignedStatement]],
    ],
) -> None:
    params = c.parameters()
    announcements = await c.begin(params)
    statements = await forge(c, params, announcements)
    await c.deal(params, 1, statements)


async def _forged_body(
    c: Ceremony, _: CeremonyParameters, a: dict[int, cpb.SignedStatement]
) -> list[cpb.SignedStatement]:
    return [a[1], _altered(a[2], body=_flip(a[2].body)), a[3]]


async def _other_ceremony(
    c: Ceremony, _: CeremonyParameters, a: dict[int, cpb.SignedStatement]
) -> list[cpb.SignedStatement]:
    other = await c.begin(c.parameters(), on=(2,))
    return [a[1], other[2], a[3]]


async def _claims_another_signer(
    c: Ceremony, _: CeremonyParameters, a: dict[int, cpb.SignedStatement]
) -> list[cpb.SignedStatement]:
    # Signer 3's statement relabelled as signer 2's: its certificate names signer 3.
    return [a[1], _altered(a[3], signer=2), a[3]]


async def _own_altered(
    c: Ceremony, _: CeremonyParameters, a: dict[int, cpb.SignedStatement]
) -> list[cpb.SignedStatement]:
    return [_altered(a[1], signature=_flip(a[1].signature)), a[2], a[3]]


async def _one_missing(
    c: Ceremony, _: CeremonyParameters, a: dict[int, cpb.SignedStatement]
) -> list[cpb.SignedStatement]:
    return [a[1], a[2]]


async def _one_repeated(
    c: Ceremony, _: CeremonyParameters, a: dict[int, cpb.SignedStatement]
) -> list[cpb.SignedStatement]:
    return [a[1], a[2], a[2], a[3]]


async def _stage_redirected_share(c: Ceremony) -> None:
    params = c.parameters()
    announcements, inbox = await c.dealt(params)
    statements = [announcements[i] for i in SIGNERS]
    # The share dealer 3 sealed to signer 2, relabelled as addressed to signer 1.
    stolen = next(s for s in inbox[2] if s.sender == 3)
    shares = [s for s in inbox[1] if s.sender != 3]
    redirected = cpb.SealedShare()
    redirected.CopyFrom(stolen)
    redirected.recipient = 1
    await c.stage(params, 1, statements, [*shares, redirected])


async def _stage_tampered_share(c: Ceremony) -> None:
    params = c.parameters()
    announcements, inbox = await c.dealt(params)
    statements = [announcements[i] for i in SIGNERS]
    shares = list(inbox[1])
    tampered = cpb.SealedShare()
    tampered.CopyFrom(shares[0])
    tampered.ciphertext = _flip(tampered.ciphertext)
    await c.stage(params, 1, statements, [tampered, *shares[1:]])


async def _commit_forged_confirmation(c: Ceremony) -> None:
    params = c.parameters()
    announcements, inbox = await c.dealt(params)
    statements = [announcements[i] for i in SIGNERS]
    confirmations = {i: await c.stage(params, i, statements, inbox[i]) for i in SIGNERS}
    forged = _altered(confirmations[2], body=_flip(confirmations[2].body))
    await c.stub(1).Commit(
        cpb.CommitRequest(
            ceremony_id=params.ceremony_id,
            confirmations=[confirmations[1], forged, confirmations[3]],
        ),
        timeout=15,
    )


async def _commit_confirmation_replayed(c: Ceremony) -> None:
    """Signer 2's confirmation from one ceremony replayed into another: it names the other id."""
    first = c.parameters()
    announcements, inbox = await c.dealt(first)
    statements = [announcements[i] for i in SIGNERS]
    old = await c.stage(first, 2, statements, inbox[2])
    second = c.parameters()
    announcements, inbox = await c.dealt(second)
    statements = [announcements[i] for i in SIGNERS]
    confirmations = {i: await c.stage(second, i, statements, inbox[i]) for i in SIGNERS}
    await c.stub(1).Commit(
        cpb.CommitRequest(
            ceremony_id=second.ceremony_id, confirmations=[confirmations[1], old, confirmations[3]]
        ),
        timeout=15,
    )


def _params(spec: Mapping[str, Any]) -> dict[str, Any]:
    changes = dict(spec.get("parameters") or {})
    if "kind" in changes:
        changes["kind"] = CeremonyKind[changes["kind"]]
        if changes["kind"] is CeremonyKind.DEAL:
            changes["dealers"] = ()
    for name in ("dealers", "recipients"):
        if name in changes:
            changes[name] = tuple(changes[name])
    return changes


SCENARIOS: dict[str, Callable[[Ceremony], Awaitable[None]]] = {
    "begin": _begin,
    "begin_garbage_parameters": _begin_garbage,
    "begin_replayed": _begin_replayed,
    "begin_reshare_of_a_key_not_held": _begin_reshare_of_a_key_not_held,
    "deal_unknown_ceremony": _deal_unknown,
    "deal_after_abort": _deal_after_abort,
    "stage_before_deal": _stage_before_deal,
    "commit_before_stage": _commit_before_stage,
    "deal_forged_announcement": lambda c: _deal_with(c, _forged_body),
    "deal_announcement_from_another_ceremony": lambda c: _deal_with(c, _other_ceremony),
    "deal_announcement_claiming_another_signer": lambda c: _deal_with(c, _claims_another_signer),
    "deal_own_announcement_altered": lambda c: _deal_with(c, _own_altered),
    "deal_announcement_missing": lambda c: _deal_with(c, _one_missing),
    "deal_announcement_repeated": lambda c: _deal_with(c, _one_repeated),
    "stage_redirected_share": _stage_redirected_share,
    "stage_tampered_share": _stage_tampered_share,
    "commit_forged_confirmation": _commit_forged_confirmation,
    "commit_confirmation_replayed": _commit_confirmation_replayed,
}
