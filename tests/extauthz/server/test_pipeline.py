"""The Check pipeline in one process: who a request is from, what the hot cache may serve, and
what a denial tells the caller.

The identity layer, policy engine (JSON and Rego), minter and pipeline are the real ones; only
the FROST quorum is replaced by one Ed25519 key (the group key is an ordinary Ed25519 key), so
each test can make signing succeed, fail, or take its time.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauthz.identity import TrustBundle, TrustedProxies, X509Verifier, XfccIdentifier
from extauthz.policy import (
    AuthzRequest,
    Limits,
    PolicyEngine,
    PolicyStore,
    RegoPolicy,
    ReloadResult,
    RequestAttributes,
    Verdict,
)
from extauthz.policy.engine import PolicySnapshot
from extauthz.policy.loader import compile_policy
from extauthz.server.mint import Minter, MintSettings
from extauthz.server.own_tokens import OwnTokenVerifier
from extauthz.server.pipeline import Identifier, Pipeline, attribute_values
from signer.coordinator import QuorumUnavailable
from signer.proto import signer_pb2
from tests.extauthz.policy import policy_document
from tests.helpers import ManualClock
from tests.helpers.certs import VALID_AT, CertificateAuthority, IssuedCertificate

KEYMINT = "https://keymint.test"
PROXY = "spiffe://prod.test/ns/edge/sa/proxy"
CALLER = "spiffe://prod.test/ns/web/sa/search"
SCOPES = frozenset({"orders:read", "orders:write", "deploy:read", "deploy:write"})

TENANT_RULE = """
package keymint.authz

import rego.v1

default allow := false

allow if input.attributes.request.http.headers["x-tenant"] == "shop"
"""
# Allows only if it cannot see a request id: what the hot cache ignores, a policy cannot read.
BLIND_TO_REQUEST_IDS = """
package keymint.authz

import rego.v1

default allow := false

allow if {
    input.attributes.request.http.headers["x-tenant"] == "shop"
    not input.attributes.request.http.headers["x-request-id"]
    not input.attributes.request.http.headers.traceparent
}
"""
DENY_ALL = """
package keymint.authz

import rego.v1

allow := false
"""


@dataclass(frozen=True)
class Signed:
    signature: bytes
    signers: tuple[int, ...]


@dataclass
class Signer:
    """Stands in for the coordinator: one Ed25519 key, or a failure, after an optional hook."""

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    failure: Exception | None = None
    during: Callable[[], None] | None = None

    @property
    def public_key(self) -> bytes:
        return self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    async def sign(
        self,
        message: bytes,
        *,
        evidence: signer_pb2.Evidence | None = None,
        request_id: str = "",
        timeout: float = 2.0,
    ) -> Signed:
        if self.during is not None:
            self.during()
        if self.failure is not None:
            raise self.failure
        return Signed(self.key.sign(message), (1, 2))


@dataclass
class RecordingAudit:
    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)

    async def append(self, event: str, data: Mapping[str, object] | None = None) -> object:
        self.events.append((event, dict(data or {})))
        return None


class CountingEngine(PolicyEngine):
    """The real engine, counting evaluations: a hot-cache hit evaluates nothing."""

    evaluations = 0

    def judge(self, request: AuthzRequest, snapshot: PolicySnapshot | None = None) -> Verdict:
        self.evaluations += 1
        return super().judge(request, snapshot)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.root("prod.test")


@pytest.fixture(scope="module")
def caller(ca: CertificateAuthority) -> IssuedCertificate:
    return ca.issue_svid(CALLER)


@pytest.fixture(scope="module")
def proxy(ca: CertificateAuthority) -> IssuedCertificate:
    return ca.issue_svid(PROXY)


@pytest.fixture
def loop() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


def engine(rego: RegoPolicy | PolicyStore[RegoPolicy] | None = None) -> CountingEngine:
    # Let the proxy itself read orders, so that taking its identity would be an allow.
    document = policy_document()
    document["bindings"][0]["match"]["ids"].append(PROXY)
    return CountingEngine(
        limits=Limits(SCOPES, 900), policy=compile_policy(document, "test-policy"), rego=rego
    )


def pipeline(
    ca: CertificateAuthority,
    policy: PolicyEngine,
    *,
    signer: Signer | None = None,
    audit: RecordingAudit | None = None,
    trusted_proxies: tuple[str, ...] = (PROXY,),
) -> Pipeline:
    clock = ManualClock(VALID_AT.timestamp())
    signer = signer or Signer()
    certificates = X509Verifier(
        spiffe_bundles=[TrustBundle("prod.test", (ca.certificate,))], clock=clock
    )
    return Pipeline(
        identifier=Identifier(
            certificates=certificates,
            xfcc=XfccIdentifier(
                trusted_proxies=TrustedProxies.parse(trusted_proxies), certificates=certificates
            ),
        ),
        engine=policy,
        minter=Minter(
            settings=MintSettings(issuer=KEYMINT),
            signer=signer,
            group_public_key=lambda: signer.public_key,
            clock=clock,
        ),
        audit=audit,
        own_tokens=OwnTokenVerifier(
            issuer=KEYMINT, group_keys=lambda: [signer.public_key], clock=clock
        ),
        clock=clock,
    )


def encoded(certificate: IssuedCertificate) -> str:
    return urllib.parse.quote(certificate.pem.decode(), safe="")


def check_request(
    *,
    certificate: IssuedCertificate | None = None,
    principal: str = "",
    headers: Mapping[str, str] | None = None,
) -> CheckRequest:
    source = AttributeContext.Peer(principal=principal)
    if certificate is not None:
        source.certificate = encoded(certificate)
    return CheckRequest(
        attributes=AttributeContext(
            source=source,
            request=AttributeContext.Request(
                http=AttributeContext.HttpRequest(
                    method="GET", host="orders.example.com", path="/orders/1", headers=headers
                )
            ),
        )
    )


def from_proxy(
    proxy: IssuedCertificate, caller: IssuedCertificate | None, **headers: str
) -> CheckRequest:
    """Through the trusted proxy: its own certificate on the connection, the caller's in XFCC."""
    if caller is not None:
        headers["x-forwarded-client-cert"] = f'By={PROXY};Cert="{encoded(caller)}"'
    return check_request(certificate=proxy, principal=PROXY, headers=headers)


def subject_of(response: CheckResponse) -> str:
    assert response.status.code == 0, response.denied_response.body
    metadata = response.dynamic_metadata.fields["keymint"].struct_value.fields
    return str(metadata["subject"].string_value)


def denial(response: CheckResponse) -> tuple[int, dict[str, object], dict[str, str]]:
    assert response.status.code != 0
    denied = response.denied_response
    headers = {h.header.key: h.header.value for h in denied.headers}
    return denied.status.code, json.loads(denied.body), headers


# --- who a request is from ----------------------------------------------------------------


def test_trusted_proxy_certificate_never_stands_for_its_callers(
    ca: CertificateAuthority,
    proxy: IssuedCertificate,
    caller: IssuedCertificate,
    loop: asyncio.Runner,
) -> None:
    """Envoy forwards the proxy's own certificate with every request it relays; the caller is
    the XFCC element the proxy appended, and a relay without one is a 401, never the proxy."""
    gateway = pipeline(ca, engine())
    assert subject_of(loop.run(gateway.check(from_proxy(proxy, caller)))) == CALLER
    status, body, headers = denial(loop.run(gateway.check(from_proxy(proxy, None))))
    assert (status, body["error"]) == (401, "certificate_not_forwarded")
    assert f"the trusted proxy {PROXY} forwarded no x-forwarded-client-cert" in str(body["detail"])
    assert "error_description" in headers["www-authenticate"]
    # The same certificate from a peer that is no trusted proxy is that peer's own identity.
    direct = pipeline(ca, engine(), trusted_proxies=())
    assert subject_of(loop.run(direct.check(from_proxy(proxy, caller)))) == PROXY


def minted(response: CheckResponse) -> str:
    assert response.status.code == 0, response.denied_response.body
    (header,) = response.ok_response.headers
    assert header.header.key == "authorization"
    return header.header.value.removeprefix("Bearer ")


def test_a_token_bound_to_the_proxys_certificate_never_passes_for_its_callers(
    ca: CertificateAuthority,
    proxy: IssuedCertificate,
    caller: IssuedCertificate,
    loop: asyncio.Runner,
) -> None:
    """A keymint token presented back passes only with the certificate it is bound to (`cnf`).
    Behind a trusted proxy that is the certificate the proxy forwards, not the proxy's own."""
    signer = Signer()
    direct = pipeline(ca, engine(), signer=signer, trusted_proxies=())
    proxys_token = minted(loop.run(direct.check(check_request(certificate=proxy))))
    gateway = pipeline(ca, engine(), signer=signer)
    stolen = from_proxy(proxy, caller, authorization=f"Bearer {proxys_token}")
    status, body, _ = denial(loop.run(gateway.check(stolen)))
    assert (status, body["error"]) == (401, "invalid_claim")
    assert "bound to a client certificate the request does not present" in str(body["detail"])
    # The caller's own token, bound to the certificate the proxy forwards, passes through.
    callers_token = minted(loop.run(gateway.check(from_proxy(proxy, caller))))
    again = from_proxy(proxy, caller, authorization=f"Bearer {callers_token}")
    assert minted(loop.run(gateway.check(again))) == callers_token
    # Without a forwarded certificate, a bound token has nothing to be bound to.
    status, _, _ = denial(
        loop.run(gateway.check(from_proxy(proxy, None, authorization=f"Bearer {callers_token}")))
    )
    assert status == 401


def test_a_bare_envoy_principal_is_a_401_naming_include_peer_certificate(
    ca: CertificateAuthority, loop: asyncio.Runner
) -> None:
    """A principal without its certificate is the gateway's word: every signer would refuse
    the mint, so it is refused here, saying how to fix it, before any signing round."""
    signer = Signer()
    signer.failure = AssertionError("no signing round for a bare principal")
    gateway = pipeline(ca, engine(), signer=signer)
    status, body, _ = denial(loop.run(gateway.check(check_request(principal=CALLER))))
    assert (status, body["error"]) == (401, "certificate_not_forwarded")
    assert "include_peer_certificate: true" in str(body["detail"])


def test_uri_only_xfcc_from_a_trusted_proxy_is_a_401_naming_cert(
    ca: CertificateAuthority, proxy: IssuedCertificate, loop: asyncio.Runner
) -> None:
    gateway = pipeline(ca, engine())
    request = from_proxy(proxy, None, **{"x-forwarded-client-cert": f"By={PROXY};URI={CALLER}"})
    status, body, _ = denial(loop.run(gateway.check(request)))
    assert (status, body["error"]) == (401, "certificate_not_forwarded")
    assert "must forward the client certificate" in str(body["detail"])


# --- what the hot cache may serve ---------------------------------------------------------


def test_a_cached_allow_is_never_served_where_a_rego_rule_reading_headers_denies(
    ca: CertificateAuthority, caller: IssuedCertificate, loop: asyncio.Runner
) -> None:
    policy = engine(RegoPolicy.compile(TENANT_RULE, "tenant.rego"))
    gateway = pipeline(ca, policy)
    shop = check_request(certificate=caller, headers={"x-tenant": "shop"})
    assert subject_of(loop.run(gateway.check(shop))) == CALLER
    assert subject_of(loop.run(gateway.check(shop))) == CALLER  # the same headers: a hit
    assert policy.evaluations == 1
    other = check_request(certificate=caller, headers={"x-tenant": "admin"})
    status, body, _ = denial(loop.run(gateway.check(other)))
    assert (status, body["error"]) == (403, "rego_denied")
    assert policy.evaluations == 2


def test_per_request_headers_neither_reach_rego_nor_defeat_the_hot_cache(
    ca: CertificateAuthority, caller: IssuedCertificate, loop: asyncio.Runner
) -> None:
    policy = engine(RegoPolicy.compile(BLIND_TO_REQUEST_IDS, "blind.rego"))
    gateway = pipeline(ca, policy)
    for n in range(5):
        headers = {
            "x-tenant": "shop",
            "x-request-id": f"request-{n}",
            "traceparent": f"00-4bf92f3577b34da6a3ce929d0e0e47{n:02d}-00f067aa0ba902b7-01",
            "x-b3-spanid": f"{n:016x}",
        }
        response = loop.run(gateway.check(check_request(certificate=caller, headers=headers)))
        assert subject_of(response) == CALLER
    assert policy.evaluations == 1


def test_without_rego_headers_stay_out_of_the_hot_cache_key(
    ca: CertificateAuthority, caller: IssuedCertificate, loop: asyncio.Runner
) -> None:
    """The JSON policy reads no header, so none may split the cache."""
    policy = engine()
    gateway = pipeline(ca, policy)
    for tenant in ("shop", "admin", "x"):
        request = check_request(certificate=caller, headers={"x-tenant": tenant})
        assert subject_of(loop.run(gateway.check(request))) == CALLER
    assert policy.evaluations == 1


def test_a_decision_overtaken_by_a_policy_reload_is_not_cached(
    ca: CertificateAuthority, caller: IssuedCertificate, loop: asyncio.Runner, tmp_path: Path
) -> None:
    """A reload while a mint is in flight: the allow decided under the old policy is answered
    once, but never stored for the requests that come after the reload."""
    rego_file = tmp_path / "policy.rego"
    rego_file.write_text(TENANT_RULE)
    flushes: list[Callable[[], None]] = []

    def flush_all(_result: ReloadResult) -> None:
        for flush in flushes:
            flush()

    store = PolicyStore(rego_file, load=RegoPolicy.loader(), on_reload=flush_all)
    signer = Signer()

    def reload_to_deny_all() -> None:
        signer.during = None
        rego_file.write_text(DENY_ALL)
        store.reload()

    signer.during = reload_to_deny_all
    gateway = pipeline(ca, engine(store), signer=signer)
    flushes.append(gateway.hot.clear)
    request = check_request(certificate=caller, headers={"x-tenant": "shop"})
    assert subject_of(loop.run(gateway.check(request))) == CALLER  # decided before the reload
    status, body, _ = denial(loop.run(gateway.check(request)))
    assert (status, body["error"]) == (403, "rego_denied")


AMOUNT_RULE = """
package envoy.authz

import rego.v1

default allow := false

allow if {
    input.parsed_body.amount < 100
    input.attributes.source.address.socketAddress.address == "10.0.0.1"
}
"""
# Allows only while it cannot tell one request from the next.
BLIND_TO_REQUEST_VALUES = """
package envoy.authz

import rego.v1

default allow := false

allow if {
    not input.attributes.request.http.id
    not input.attributes.request.time
    not input.attributes.source.address.socketAddress.portValue
}
"""
SEES_REQUEST_VALUES = """
package envoy.authz

import rego.v1

default allow := false

allow if {
    startswith(input.attributes.request.http.id, "request-")
    input.attributes.request.time.seconds > 0
    input.attributes.source.address.socketAddress.portValue > 1024
}
"""


def opa_envoy(source: str, *, per_request: bool = False) -> CountingEngine:
    document = policy_document()
    return CountingEngine(
        limits=Limits(SCOPES, 900),
        policy=compile_policy(document, "test-policy"),
        rego=RegoPolicy.compile(source, "envoy.rego", query="envoy/authz/allow"),
        per_request_input=per_request,
    )


def json_post(
    caller: IssuedCertificate, body: str, *, source: str = "10.0.0.1", port: int = 40000, n: int = 0
) -> CheckRequest:
    request = check_request(certificate=caller, headers={"content-type": "application/json"})
    attributes = request.attributes
    attributes.source.address.socket_address.address = source
    attributes.source.address.socket_address.port_value = port
    attributes.request.http.body = body
    attributes.request.http.id = f"request-{n}"
    attributes.request.time.seconds = 1_700_000_000 + n
    return request


def test_the_hot_cache_keys_on_the_body_and_address_a_rego_policy_reads(
    ca: CertificateAuthority, caller: IssuedCertificate, loop: asyncio.Runner
) -> None:
    policy = opa_envoy(AMOUNT_RULE)
    gateway = pipeline(ca, policy)
    small = json_post(caller, '{"amount": 5}')
    assert subject_of(loop.run(gateway.check(small))) == CALLER
    assert subject_of(loop.run(gateway.check(small))) == CALLER
    assert policy.evaluations == 1  # the same body from the same address: a hit
    status, body, _ = denial(loop.run(gateway.check(json_post(caller, '{"amount": 500}'))))
    assert (status, body["error"]) == (403, "rego_denied")
    elsewhere = json_post(caller, '{"amount": 5}', source="10.0.0.2")
    status, body, _ = denial(loop.run(gateway.check(elsewhere)))
    assert (status, body["error"]) == (403, "rego_denied")
    assert policy.evaluations == 3


def test_a_body_that_says_json_and_is_not_is_a_rego_error(
    ca: CertificateAuthority, caller: IssuedCertificate, loop: asyncio.Runner
) -> None:
    gateway = pipeline(ca, opa_envoy(AMOUNT_RULE))
    status, body, _ = denial(loop.run(gateway.check(json_post(caller, '{"amount": '))))
    assert (status, body["error"]) == (403, "rego_error")
    assert str(body["detail"]).startswith("the body is not JSON")


def test_request_ids_times_and_ports_stay_out_unless_the_operator_lets_them_in(
    ca: CertificateAuthority, caller: IssuedCertificate, loop: asyncio.Runner
) -> None:
    blind = opa_envoy(BLIND_TO_REQUEST_VALUES)
    gateway = pipeline(ca, blind)
    for n in range(4):
        request = json_post(caller, "{}", port=40000 + n, n=n)
        assert subject_of(loop.run(gateway.check(request))) == CALLER
    assert blind.evaluations == 1  # nothing per request in the input, nor in the key
    seeing = opa_envoy(SEES_REQUEST_VALUES, per_request=True)
    gateway = pipeline(ca, seeing)
    for n in range(4):
        request = json_post(caller, "{}", port=40000 + n, n=n)
        assert subject_of(loop.run(gateway.check(request))) == CALLER
    assert seeing.evaluations == 4  # each request is its own: decided afresh every time


OBJECT_RULE = """
package envoy.authz

import rego.v1

default allow := {
    "allowed": false,
    "http_status": 401,
    "body": "who are you?",
    "headers": {"www-authenticate": "Basic realm=orders"},
}

allow := {"allowed": true, "headers": {"x-validated-by": "opa"}} if {
    input.attributes.request.http.headers["x-tenant"] == "shop"
}
"""


def test_an_object_decision_answers_envoy_with_its_fields_fresh_and_from_the_cache(
    ca: CertificateAuthority, caller: IssuedCertificate, loop: asyncio.Runner
) -> None:
    policy = opa_envoy(OBJECT_RULE)
    gateway = pipeline(ca, policy)
    shop = check_request(certificate=caller, headers={"x-tenant": "shop"})
    for _ in range(2):
        ok = loop.run(gateway.check(shop)).ok_response
        headers = {o.header.key: o.header.value for o in ok.headers}
        assert headers["x-validated-by"] == "opa"
        assert headers["authorization"].startswith("Bearer ")
    assert policy.evaluations == 1
    refused = loop.run(gateway.check(check_request(certificate=caller)))
    assert refused.denied_response.status.code == 401
    assert refused.denied_response.body == "who are you?"
    sent = {o.header.key: o.header.value for o in refused.denied_response.headers}
    assert sent["www-authenticate"] == "Basic realm=orders"


# --- what a denial tells the caller ---------------------------------------------------------


def test_a_quorum_failure_tells_the_caller_only_no_signing_quorum(
    ca: CertificateAuthority, caller: IssuedCertificate, loop: asyncio.Runner
) -> None:
    """Which signers failed, at which address and why is the operator's: the log and the
    audit record have it, the 503's body and headers say only "no signing quorum"."""
    failure = QuorumUnavailable(
        2, 1, {2: "10.20.0.7:7001 unreachable: connection refused", 3: "timed out"}
    )
    audit = RecordingAudit()
    gateway = pipeline(ca, engine(), signer=Signer(failure=failure), audit=audit)
    response = loop.run(gateway.check(check_request(certificate=caller)))
    status, body, headers = denial(response)
    assert status == 503
    assert body == {"error": "no_signing_quorum", "detail": "no signing quorum", "status": 503}
    assert headers["retry-after"] == "1"
    everything_sent = str(response.denied_response) + str(response.dynamic_metadata)
    for internal in ("10.20.0.7", "signer 2", "connection refused", "timed out"):
        assert internal not in everything_sent
    (record,) = [data for event, data in audit.events if event == "deny"]
    assert record["reason"] == "no_signing_quorum"
    assert record["detail"] == "no signing quorum"
    assert "signer 2: 10.20.0.7:7001 unreachable: connection refused" in str(record["internal"])


def test_the_attributes_policy_reads_are_every_field_envoy_sends_in_order() -> None:
    """The hot cache keys on a plain tuple; a miss builds `RequestAttributes` from it."""
    request = CheckRequest()
    attributes = request.attributes
    attributes.source.address.socket_address.address = "10.0.0.1"
    attributes.source.address.socket_address.port_value = 40001
    attributes.destination.address.socket_address.address = "10.0.0.2"
    attributes.destination.address.socket_address.port_value = 8443
    attributes.destination.principal = "spiffe://prod.test/ns/edge/sa/envoy"
    http = attributes.request.http
    http.id, http.scheme, http.protocol, http.size = "r-1", "https", "HTTP/2", 7
    http.body, http.raw_body = "{}", b"\x01"
    attributes.request.time.seconds, attributes.request.time.nanos = 1_700_000_000, 9
    attributes.tls_session.sni = "orders.example.com"
    everything = RequestAttributes(*attribute_values(request, per_request=True))  # type: ignore[arg-type]
    assert everything == RequestAttributes(
        source_address="10.0.0.1",
        source_port=40001,
        destination_address="10.0.0.2",
        destination_port=8443,
        destination_principal="spiffe://prod.test/ns/edge/sa/envoy",
        request_id="r-1",
        request_time_seconds=1_700_000_000,
        request_time_nanos=9,
        scheme="https",
        protocol="HTTP/2",
        size=7,
        body="{}",
        raw_body=b"\x01",
        sni="orders.example.com",
    )
    described = RequestAttributes(*attribute_values(request, per_request=False))  # type: ignore[arg-type]
    assert (described.source_port, described.request_id, described.request_time_seconds) == (
        0,
        "",
        0,
    )
