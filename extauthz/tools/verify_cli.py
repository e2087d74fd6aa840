"""The `extauthz verify` command: `extauthz.tools.offline_verify` checks the token, with keys from
`extauthz.tools.pinned_keys` (endorsed from a pinned trust root) or, if told, from a served JWKS."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

from extauthz.identity.errors import IdentityError
from extauthz.tools.offline_verify import (
    DEFAULT_FETCH_TIMEOUT_SECONDS,
    DEFAULT_LEEWAY_SECONDS,
    Ed25519KeySet,
    KeySetError,
    positive_seconds,
    seconds,
    verify_token,
)
from extauthz.tools.pinned_keys import add_endorsement_arguments, endorsed_keys, key_set, narrowed


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    summary = "verify a minted token offline against keys endorsed from a pinned trust root"
    parser = subparsers.add_parser("verify", help=summary, description=summary)
    add_endorsement_arguments(parser, required=False)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--jwks", metavar="URL", help="the JWKS URL, e.g. ISSUER/.well-known/...")
    source.add_argument("--jwks-file", type=Path, metavar="PATH", help="a JWKS JSON file")
    parser.add_argument(
        "--trust-served-keys",
        action="store_true",
        help="without --trust-root: trust every key in the JWKS, i.e. whoever serves it",
    )
    parser.add_argument("--issuer", required=True, help="the iss the token must carry")
    parser.add_argument("--audience", required=True, help="an aud the token must carry")
    parser.add_argument(
        "--leeway",
        type=seconds,
        default=DEFAULT_LEEWAY_SECONDS,
        help="seconds of clock skew allowed for exp/nbf/iat (default: %(default)s)",
    )
    parser.add_argument(
        "--allow-http", action="store_true", help="allow an http:// JWKS URL (testing only)"
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_FETCH_TIMEOUT_SECONDS,
        help="seconds for each fetch (default: %(default)s)",
    )
    parser.add_argument("token", help="the token, or - to read it from stdin")
    parser.set_defaults(handler=run, parser=parser)


def run(args: argparse.Namespace, *, clock: Callable[[], float] = time.time) -> int:
    """The `verify` command: 0 and the token as JSON if valid, 1 and the reason if not."""
    read_stdin = args.token == "-"  # noqa: S105 (the stdin marker, not a password)
    keys = _keys(args)
    token = (sys.stdin.read() if read_stdin else args.token).strip()
    try:
        verified = verify_token(
            token,
            keys,
            issuer=args.issuer,
            audience=args.audience,
            now=clock(),
            leeway=args.leeway,
        )
    except IdentityError as refused:
        print(f"token refused: {refused}", file=sys.stderr)
        return 1
    print(verified.to_json())
    return 0


def _keys(args: argparse.Namespace) -> Ed25519KeySet:
    parser: argparse.ArgumentParser = args.parser
    endorsements = args.endorsements or args.endorsements_file
    if args.trust_root is not None and endorsements is None:
        parser.error("--trust-root needs --endorsements or --endorsements-file")
    if args.trust_root is None and endorsements is not None:
        parser.error("--endorsements is checked against a --trust-root; give one")
    served_source = args.jwks or args.jwks_file
    if args.trust_root is None and not args.trust_served_keys:
        parser.error(
            "give --trust-root FILE and --endorsements: without them every key in the JWKS "
            "is trusted, i.e. whoever serves it (say --trust-served-keys to accept that)"
        )
    if args.trust_root is None and served_source is None:
        parser.error("--trust-served-keys needs --jwks or --jwks-file")
    served = None
    if args.jwks_file is not None:
        served = Ed25519KeySet.from_file(args.jwks_file)
    elif args.jwks is not None:
        served = asyncio.run(
            Ed25519KeySet.from_url(args.jwks, allow_http=args.allow_http, timeout=args.timeout)
        )
    if args.trust_root is None:
        assert served is not None, "checked above"
        return served
    root, keys, source = endorsed_keys(args)
    if root.issuer != args.issuer:
        raise KeySetError(f"the trust root is for issuer {root.issuer!r}, not {args.issuer!r}")
    trusted = key_set(keys, f"the keys {source} chains from the trust root")
    return trusted if served is None else narrowed(trusted, served)
