"""Keys a verifier may trust: chained by t-signer endorsements from the root operators pin.

The gateway serves its JWKS and, beside it, `/.well-known/keymint-endorsements.json`: the root kids,
the endorsement chain and the kids it publishes now. Whoever serves these documents is a cache, not
an authority: `trusted_keys` accepts a key only when the chain endorses it from the pinned trust
root (`signer.endorsement.verify_chain`), and the served list of published kids can only narrow
that set. A chain with any endorsement that does not verify is refused whole.

    extauthz pin-keys --trust-root root.json \\
        --endorsements https://keymint.example/.well-known/keymint-endorsements.json \\
        --out /etc/envoy/keymint-jwks.json

writes the trusted keys as a JWKS for Envoy's jwt_authn `local_jwks` (atomically: a reader never
sees half a file). `extauthz verify --trust-root` uses the same function.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from extauthz.identity._http import FetchError, fetch_json
from extauthz.tools.offline_verify import (
    DEFAULT_FETCH_TIMEOUT_SECONDS,
    Ed25519KeySet,
    KeySetError,
    positive_seconds,
)
from signer.endorsement import EndorsementError, TrustRoot, verify_chain
from signer.files import write_atomically
from signer.token import kid_for, public_jwk

MAX_ENDORSEMENTS_BYTES: Final = 1024 * 1024


def load_trust_root(path: str | Path) -> TrustRoot:
    """The trust root document at `path` (`{"issuer": ..., "keys": [<JWK>...]}`)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise KeySetError(f"{path}: cannot read the trust root: {exc}") from None
    except (ValueError, RecursionError):
        raise KeySetError(f"{path}: the trust root is not JSON") from None
    try:
        return TrustRoot.from_document(document)
    except EndorsementError as exc:
        raise KeySetError(f"{path}: {exc}") from None


def read_endorsements(path: str | Path) -> object:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise KeySetError(f"{path}: cannot read: {exc}") from None
    except (ValueError, RecursionError):
        raise KeySetError(f"{path}: not JSON") from None


async def fetch_endorsements(
    url: str, *, allow_http: bool = False, timeout: float = DEFAULT_FETCH_TIMEOUT_SECONDS
) -> object:
    """GET the endorsements document (https only unless `allow_http`; no redirects)."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme != "https" and not (allow_http and scheme == "http"):
        raise KeySetError(f"{url}: the endorsements URL must be https (http needs --allow-http)")
    try:
        async with aiohttp.ClientSession() as session:
            response = await fetch_json(
                url, session=session, timeout=timeout, max_bytes=MAX_ENDORSEMENTS_BYTES
            )
    except FetchError as exc:
        raise KeySetError(f"cannot fetch the endorsements: {exc}") from None
    return response.document


def trusted_key_bytes(root: TrustRoot, document: object, *, source: str) -> dict[str, bytes]:
    """The keys `document` chains from `root`, by kid, limited to the kids it says it publishes.

    Raises KeySetError when the document is not an endorsements document for the root's issuer,
    or when any endorsement in it does not verify (naming the endorsement and why).
    """
    if not isinstance(document, dict) or not isinstance(document.get("endorsements"), list):
        raise KeySetError(f"{source}: not an endorsements document (no 'endorsements' list)")
    if document.get("issuer", root.issuer) != root.issuer:
        raise KeySetError(f"{source}: it is for issuer {document.get('issuer')!r}")
    try:
        chained = verify_chain(root, document["endorsements"])
    except EndorsementError as exc:
        raise KeySetError(
            f"{source}: the chain does not verify from the trust root: {exc}"
        ) from None
    trusted = {kid_for(key): key for key in chained}
    published = document.get("keys")
    if published is None:
        return trusted
    if not isinstance(published, list):
        raise KeySetError(f"{source}: 'keys' is not a list of kids")
    return {kid: key for kid, key in trusted.items() if kid in published}


def trusted_keys(root: TrustRoot, document: object, *, source: str) -> Ed25519KeySet:
    """`trusted_key_bytes` as the key set `verify_token` checks tokens against."""
    keys = trusted_key_bytes(root, document, source=source)
    return key_set(keys, f"the keys {source} chains from the trust root")


def key_set(keys: Mapping[str, bytes], source: str) -> Ed25519KeySet:
    if not keys:
        raise KeySetError(f"{source}: none")
    return Ed25519KeySet(
        {kid: Ed25519PublicKey.from_public_bytes(key) for kid, key in keys.items()}, {}, source
    )


def narrowed(trusted: Ed25519KeySet, served: Ed25519KeySet) -> Ed25519KeySet:
    """The trusted keys a served JWKS also holds, with the same key bytes."""
    keys = {
        kid: key
        for kid, key in trusted.keys.items()
        if kid in served.keys and _raw(served.keys[kid]) == _raw(key)
    }
    return Ed25519KeySet(keys, {}, f"{trusted.source} and {served.source}")


def pinned_jwks(keys: Mapping[str, bytes]) -> dict[str, object]:
    return {"keys": [public_jwk(key) for key in keys.values()]}


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# --- the command ---------------------------------------------------------------------------


def add_endorsement_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--trust-root",
        type=Path,
        metavar="FILE",
        required=required,
        help='the pinned trust root: {"issuer": ..., "keys": [<Ed25519 JWK>]}',
    )
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument(
        "--endorsements", metavar="URL", help="ISSUER/.well-known/keymint-endorsements.json"
    )
    source.add_argument(
        "--endorsements-file", type=Path, metavar="PATH", help="the endorsements document"
    )


def endorsed_keys(args: argparse.Namespace) -> tuple[TrustRoot, dict[str, bytes], str]:
    """The trust root, the keys its endorsements chain to, and where they came from."""
    root = load_trust_root(args.trust_root)
    if args.endorsements_file is not None:
        source = str(args.endorsements_file)
        document = read_endorsements(args.endorsements_file)
    else:
        source = args.endorsements
        document = asyncio.run(
            fetch_endorsements(args.endorsements, allow_http=args.allow_http, timeout=args.timeout)
        )
    return root, trusted_key_bytes(root, document, source=source), source


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    summary = "write a JWKS of the keys endorsed from a pinned trust root (for local_jwks)"
    parser = subparsers.add_parser("pin-keys", help=summary, description=summary)
    add_endorsement_arguments(parser, required=True)
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="the JWKS to write")
    parser.add_argument(
        "--allow-http", action="store_true", help="allow an http:// URL (testing only)"
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_FETCH_TIMEOUT_SECONDS,
        help="seconds for the fetch (default: %(default)s)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The `pin-keys` command: 0 once the file is written; 2 if the chain cannot be trusted."""
    _root, keys, source = endorsed_keys(args)
    if not keys:
        raise KeySetError(f"{source}: no key it publishes is endorsed from the trust root")
    data = json.dumps(pinned_jwks(keys), indent=2).encode() + b"\n"
    write_atomically(args.out, data)
    print(f"pinned {len(keys)} key(s) to {args.out}: {', '.join(keys)}")
    return 0
