"""`keymint dev`: the local stack, for development, until Ctrl-C.

    keymint dev --dir ./keymint-dev            # a DKG among 3 signers (2-of-3)
    keymint dev --dir ./keymint-dev --signers 5 --threshold 3
    keymint dev --dir ./keymint-dev --trusted-dealer
    keymint dev --dir ./keymint-dev --check    # start, pass one request through Envoy, stop

It prints, and writes to `DIR/env.sh`, the environment a user points their own tools at: the
front Envoy's URL and the CA that verifies it, a client certificate that policy lets read the
orders API, the token endpoint, the JWKS, the trust root, and the stand-in issuers.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import ssl
import sys
import threading
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from extauthz.dev.settings import DEPLOY, ISSUER, ORDERS

if TYPE_CHECKING:  # the stack's modules load when `keymint dev` runs, not with every command
    from extauthz.dev.stack import LocalStack

WARNING = (
    "keymint dev is for development only: a development CA issues every certificate, the signers' "
    "key shares are sealed with a passphrase from the environment (not an HSM or a YubiKey), and "
    "the identity providers are local stand-ins."
)
DEALER_WARNING = (
    "--trusted-dealer: one process made the group key and dealt its shares, so it held the whole "
    "key. Production keys come from a DKG among the signers (the default here)."
)
CLIENT_SPIFFE_PATH = "/ns/shop/sa/web"  # policy's shop-reads-orders binding covers it
ORDERS_PATH = "/orders/v1/orders/42"


class DevError(Exception):
    """`keymint dev` could not run as asked: what was wrong."""


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    summary = "run the local stack (development only): signers, gateway, Envoys, issuers"
    parser = subparsers.add_parser("dev", help=summary, description=f"{summary}. {WARNING}")
    parser.add_argument(
        "--dir",
        type=Path,
        required=True,
        help="the stack's state: keys, certificates, configs and logs (empty or absent)",
    )
    parser.add_argument(
        "--signers", type=int, default=3, metavar="N", help="signer processes (default: 3)"
    )
    parser.add_argument(
        "--threshold",
        type=int,
        default=2,
        metavar="T",
        help="signers needed for a signature, 2 to N (default: 2)",
    )
    parser.add_argument(
        "--trusted-dealer",
        action="store_true",
        help="deal the group key from one process instead of a DKG among the signers",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="pass one request through the front Envoy, then stop; exit 0 if it was allowed",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from extauthz.dev.stack import local_stack

    directory: Path = args.dir
    try:
        _check_quorum(args.signers, args.threshold)
        _prepare(directory)
    except DevError as exc:
        print(f"keymint dev: {exc}", file=sys.stderr)
        return 2
    print(f"WARNING: {WARNING}", file=sys.stderr)
    if args.trusted_dealer:
        print(f"WARNING: {DEALER_WARNING}", file=sys.stderr)
    print(f"starting the local stack in {directory} (logs there) ...", file=sys.stderr, flush=True)
    with local_stack(
        directory.resolve(),
        dkg=not args.trusted_dealer,
        workloads=True,
        signers=args.signers,
        threshold=args.threshold,
    ) as stack:
        environment = stack_environment(stack)
        (directory / "env.sh").write_text(shell_exports(environment))
        print(shell_exports(environment), end="", flush=True)
        print("keymint-dev ready", flush=True)
        if args.check:
            status, detail = check_through_envoy(environment)
            print(f"keymint dev --check: GET {ORDERS_PATH} through Envoy: {status} {detail}")
            return 0 if status == 200 else 1
        _wait_for_signal()
        print("stopping the local stack", file=sys.stderr, flush=True)
    return 0


def _check_quorum(signers: int, threshold: int) -> None:
    if not 2 <= threshold <= signers:
        raise DevError(
            f"--threshold {threshold} with --signers {signers}: the threshold must be at least 2 "
            "(one signer alone must not sign) and at most the number of signers, e.g. "
            "--signers 5 --threshold 3"
        )


def _prepare(directory: Path) -> None:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise DevError(
            f"--dir {directory} must be an empty directory or not exist: each run makes new "
            "keys and certificates there"
        )
    directory.mkdir(parents=True, exist_ok=True)


def stack_environment(stack: LocalStack) -> dict[str, str]:
    """What a user's tools need to reach the running stack, as environment variables."""
    from extauthz.dev.envoy import FRONT_LISTENER, JWT_LISTENER

    certificate, key = stack.client_files(stack.svid(CLIENT_SPIFFE_PATH))
    front = f"https://localhost:{stack.front.port(FRONT_LISTENER)}"
    gateway_http = f"http://127.0.0.1:{stack.gateway.http_port}"
    environment = {
        "KEYMINT_DEV_DIR": str(stack.directory),
        "KEYMINT_DEV_FRONT_URL": front,
        "KEYMINT_DEV_CA": str(stack.edge_ca),
        "KEYMINT_DEV_CLIENT_CERT": str(certificate),
        "KEYMINT_DEV_CLIENT_KEY": str(key),
        "KEYMINT_DEV_CLIENT_ID": stack.svid_id(CLIENT_SPIFFE_PATH),
        "KEYMINT_DEV_ORDERS_URL": f"{front}{ORDERS_PATH}",
        "KEYMINT_DEV_TOKEN_URL": f"{front}/token",
        "KEYMINT_DEV_JWKS_URL": f"{front}/.well-known/jwks.json",
        "KEYMINT_DEV_ENDORSEMENTS_URL": f"{gateway_http}/.well-known/keymint-endorsements.json",
        "KEYMINT_DEV_METRICS_URL": f"{gateway_http}/metrics",
        "KEYMINT_DEV_API_URL": f"http://127.0.0.1:{stack.jwt_envoy.port(JWT_LISTENER)}",
        "KEYMINT_DEV_ISSUER": ISSUER,
        "KEYMINT_DEV_AUDIENCES": f"{DEPLOY} {ORDERS}",
        "KEYMINT_DEV_GITHUB_ISSUER": stack.issuer.issuer,
        "KEYMINT_TRUST_ROOT": stack.env["KEYMINT_TRUST_ROOT"],
    }
    if stack.workloads is not None:
        environment["KEYMINT_DEV_IDP"] = stack.workloads.idp.issuer
    return environment


def shell_exports(environment: Mapping[str, str]) -> str:
    lines = ["# keymint dev: for development only (see `keymint dev --help`)"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in environment.items()]
    return "\n".join(lines) + "\n"


def check_through_envoy(environment: Mapping[str, str]) -> tuple[int, str]:
    """GET the orders API through the front Envoy with the dev client certificate: the status,
    and whether the API behind Envoy received a keymint token (and none of the caller's)."""
    context = ssl.create_default_context(cafile=environment["KEYMINT_DEV_CA"])
    context.load_cert_chain(
        environment["KEYMINT_DEV_CLIENT_CERT"], environment["KEYMINT_DEV_CLIENT_KEY"]
    )
    url = environment["KEYMINT_DEV_ORDERS_URL"]
    if not url.startswith("https://"):
        raise DevError(f"the orders URL must be https://, not {url!r}")
    try:
        with urllib.request.urlopen(url, context=context, timeout=30) as answer:  # noqa: S310
            echoed = json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode(errors="replace")
    received = {name for name, _ in echoed["headers"]}
    bearer = [value for name, value in echoed["headers"] if name == "authorization"]
    if len(bearer) != 1 or not bearer[0].startswith("Bearer "):
        return 502, "the API behind Envoy received no keymint token"
    if "x-forwarded-client-cert" in received:
        return 502, "the API behind Envoy received the caller's certificate"
    return 200, "the API behind Envoy received a keymint token"


def _wait_for_signal() -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
