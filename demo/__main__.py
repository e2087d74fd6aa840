"""`make demo` / `make demo-check`: the whole keymint stack on this machine, and its flows.

Everything is real and on loopback: a development CA, three signer processes that run a DKG (their
shares sealed to files), the gateway process (its Check port mTLS: only Envoy's client certificate
is accepted) pinned to the DKG's key as its trust root, the front Envoy and an upstream-side
jwt_authn Envoy whose keys `extauthz pin-keys` wrote (both the real Envoy binary), an echo upstream,
local issuers standing in for GitHub's and a Kubernetes cluster's, and an IdP (device flow and PKCE)
for engineers who self-mint with `extauthz login`.
The demo runs the local stack of `keymint dev` (extauthz/dev), the one the tests run on, so what it
shows is what the tests check.

`--check` runs the flows without a terminal, exits 0 only if every one behaved, and stops all.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from envoy.service.auth.v3 import external_auth_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from extauthz.dev.calls import (  # noqa: E402
    check_request,
    envoy_channel,
    exchange_form,
)
from extauthz.dev.cli import shell_exports, stack_environment  # noqa: E402
from extauthz.dev.envoy import FRONT_LISTENER, JWT_LISTENER  # noqa: E402
from extauthz.dev.servers import request  # noqa: E402
from extauthz.dev.settings import DEPLOY, ISSUER, ORDERS, check_port_pki  # noqa: E402
from extauthz.dev.stack import LocalStack, local_stack  # noqa: E402
from extauthz.dev.workloads import CLIENT_ID, Workloads  # noqa: E402
from signer.devca import dns_name, gateway_name  # noqa: E402
from signer.token import compact, header_for, signing_input  # noqa: E402


class FlowFailed(Exception):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise FlowFailed(what)


def say(text: str = "") -> None:
    print(text, flush=True)


def show_claims(claims: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if key in claims:
            say(f"      {key:18} {json.dumps(claims[key])}")


def received_token(stack: LocalStack, reply: Any) -> str:
    expect(reply.status == 200, f"expected 200, got {reply.status}: {reply.body!r}")
    (authorization,) = reply.echoed()["authorization"]
    return str(authorization).removeprefix("Bearer ")


def flow_service(stack: LocalStack) -> None:
    say("\n1. A service with a client certificate calls through Envoy (mTLS).")
    svid = stack.svid("/ns/shop/sa/web")
    say("   caller: spiffe://prod.test/ns/shop/sa/web   GET /orders/v1/orders/42")
    reply = stack.front_call("GET", "/orders/v1/orders/42", certificate=svid)
    token = received_token(stack, reply)
    claims = stack.decode(token, ORDERS)
    say("   decision: allowed by policy binding shop-reads-orders; the upstream API received a")
    say("   keymint token (verified here against the served JWKS) and none of the caller's")
    say("   credentials. Its claims:")
    show_claims(claims, ("iss", "sub", "aud", "scope", "exp", "cnf", "jti"))
    expect(claims["sub"] == "spiffe://prod.test/ns/shop/sa/web", "SPIFFE subject in the token")
    expect("x-forwarded-client-cert" not in reply.echoed(), "caller credentials removed")


def flow_ci(stack: LocalStack) -> str:
    say("\n2. A CI job calls through Envoy with its GitHub Actions OIDC token.")
    oidc = stack.oidc_token()
    say("   caller: repo:octo-org/octo-repo:environment:prod (repository_id 74)")
    say("   GET /deploy/status")
    token = received_token(stack, stack.front_call("GET", "/deploy/status", headers=_bearer(oidc)))
    claims = stack.decode(token, DEPLOY)
    say("   decision: allowed by binding octo-repo-deploys (bound to repository ids, not names).")
    say("   The upstream received a deploy token signed by 2 of the 3 signers:")
    show_claims(claims, ("sub", "aud", "scope", "repository_id", "ref", "exp"))
    expect(claims["repository_id"] == "74", "GitHub provenance in the token")
    return oidc


def flow_exchange(stack: LocalStack, oidc: str) -> str:
    say("\n3. The same job exchanges its OIDC token at POST /token (RFC 8693), through Envoy,")
    say("   and calls with the result.")
    reply = stack.front_call("POST", "/token", data=exchange_form(oidc))
    expect(reply.status == 200, f"/token answered {reply.status}: {reply.body!r}")
    answer = reply.json()
    access = answer["access_token"]
    say(
        f"   /token: token_type {answer['token_type']}, expires_in {answer['expires_in']}s, "
        f"scope {answer['scope']!r}"
    )
    passed = received_token(stack, stack.front_call("GET", "/deploy/run", headers=_bearer(access)))
    expect(passed == access, "the exchanged token is passed through unchanged")
    say("   calling /deploy/run with it: allowed, forwarded unchanged.")
    direct = stack.jwt_call("/deploy/v1/releases", bearer=access)
    other = stack.jwt_call("/orders/v1/orders", bearer=access)
    say(f"   an API behind Envoy's jwt_authn (no call to keymint) accepts it: {direct.status};")
    say(f"   the orders API, another audience, refuses it: {other.status}")
    expect(direct.status == 200, "jwt_authn accepts the minted token")
    expect(other.status == 403, "jwt_authn refuses it for another audience")
    return access


def _workloads(stack: LocalStack) -> Workloads:
    assert stack.workloads is not None, "the demo starts the stack with its workloads"
    return stack.workloads


def flow_kubernetes(stack: LocalStack) -> None:
    say("\n4. A Kubernetes workload calls through Envoy with its projected service-account token")
    say("   (a volume with audience https://keymint.test; the cluster's keys given to keymint as")
    say("   a JWKS file, as `kubectl get --raw /openid/v1/jwks` writes it).")
    w = _workloads(stack)
    say("   caller: system:serviceaccount:shop:web in prod-cluster   GET /orders/v1/orders/42")
    reply = stack.front_call(
        "GET", "/orders/v1/orders/42", headers=_bearer(w.service_account_token("shop", "web"))
    )
    claims = stack.decode(received_token(stack, reply), ORDERS)
    say("   decision: allowed by binding shop-pods-read-orders (namespace shop, service account")
    say("   web). The upstream received a keymint token naming the pod's service account:")
    show_claims(claims, ("sub", "aud", "scope", "namespace", "service_account", "pod", "exp"))
    expect(claims["namespace"] == "shop", "the service account's namespace in the token")
    billing = stack.front_call(
        "GET", "/orders/v1/orders/42", headers=_bearer(w.service_account_token("billing", "web"))
    )
    say(f"   the same call from billing/web: {billing.status} {billing.body.decode()}")
    expect(billing.status == 403, "another namespace's service account is refused")


def flow_engineer(stack: LocalStack, directory: Path) -> str:
    say("\n5. An engineer self-mints a 15-minute token: `extauthz login` signs in at the IdP")
    say("   (device flow), then exchanges the ID token at /token for a scoped keymint token.")
    w = _workloads(stack)
    token_file = directory / "engineer.jwt"
    command = [
        sys.executable, "-m", "extauthz.cli", "login", "--idp", w.idp.issuer,
        "--client-id", CLIENT_ID, "--token-url", _token_url(stack), "--audience", DEPLOY,
        "--scope", "deploy:read", "--out", str(token_file), "--no-keyring", "--allow-http",
    ]  # fmt: skip
    say("   $ extauthz login --idp <IdP> --client-id keymint-cli --token-url <keymint>/token \\")
    say("         --audience https://deploy.internal --scope deploy:read --out engineer.jwt")
    process = subprocess.Popen(  # noqa: S603 (this interpreter, our arguments)
        command,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        shown = _wait_for(process, r"\(or open (\S+)\)")
        for line in shown.strip().splitlines():
            say(f"   | {line}")
        complete = re.search(r"\(or open (\S+)\)", shown)
        assert complete is not None
        say("   (the demo, as Ada's browser, opens that page and approves)")
        page = stack.background.run(
            request("GET", complete.group(1) + "&user=ada", None, None, None, None)
        )
        expect(page.status == 200, "the IdP's device page approves")
        _, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    for line in rest.strip().splitlines():
        say(f"   | {line}")
    expect(process.returncode == 0, f"extauthz login exited {process.returncode}")
    token = token_file.read_text().strip()
    claims = stack.decode(token, DEPLOY)
    show_claims(claims, ("sub", "email", "aud", "scope", "exp"))
    expect(claims["exp"] - claims["iat"] <= 900, "the engineer role caps the token at 15 minutes")
    passed = received_token(
        stack, stack.front_call("GET", "/deploy/status", headers=_bearer(token))
    )
    expect(passed == token, "the engineer's token is passed through unchanged")
    direct = stack.jwt_call("/deploy/v1/releases", bearer=token)
    say(f"   calling /deploy/status through Envoy with it: allowed; jwt_authn: {direct.status}")
    expect(direct.status == 200, "jwt_authn accepts the engineer's token")
    return token


def _token_url(stack: LocalStack) -> str:
    return f"http://127.0.0.1:{stack.gateway.http_port}/token"


def _wait_for(process: subprocess.Popen[str], pattern: str, timeout: float = 30.0) -> str:
    """The command's stderr up to `pattern` (raw reads: a text buffer would hide it from select)."""
    assert process.stderr is not None
    descriptor = process.stderr.fileno()
    seen = ""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, seen):
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([descriptor], [], [], max(0.0, min(0.2, remaining)))
        if ready:
            chunk = os.read(descriptor, 65536)
            if not chunk:
                raise FlowFailed(f"extauthz login ended early: {seen}")
            seen += chunk.decode()
        elif remaining <= 0:
            raise FlowFailed(f"extauthz login never showed a sign-in code: {seen}")
    return seen


def flow_denials(stack: LocalStack) -> None:
    say("\n6. What a refused caller reads:")
    for label, reply in (
        ("no credential", stack.front_call("GET", "/deploy/status")),
        (
            "another repository",
            stack.front_call(
                "GET", "/deploy/status", headers=_bearer(stack.oidc_token(repository_id="75"))
            ),
        ),
    ):
        say(f"   {label:20} -> {reply.status} {reply.body.decode()}")
        expect(reply.status in (401, 403), f"{label} is denied")


def flow_keys(stack: LocalStack, access: str) -> None:
    say("\n7. Which keys verify: only keys t signers endorsed, chained from the pinned trust root.")
    root = json.loads(Path(stack.env["KEYMINT_TRUST_ROOT"]).read_text())
    say(f"   trust root (pinned by operators): kid {root['keys'][0]['kid']}")
    reply = stack.front_call("GET", "/.well-known/keymint-endorsements.json")
    expect(reply.status == 200, "the endorsements document is served")
    say(f"   served endorsement chain: {len(reply.json()['endorsements'])} endorsement(s)")
    say("   the jwt_authn Envoy reads local_jwks, written by `extauthz pin-keys` from that chain.")
    verified = _extauthz(
        "verify", "--trust-root", stack.env["KEYMINT_TRUST_ROOT"], "--endorsements",
        _endorsements_url(stack), "--allow-http", "--issuer", ISSUER, "--audience", DEPLOY, access,
    )  # fmt: skip
    say(f"   extauthz verify --trust-root ... <the /token result>: exit {verified.returncode}")
    expect(verified.returncode == 0, "extauthz verify accepts a token the signers made")
    own = Ed25519PrivateKey.generate()
    public = own.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    claims = jwt.decode(access, options={"verify_signature": False})
    message = signing_input(header_for(public), claims)
    forged = compact(message, own.sign(message))
    status = stack.jwt_call("/deploy/v1/releases", bearer=forged).status
    say(f"   the same claims signed by a key the gateway could make on its own: jwt_authn {status}")
    expect(status == 401, "jwt_authn refuses a key no signer endorsed")


def _endorsements_url(stack: LocalStack) -> str:
    return f"http://127.0.0.1:{stack.gateway.http_port}/.well-known/keymint-endorsements.json"


def _extauthz(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (this interpreter, our arguments)
        [sys.executable, "-m", "extauthz.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def flow_check_port(stack: LocalStack) -> None:
    say("\n8. Someone who can reach the gateway's Check port sends it a Check directly, with a")
    say("   victim's certificate (a public document) as the caller's:")
    request = check_request(certificate=stack.svid("/ns/shop/sa/web"), route_key="orders")
    address = f"127.0.0.1:{stack.gateway.grpc_port}"
    gateway = check_port_pki(stack.directory)[gateway_name()]
    ca = gateway.ca.read_bytes()
    override = [("grpc.ssl_target_name_override", dns_name(gateway_name()))]
    attempts = {
        "without a client certificate": lambda: grpc.aio.secure_channel(
            address, grpc.ssl_channel_credentials(ca), options=override
        ),
        "with the gateway's own certificate": lambda: grpc.aio.secure_channel(
            address,
            grpc.ssl_channel_credentials(ca, gateway.key.read_bytes(), gateway.cert.read_bytes()),
            options=override,
        ),
    }
    for label, channel in attempts.items():
        code, detail = stack.background.run(_attempt(channel, request))
        say(f"   {label:34} -> {code.name}: {detail}")
        expect(code != grpc.StatusCode.OK, f"a Check {label} is refused")
    code, _ = stack.background.run(
        _attempt(lambda: envoy_channel(stack.directory, address), request)
    )
    say(f"   {'with the certificate of Envoy':34} -> {code.name}: Envoy is who it answers")
    expect(code == grpc.StatusCode.OK, "Envoy's certificate is accepted")


async def _attempt(
    channel: Callable[[], grpc.aio.Channel], request: Any
) -> tuple[grpc.StatusCode, str]:
    try:
        async with channel() as opened:
            await external_auth_pb2_grpc.AuthorizationStub(opened).Check(request, timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def print_try_it(stack: LocalStack, directory: Path, token: str) -> None:
    svid = stack.svid("/ns/shop/sa/web")
    cert, key = stack.client_files(svid)
    token_file = directory / "ci-token.jwt"
    token_file.write_text(token)
    front = stack.front.port(FRONT_LISTENER)
    resolve = f"--resolve front.keymint.test:{front}:127.0.0.1"
    base = f"https://front.keymint.test:{front}"
    environment = stack_environment(stack)
    (directory / "env.sh").write_text(shell_exports(environment))
    say(f"\nThe stack's environment, as `keymint dev` prints it (also in {directory}/env.sh):")
    say(shell_exports(environment).rstrip())
    say("\nThe stack stays up until Ctrl-C. Try it:")
    say(
        f"  curl {resolve} --cacert {stack.edge_ca} --cert {cert} --key {key} \\\n"
        f"       {base}/orders/v1/orders/42"
    )
    bearer = f'-H "Authorization: Bearer $(cat {token_file})"'
    say(f"  curl {resolve} --cacert {stack.edge_ca} {bearer} \\\n       {base}/deploy/status")
    say(f"  curl {resolve} --cacert {stack.edge_ca} {base}/.well-known/jwks.json")
    say(f"  curl {resolve} --cacert {stack.edge_ca} {base}/deploy/status      # 401")
    say(
        f'  curl -H "Authorization: Bearer $(cat {token_file})" '
        f"http://127.0.0.1:{stack.jwt_envoy.port(JWT_LISTENER)}/deploy/v1/releases"
    )
    say(
        f"  python -m extauthz.cli verify --trust-root {stack.env['KEYMINT_TRUST_ROOT']} \\\n"
        f"       --endorsements {_endorsements_url(stack)} --allow-http \\\n"
        f"       --issuer {ISSUER} --audience {DEPLOY} $(cat {token_file})"
    )
    w = _workloads(stack)
    say(
        f"  python -m extauthz.cli login --idp {w.idp.issuer} --client-id {CLIENT_ID} \\\n"
        f"       --token-url {_token_url(stack)} --audience {DEPLOY} --scope deploy:read "
        "--allow-http\n"
        "       # then open the page it shows, adding &user=ada to its URL (the stand-in IdP's "
        "sign-in)"
    )
    say(f"  metrics: http://127.0.0.1:{stack.gateway.http_port}/metrics")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="run the flows and exit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keymint-demo-") as tmp:
        directory = Path(tmp)
        say("Starting keymint: a development CA, 3 signer processes (sealed-file vaults),")
        say("a DKG among them (its key pinned as the trust root), the gateway, the front Envoy,")
        say("a jwt_authn Envoy with pinned keys, an echo API, local issuers (GitHub, a Kubernetes")
        say("cluster, GitLab, SPIRE) and an IdP for engineers ...")
        try:
            with local_stack(directory, dkg=True, workloads=True) as stack:
                kid = stack.jwks()["keys"][0]["kid"]
                say(f"Ready. Group key kid {kid}: made by DKG, so no machine ever held it whole;")
                say(
                    f"tokens need 2 of the 3 signers. Front Envoy: https://127.0.0.1:"
                    f"{stack.front.port(FRONT_LISTENER)}"
                )
                flow_service(stack)
                oidc = flow_ci(stack)
                access = flow_exchange(stack, oidc)
                flow_kubernetes(stack)
                flow_engineer(stack, directory)
                flow_denials(stack)
                flow_keys(stack, access)
                flow_check_port(stack)
                say("\nEvery flow behaved.")
                if args.check:
                    return 0
                print_try_it(stack, directory, access)
                stop = threading.Event()
                for signum in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(signum, lambda *_: stop.set())
                while not stop.wait(0.5):
                    pass
                say("\nStopping everything.")
        except FlowFailed as exc:
            print(f"\nFLOW FAILED: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
