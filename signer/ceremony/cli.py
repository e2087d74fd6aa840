"""`signer dkg | refresh | reshare | deal`: run a key ceremony over running signers.

    signer dkg --signer 1=10.0.0.1:7443 --signer 2=10.0.0.2:7443 --signer 3=10.0.0.3:7443 \\
        --threshold 2 --tls-dir ./pki
    signer reshare --signer 1=... --signer 5=... --threshold 3 --recipients 1,2,3,4,5

The driver authenticates with `--identity` from `--tls-dir` (the dev PKI's "operator" by default).
Signers accept ceremonies only from the operator identities in their KEYMINT_OPERATOR_IDS, never
from the coordinator's (the gateway holds it). `--replace-existing-key` also needs a local approval
on each signer that holds a key (`signer approve-replace`, run on that signer's host), and `deal`
needs signers started with KEYMINT_DEV_ALLOW_TRUSTED_DEALER=true. Each command prints the group
public key and its kid. `add_commands` registers the commands on the `signer`
console script's subparsers; each sets `handler(args) -> exit code`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from signer.ceremony.driver import CeremonyDriver, CeremonyResult, connect
from signer.devca import operator_name, tls_files
from signer.endorsement import TrustRoot
from signer.errors import SignerError
from signer.files import write_atomically
from signer.token import public_jwk

Ceremony = Callable[[CeremonyDriver, argparse.Namespace], Awaitable[CeremonyResult]]


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dkg = _command(subparsers, "dkg", _dkg, "distributed key generation: a new group key")
    _threshold(dkg, required=False)
    _replace(dkg)
    dkg.add_argument(
        "--trust-root-out",
        type=Path,
        help="also write the new key as the trust root verifiers and gateways pin "
        "(KEYMINT_TRUST_ROOT): for the first key only; later keys are endorsed by the one before",
    )
    dkg.add_argument(
        "--issuer",
        default=os.environ.get("KEYMINT_ISSUER"),
        help="the gateway's issuer, written into the trust root (default: $KEYMINT_ISSUER)",
    )

    _command(subparsers, "refresh", _refresh, "new shares for every holder, the same group key")

    reshare = _command(
        subparsers, "reshare", _reshare, "the same group key onto new signers or a new threshold"
    )
    _threshold(reshare, required=True)
    reshare.add_argument(
        "--recipients",
        type=_identifiers,
        required=True,
        help="comma-separated identifiers that will hold the key, e.g. 1,2,3,4,5",
    )
    reshare.add_argument(
        "--dealers",
        type=_identifiers,
        help="current holders that deal (default: the lowest-numbered reachable ones)",
    )

    deal = _command(
        subparsers,
        "deal",
        _deal,
        "DEVELOPMENT ONLY: this command generates the group secret and deals the shares "
        "(signers take part only when started with KEYMINT_DEV_ALLOW_TRUSTED_DEALER=true)",
    )
    _threshold(deal, required=False)
    _replace(deal)


def _command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    ceremony: Ceremony,
    summary: str,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=summary, description=summary)
    parser.add_argument(
        "--signer",
        dest="signers",
        action="append",
        type=_signer_address,
        required=True,
        metavar="ID=HOST:PORT",
        help="a signer's identifier and ceremony address; repeat for each signer",
    )
    parser.add_argument(
        "--tls-dir",
        type=Path,
        default=os.environ.get("KEYMINT_TLS_DIR"),
        help="directory with ca.pem and the driver's certificate (default: $KEYMINT_TLS_DIR)",
    )
    parser.add_argument(
        "--identity",
        default=operator_name(),
        help="certificate name in --tls-dir of an operator the signers accept "
        "(default: %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per signer call")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=_handler(name), ceremony=ceremony)
    return parser


def _threshold(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "-t",
        "--threshold",
        type=int,
        required=required,
        default=None if required else int(os.environ.get("FROST_T", "2")),
        help="signers needed to sign" + ("" if required else " (default: $FROST_T or 2)"),
    )


def _replace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replace-existing-key",
        action="store_true",
        help="let signers that already hold a key drop it for the new one (each needs a local "
        "approval: `signer approve-replace` on its host)",
    )


def _signer_address(text: str) -> tuple[int, str]:
    identifier, sep, address = text.partition("=")
    if not sep or not identifier.isdigit() or int(identifier) < 1 or not address:
        raise argparse.ArgumentTypeError(f"{text!r} is not ID=HOST:PORT")
    return int(identifier), address


def _identifiers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 1,2,3") from None


async def _dkg(driver: CeremonyDriver, args: argparse.Namespace) -> CeremonyResult:
    return await driver.dkg(args.threshold, replace_existing_key=args.replace_existing_key)


async def _refresh(driver: CeremonyDriver, args: argparse.Namespace) -> CeremonyResult:
    return await driver.refresh()


async def _reshare(driver: CeremonyDriver, args: argparse.Namespace) -> CeremonyResult:
    return await driver.reshare(args.threshold, args.recipients, dealers=args.dealers)


async def _deal(driver: CeremonyDriver, args: argparse.Namespace) -> CeremonyResult:
    print(
        "WARNING: trusted-dealer install: this process generates the whole group secret. "
        "Development only; production keys come from `signer dkg`.",
        file=sys.stderr,
    )
    return await driver.deal(args.threshold, replace_existing_key=args.replace_existing_key)


async def run_ceremony(args: argparse.Namespace) -> CeremonyResult:
    """Connect to the signers named in `args` and run the command's ceremony over them."""
    ceremony: Ceremony = args.ceremony
    if args.tls_dir is None:
        raise SignerError("--tls-dir (or KEYMINT_TLS_DIR) is required")
    addresses = dict(args.signers)
    if len(addresses) != len(args.signers):
        raise SignerError("a signer identifier is given twice")
    files = tls_files(args.tls_dir, args.identity)
    async with connect(addresses, tls_files=files, rpc_timeout=args.timeout) as driver:
        return await ceremony(driver, args)


def _handler(name: str) -> Callable[[argparse.Namespace], int]:
    def handle(args: argparse.Namespace) -> int:
        trust_root_out: Path | None = getattr(args, "trust_root_out", None)
        if trust_root_out is not None and not args.issuer:
            print(
                f"signer {name}: --trust-root-out needs --issuer (or KEYMINT_ISSUER)",
                file=sys.stderr,
            )
            return 2
        try:
            result = asyncio.run(run_ceremony(args))
        except (SignerError, OSError) as exc:  # OSError: unreadable TLS files
            print(f"signer {name}: {exc}", file=sys.stderr)
            return 1
        print(render(result, as_json=args.json))
        if trust_root_out is not None:
            write_trust_root(trust_root_out, TrustRoot(args.issuer, (result.group_public_key,)))
            print(f"trust root written to {trust_root_out}", file=sys.stderr)
        return 0

    return handle


def write_trust_root(path: Path, root: TrustRoot) -> None:
    """The trust root document, written whole or not at all."""
    write_atomically(path, (json.dumps(root.to_document(), indent=2) + "\n").encode())


def render(result: CeremonyResult, *, as_json: bool) -> str:
    package = result.package
    if as_json:
        return json.dumps(
            {
                "ceremony_id": result.ceremony_id,
                "kind": result.kind.name.lower(),
                "threshold": package.min_participants,
                "signers": package.identifiers,
                "group_public_key": result.group_public_key.hex(),
                "kid": result.kid,
                "jwk": public_jwk(result.group_public_key),
            },
            indent=2,
        )
    holders = ", ".join(str(i) for i in package.identifiers)
    return "\n".join(
        [
            f"ceremony {result.ceremony_id} ({result.kind.name.lower()}) complete: "
            f"{package.min_participants}-of-{len(package.identifiers)}, signers {holders}",
            f"group public key: {result.group_public_key.hex()}",
            f"kid: {result.kid}",
        ]
    )
