"""Attacks on verification keys and on the group key, by a party holding all the gateway holds:
its mTLS key and certificate (the coordinator identity), the admin token, its configuration and
code, and network reach to every port. Each attack runs against real signer, gateway and Envoy
processes, fails, and the test asserts the named refusal.

The defence: a key reaches verifiers only with an endorsement t signers made (each guard endorses
only a key its signer holds a share of), chained from the root operators pinned; verifiers and the
documented jwt_authn config trust nothing else. The coordinator adopts a key only when t signers
report it identically, t being the larger of the key's threshold and the deployment's (FROST_T).
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from extauthz.dev.calls import exchange_form
from extauthz.dev.settings import DEPLOY, ISSUER
from extauthz.dev.stack import LocalStack, local_stack
from signer.coordinator import Coordinator
from signer.endorsement import endorsement_message, key_jwk
from signer.frost import trusted_dealer_keygen
from signer.frost.encoding import decode_signing_commitment, encode_commitment_list
from signer.proto import signer_pb2
from signer.token import kid_for
from tests.adversary.keys_support import (
    AttackerKey,
    AttackerSite,
    extauthz,
    jwks_with,
    signer_stubs,
    small_stack,
)
from tests.e2e.replies import bearer, minted
from tests.signer.harness import SignerCluster

ADMIN_TOKEN = "adversary-keys-admin"  # the attacker holds it: it is the gateway's


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    extra = {"KEYMINT_ADMIN_TOKEN_SHA256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()}
    with local_stack(tmp_path_factory.mktemp("adversary-keys"), extra_env=extra) as running:
        yield running


def admin_post(stack: LocalStack, path: str, document: object) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.gateway.http_port}{path}",
        data=json.dumps(document).encode(),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def served(stack: LocalStack, path: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{stack.gateway.http_port}{path}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        document: dict[str, Any] = json.loads(reply.read())
        return document


def served_text(http_port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=10) as reply:
        text: str = reply.read().decode()
        return text


def active_key(stack: LocalStack) -> bytes:
    (jwk,) = served(stack, "/.well-known/jwks.json")["keys"]
    return bytes(jwt.utils.base64url_decode(jwk["x"]))


def sign_everywhere(stack: LocalStack, message: bytes) -> dict[int, grpc.aio.AioRpcError | bytes]:
    """Sign `message` on every signer with fresh commitments from each, as the coordinator's
    identity; what each signer answered."""

    async def run() -> dict[int, grpc.aio.AioRpcError | bytes]:
        channels, stubs = signer_stubs(stack.cluster)
        try:
            batches = {
                i: await s.Commit(signer_pb2.CommitRequest(count=1)) for i, s in stubs.items()
            }
            commitments = sorted(
                (decode_signing_commitment(b.commitments[0]) for b in batches.values()),
                key=lambda c: c.identifier,
            )
            request = signer_pb2.SignRequest(
                message=message,
                commitment_list=encode_commitment_list(commitments),
                request_id="attacker",
            )
            answers: dict[int, grpc.aio.AioRpcError | bytes] = {}
            for i, stub in stubs.items():
                try:
                    answers[i] = (await stub.Sign(request)).signature_share
                except grpc.aio.AioRpcError as refused:
                    answers[i] = refused
            return answers
        finally:
            for channel in channels:
                await channel.close()

    return stack.background.run(run())


def test_the_gateway_publishing_a_key_of_its_own_is_refused_with_the_guard_rule(
    stack: LocalStack,
) -> None:
    attacker = AttackerKey()
    before = served(stack, "/.well-known/jwks.json")
    status, body = admin_post(
        stack, "/admin/keys/publish", {"kid": attacker.kid, "jwk": key_jwk(attacker.public)}
    )
    assert status == 409
    assert body["error"] == "rotation_refused"
    assert body["rule"] == "endorsement_key_unknown"
    assert (
        f"key {attacker.kid} is not a key this signer holds a share of"
        in (body["error_description"])
    )
    assert served(stack, "/.well-known/jwks.json") == before
    assert served(stack, "/.well-known/keymint-endorsements.json")["endorsements"] == []


def test_signers_refuse_to_endorse_the_attackers_key_asked_over_grpc_directly(
    stack: LocalStack,
) -> None:
    attacker = AttackerKey()
    message = endorsement_message(
        active_key(stack), attacker.public, issuer=ISSUER, issued_at=int(time.time())
    )
    answers = sign_everywhere(stack, message)
    assert set(answers) == {1, 2, 3}
    for answer in answers.values():
        assert isinstance(answer, grpc.aio.AioRpcError)
        assert answer.code() == grpc.StatusCode.PERMISSION_DENIED
        assert answer.details() == (
            f"guard:endorsement_key_unknown: key {attacker.kid} is not a key this signer holds "
            "a share of"
        )


def test_signers_refuse_an_endorsement_in_the_name_of_the_attackers_key(stack: LocalStack) -> None:
    attacker = AttackerKey()
    message = endorsement_message(
        attacker.public, active_key(stack), issuer=ISSUER, issued_at=int(time.time())
    )
    for answer in sign_everywhere(stack, message).values():
        assert isinstance(answer, grpc.aio.AioRpcError)
        assert answer.code() == grpc.StatusCode.PERMISSION_DENIED
        assert answer.details() == (
            "guard:header_kid: the endorsing kid is not a key this signer holds"
        )


def test_a_token_of_the_attackers_key_with_a_forged_endorsement_verifies_nowhere(
    stack: LocalStack,
) -> None:
    attacker = AttackerKey()
    forged = attacker.token()
    genuine = served(stack, "/.well-known/keymint-endorsements.json")
    pinned_before = stack.pinned_jwks.read_bytes()
    root = stack.env["KEYMINT_TRUST_ROOT"]
    with AttackerSite(stack.background) as site:
        site.documents["/jwks.json"] = jwks_with(served(stack, "/.well-known/jwks.json"), attacker)
        site.documents["/endorsements.json"] = {
            **genuine,
            "endorsements": [*genuine["endorsements"], attacker.self_endorsement()],
            "keys": [*genuine["keys"], attacker.kid],
        }
        site.documents["/genuine-endorsements.json"] = genuine
        audience = ["--issuer", ISSUER, "--audience", DEPLOY, "--allow-http"]

        # extauthz verify, pinned to the root: the forged chain is refused whole ...
        verify = extauthz(
            "verify", "--trust-root", root, "--endorsements", site.url("/endorsements.json"),
            "--jwks", site.url("/jwks.json"), *audience, forged,
        )  # fmt: skip
        assert verify.returncode == 2
        assert (
            "the chain does not verify from the trust root: endorsement 0: signed by key "
            f"'{attacker.kid}', which is not trusted (neither a pinned root nor endorsed earlier "
            "in the chain)"
        ) in verify.stderr
        # ... and the genuine chain does not vouch for a key the attacker's JWKS adds.
        verify = extauthz(
            "verify", "--trust-root", root, "--endorsements",
            site.url("/genuine-endorsements.json"), "--jwks", site.url("/jwks.json"), *audience,
            forged,
        )  # fmt: skip
        assert verify.returncode == 1
        assert f"token refused: unknown_kid: kid '{attacker.kid}' is not in the keys" in (
            verify.stderr
        )

        # pin-keys refuses the chain and leaves the pinned keys as they were.
        pin = extauthz(
            "pin-keys", "--trust-root", root, "--endorsements", site.url("/endorsements.json"),
            "--allow-http", "--out", str(stack.pinned_jwks),
        )  # fmt: skip
        assert pin.returncode == 2
        assert f"signed by key '{attacker.kid}', which is not trusted" in pin.stderr
        assert stack.pinned_jwks.read_bytes() == pinned_before

    # The documented jwt_authn config (local_jwks from pin-keys) answers 401, also after the
    # operator's reload, and still accepts a token the signers made.
    assert stack.jwt_call("/deploy/v1/releases", bearer=forged).status == 401
    stack.reload_jwt_envoy()
    assert stack.jwt_call("/deploy/v1/releases", bearer=forged).status == 401
    genuine_token = minted(
        stack.front_call("GET", "/deploy/v1/releases", headers=bearer(stack.oidc_token()))
    )
    assert stack.jwt_call("/deploy/v1/releases", bearer=genuine_token).status == 200


def test_a_group_package_reported_by_one_signer_is_not_adopted(tmp_path: Path) -> None:
    shares, own_package, _ = trusted_dealer_keygen(2, 3)
    own = kid_for(own_package.group_public_key)

    def signer_3_adds_a_key_of_its_own(cluster: SignerCluster) -> None:
        cluster.seal_key(3, shares[2], own_package)

    def agreed(cluster: SignerCluster) -> bytes:
        assert cluster.package is not None
        return bytes(cluster.package.group_public_key)

    with small_stack(
        tmp_path, dealer=True, prepare=signer_3_adds_a_key_of_its_own, root_key=agreed
    ) as small:
        small.gateway.start()
        assert f"key {own} is not adopted: signers [3] report this package of it" in small.log()
        form = exchange_form(small.issuer.mint())
        request = urllib.request.Request(
            f"http://127.0.0.1:{small.gateway.http_port}/token",
            data=urllib.parse.urlencode(form).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            token = json.loads(reply.read())["access_token"]
        assert jwt.get_unverified_header(token)["kid"] == kid_for(agreed(small.cluster))


def test_a_group_package_two_colluding_signers_made_below_the_threshold_is_not_adopted(
    tmp_path: Path,
) -> None:
    """A 3-of-5 deployment. Signers 1 and 2 collude: they deal themselves a 2-of-2 key and both
    report it beside the honest 3-of-5 one. Counted against its own threshold (2) their package
    would be adopted; the deployment's (FROST_T=3) refuses it: the gateway process names it and
    mints with the honest key, and a coordinator of the same threshold adopts only that one."""
    fake_shares, fake_package, _ = trusted_dealer_keygen(2, 2)  # participants 1 and 2
    fake = kid_for(fake_package.group_public_key)

    def signers_1_and_2_add_a_key_of_their_own(cluster: SignerCluster) -> None:
        for share in fake_shares:
            cluster.seal_key(share.identifier, share, fake_package)

    def honest(cluster: SignerCluster) -> bytes:
        assert cluster.package is not None
        return bytes(cluster.package.group_public_key)

    with small_stack(
        tmp_path,
        dealer=True,
        prepare=signers_1_and_2_add_a_key_of_their_own,
        root_key=honest,
        t=3,
        n=5,
    ) as small:
        small.gateway.start()
        assert (
            f"key {fake} is not adopted: signers [1, 2] report this package of it, but its "
            "threshold 2 is below this deployment's 3"
        ) in small.log()
        metrics = served_text(small.gateway.http_port, "/metrics")
        assert 'keymint_key_packages_ignored{reason="threshold_below_deployment"} 1.0' in metrics

        async def adopted_by_a_coordinator() -> list[str]:
            coordinator = Coordinator(
                endpoints=small.cluster.endpoints(),
                tls=small.cluster.coordinator_tls,
                threshold=3,
            )
            try:
                return sorted(await coordinator.refresh_keys())
            finally:
                await coordinator.close()

        assert small.background.run(adopted_by_a_coordinator()) == [kid_for(honest(small.cluster))]
        form = exchange_form(small.issuer.mint())
        request = urllib.request.Request(
            f"http://127.0.0.1:{small.gateway.http_port}/token",
            data=urllib.parse.urlencode(form).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            token = json.loads(reply.read())["access_token"]
        assert jwt.get_unverified_header(token)["kid"] == kid_for(honest(small.cluster))


def test_with_no_key_reported_by_t_signers_the_gateway_never_becomes_ready(
    tmp_path: Path,
) -> None:
    """One signer holds a key (even one operators pinned): the gateway stays up, never ready,
    says why on /readyz, and mints nothing: every Check path answers 503 not_ready."""
    shares, own_package, _ = trusted_dealer_keygen(2, 3)
    own = kid_for(own_package.group_public_key)

    def only_signer_3_holds_a_key(cluster: SignerCluster) -> None:
        cluster.seal_key(3, shares[2], own_package)

    with small_stack(
        tmp_path,
        dealer=False,
        prepare=only_signer_3_holds_a_key,
        root_key=lambda _: bytes(own_package.group_public_key),  # even pinned by operators
    ) as small:
        small.gateway.start(wait_ready=False)
        time.sleep(2.0)  # several rounds of start-up's retries
        assert small.gateway.alive()
        status, document = small.gateway.readiness()
        assert status == 503
        assert document["reason"] == "starting"
        detail = document["dependencies"]["key_ring"]["detail"]
        assert (
            "no group key is reported identically by as many signers as it needs: "
            f"{own} reported by 1 signer(s) [3], needs 2"
        ) in detail
        assert "signer 1: failed_precondition: this signer holds no key share yet" in detail
        url = f"http://127.0.0.1:{small.gateway.http_port}/.well-known/jwks.json"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 503  # no key is published, not even the pinned one
        form = urllib.parse.urlencode(
            {
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": small.issuer.mint(),
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "audience": "https://deploy.internal",
            }
        ).encode()
        token_url = f"http://127.0.0.1:{small.gateway.http_port}/token"
        with pytest.raises(urllib.error.HTTPError) as exchanged:
            urllib.request.urlopen(urllib.request.Request(token_url, data=form), timeout=10)
        assert exchanged.value.code == 503
        assert "Traceback" not in small.log()
