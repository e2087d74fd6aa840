"""Write the seed inputs of every fuzz target into fuzz/seeds/<target>/ (they are kept in git).

    python -m fuzz.seeds

Each seed is a valid input of its target in the fuzz world (fuzz/world.py), made by the same code
the gateway and signers run: CheckRequests as Envoy sends them, the tokens an OIDC issuer and
keymint sign, the sign requests an honest gateway sends, the messages of a real DKG. The OIDC
issuer's RSA key is made anew: its public half goes to fuzz/seeds/_world/oidc-public.pem, and
every token seed is signed with it, so run this only to replace every seed at once. So are the
keys of the world's other issuers (`issuer_seeds`): their JWKS go to fuzz/seeds/_world/.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.parse
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from extauthz.dev.issuers import (
    JwtKey,
    entra_claims,
    gitlab_claims,
    google_claims,
    kubernetes_claims,
    okta_claims,
    sign_token,
    svid_claims,
    trust_bundle,
)
from fuzz import world
from fuzz.ceremony import CeremonyFlow
from signer.ceremony.wire import encode_round1_package, encode_vss_commitment
from signer.endorsement import TrustRoot, endorsement_message
from signer.frost import commit, dkg, sign
from signer.frost import encoding as enc
from signer.proto import ceremony_pb2 as cpb
from signer.proto import signer_pb2
from signer.token import compact

GITHUB_CLAIMS = {
    "sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
    "repository": "octo-org/octo-repo",
    "repository_id": "74",
    "repository_owner": "octo-org",
    "repository_owner_id": "65",
    "ref": "refs/heads/main",
    "environment": "prod",
    "workflow": "deploy",
}


class CapturingSigner(world.InProcessSigner):
    """The in-process threshold signer, keeping what the gateway asked it to sign."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, Any]] = []

    async def sign(self, message: bytes, **kwargs: Any) -> world.Signed:
        self.requests.append((message, kwargs.get("evidence")))
        return await super().sign(message, **kwargs)


def oidc_token(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    payload = {
        **GITHUB_CLAIMS,
        "iss": world.OIDC_ISSUER,
        "aud": world.OIDC_AUDIENCE,
        "iat": world.FUZZ_NOW,
        "nbf": world.FUZZ_NOW - 60,
        "exp": world.FUZZ_NOW + 300,
        "jti": "seed",
        **claims,
    }
    return jwt.encode(
        payload, key, algorithm="RS256", headers={"kid": world.OIDC_KID, "typ": "JWT"}
    )


def check_request(
    route: str,
    *,
    bearer: str | None = None,
    certificate: bytes | None = None,
    principal: str = "",
    xfcc: str | None = None,
) -> CheckRequest:
    headers = {":authority": "api.internal", ":path": f"/{route}/v1/things", ":method": "GET"}
    if bearer is not None:
        headers["authorization"] = f"Bearer {bearer}"
    if xfcc is not None:
        headers["x-forwarded-client-cert"] = xfcc
    source = AttributeContext.Peer(principal=principal)
    if certificate is not None:
        source.certificate = urllib.parse.quote(certificate.decode(), safe="")
    return CheckRequest(
        attributes=AttributeContext(
            source=source,
            request=AttributeContext.Request(
                http=AttributeContext.HttpRequest(
                    method="GET",
                    host="api.internal",
                    path=f"/{route}/v1/things",
                    headers=headers,
                    protocol="HTTP/1.1",
                )
            ),
            context_extensions={"route": route},
        )
    )


def write(target: str, name: str, data: bytes) -> None:
    directory = world.SEEDS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)


def issuer_claims(issuer: world.Issuer, alg: str) -> dict[str, Any]:
    """A token of `issuer`'s documented shape, valid at FUZZ_NOW; an IdP's ID tokens in three
    shapes (Google's, Entra ID's, Okta's), one for each of its algorithms."""
    if issuer.issuer is None:  # a JWT-SVID, as SPIRE issues it
        return svid_claims(
            f"spiffe://{world.TRUST_DOMAIN}/ns/shop/sa/web", issuer.audience, world.FUZZ_NOW
        )
    shape = {
        "kubernetes": kubernetes_claims,
        "gitlab_ci": gitlab_claims,
        "oidc": {"ES256": google_claims, "PS256": entra_claims, "EdDSA": okta_claims}.get(alg),
    }[issuer.preset]
    assert shape is not None, (issuer.name, alg)
    return shape(issuer.issuer, issuer.audience, world.FUZZ_NOW)


def issuer_seeds() -> None:
    """A key for each algorithm of each of the world's other issuers (`world.ISSUERS`), their
    JWKS in _world (a SPIFFE trust bundle for JWT-SVIDs), and for each key a token it signed as
    a jwt_identity seed (`g`: verified), named by the key's kid (`<issuer>-<alg>`)."""
    world.WORLD.mkdir(parents=True, exist_ok=True)
    for issuer in world.ISSUERS:
        keys = [JwtKey.generate(f"{issuer.name}-{alg.lower()}", alg) for alg in issuer.algorithms]
        jwks = (
            trust_bundle(keys)
            if issuer.issuer is None
            else {"keys": [key.public_jwk() for key in keys]}
        )
        issuer.jwks.write_text(json.dumps(jwks, indent=2) + "\n")
        for key in keys:
            # The API server's tokens carry no `typ`; the others say JWT.
            typ = None if issuer.preset == "kubernetes" else "JWT"
            token = sign_token(key, issuer_claims(issuer, key.alg), typ=typ)
            write("jwt_identity", key.kid, b"g" + token.encode())


def main() -> None:
    for directory in world.SEEDS.iterdir() if world.SEEDS.exists() else []:
        shutil.rmtree(directory)
    world.WORLD.mkdir(parents=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (world.WORLD / "oidc-public.pem").write_bytes(public)
    (world.WORLD / "policy.json").write_text(json.dumps(world.POLICY, indent=2) + "\n")
    world.oidc_public_key.cache_clear()

    web, _ = world.svid("/ns/shop/sa/web")
    proxy, _ = world.svid("/ns/edge/sa/proxy")
    token = oidc_token(key)

    # keymint's own token, and what the gateway asks its signers to sign: from the pipeline.
    capture = CapturingSigner()
    pipeline = world.pipeline(capture)
    loop = asyncio.new_event_loop()
    minted = loop.run_until_complete(pipeline.check(check_request("deploy", bearer=token)))
    assert minted.status.code == 0, minted.denied_response.body
    own = minted.ok_response.headers[0].header.value.removeprefix("Bearer ")
    svid_allowed = loop.run_until_complete(
        pipeline.check(check_request("orders", certificate=web, principal="spiffe://x"))
    )
    assert svid_allowed.status.code == 0, svid_allowed.denied_response.body
    loop.close()

    # --- check_request
    quoted = urllib.parse.quote(web.decode(), safe="")
    forwarded = f'By={world.PROXY_ID};Cert="{quoted}";URI=spiffe://fuzz.test/ns/shop/sa/web'
    requests = {
        "oidc-deploy": check_request("deploy", bearer=token),
        "svid-orders": check_request(
            "orders", certificate=web, principal="spiffe://fuzz.test/ns/shop/sa/web"
        ),
        "xfcc-from-proxy": check_request(
            "orders", certificate=proxy, principal=world.PROXY_ID, xfcc=forwarded
        ),
        "keymint-token": check_request("deploy", bearer=own),
        "nothing": check_request("deploy"),
        "basic": check_request("deploy", bearer=None),
    }
    requests["basic"].attributes.request.http.headers["authorization"] = "Basic dXNlcjpwYXNz"
    for name, request in requests.items():
        write("check_request", name, request.SerializeToString())

    # --- xfcc
    write("xfcc", "cert", forwarded.encode())
    write("xfcc", "two-elements", f"URI=spiffe://a/b;DNS=x,{forwarded}".encode())
    write(
        "xfcc",
        "all-keys",
        b'By=spiffe://fuzz.test/ns/edge/sa/proxy;Hash=00ff;Subject="CN=web,O=\\"x\\"";'
        b"URI=spiffe://fuzz.test/ns/shop/sa/web;DNS=web.local;DNS=web2",
    )

    # --- jwt_identity
    write("jwt_identity", "oidc", b"g" + token.encode())
    write("jwt_identity", "oidc-bytes", b"b" + token.encode())
    write("jwt_identity", "unverified", b"u" + token.encode())
    write("jwt_identity", "keymint", b"o" + own.encode())
    issuer_seeds()

    # --- jwt_signer
    shares, package = world.frost_group()
    group_key = package.group_public_key
    message, _evidence = capture.requests[0]
    write("jwt_signer", "signing-input", b"p" + message)
    endorsement = endorsement_message(
        group_key, bytes(32 * [9]), issuer=world.KEYMINT_ISSUER, issued_at=world.FUZZ_NOW
    )
    write("jwt_signer", "endorsement", b"e" + endorsement)
    write("jwt_signer", "endorsement-guard", b"g" + endorsement)
    signed = asyncio.run(world.InProcessSigner().sign(endorsement))
    write("jwt_signer", "chain", b"c" + compact(endorsement, signed.signature).encode())
    root = TrustRoot(world.KEYMINT_ISSUER, (group_key,)).to_document()
    write("jwt_signer", "trust-root", b"r" + json.dumps(root).encode())

    # --- token_form
    form = urllib.parse.urlencode(
        {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": token,
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            "audience": world.DEPLOY,
            "scope": "deploy:read deploy:write",
        }
    )
    write("token_form", "exchange", b"application/x-www-form-urlencoded\n\n" + form.encode())
    write("token_form", "with-query", b"application/x-www-form-urlencoded\na=b\n" + form.encode())

    # --- sign_request: exactly what the gateway sent for each mint
    for name, (signed_message, evidence) in zip(("oidc", "svid"), capture.requests, strict=True):
        request = signer_pb2.SignRequest(message=signed_message, request_id="seed")
        request.evidence.CopyFrom(evidence)
        write("sign_request", name, b"c" + request.SerializeToString())
    garbage = signer_pb2.SignRequest(message=message, commitment_list=b"KMF\x01\x05junk")
    write("sign_request", "garbage-commitments", b"x" + garbage.SerializeToString())

    # --- ceremony: the messages of a real DKG among the world's signers
    flow = CeremonyFlow.run()
    cid = flow.params.ceremony_id
    write("ceremony", "begin", b"b" + flow.params.encode())
    deal = cpb.DealRequest(ceremony_id=cid, announcements=flow.announcements)
    write("ceremony", "deal", b"d" + deal.SerializeToString())
    stage = cpb.StageRequest(ceremony_id=cid, announcements=flow.announcements)
    stage.shares.extend(flow.inbox[1])
    write("ceremony", "stage", b"s" + stage.SerializeToString())
    confirm = cpb.CommitRequest(ceremony_id=cid, confirmations=flow.confirmations)
    write("ceremony", "commit", b"c" + confirm.SerializeToString())
    write("ceremony", "abort", b"a" + cid + b"the operator says stop")

    # --- frost_encoding: one of each encoding, led by its decoder's index
    nonces = commit(shares[0])
    commitments = [nonces.commitment, commit(shares[1]).commitment]
    _, round1 = dkg.part1(1, 2, 3)
    encodings = [
        enc.encode_key_share(shares[0]),
        enc.encode_public_key_package(package),
        enc.encode_signing_commitment(nonces.commitment),
        enc.encode_commitment_list(commitments),
        enc.encode_signature_share(sign(shares[0], nonces, b"m", commitments)),
        encode_round1_package(round1),
        encode_vss_commitment(round1.commitment),
        flow.params.encode(),
    ]
    for index, data in enumerate(encodings):
        write("frost_encoding", f"kind-{index}", bytes([index]) + data)
    write("canary", "hello", b"hello")
    write("canary", "refuse", b"refuse")
    write("canary", "crash", b"crash")  # the runner must count it

    counts = {d.name: len(list(d.iterdir())) for d in sorted(world.SEEDS.iterdir())}
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
