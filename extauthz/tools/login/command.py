"""`extauthz login` and `extauthz token-info`: self-minting and the time left on a token.

    extauthz login --idp https://login.example.com --client-id keymint-cli \\
        --token-url https://keymint.example.com/token \\
        --audience https://deploy.internal --scope deploy:read [--out ~/.keymint/deploy.jwt]
    export KEYMINT_TOKEN="$(extauthz login ...)"   # the token never lands in shell history
    extauthz token-info ~/.keymint/deploy.jwt       # audience, scope, time left

`--flow device` (the default) shows a URL and a code to enter in any browser, and waits (RFC
8628); `--flow pkce` opens the IdP's sign-in page and takes the redirect on 127.0.0.1 (RFC 7636,
RFC 8252). With a refresh token in the OS keyring, neither is needed: the IdP is asked for a
fresh ID token silently. The token goes to stdout, or with `--out` to a file only its owner can
read; how long it lives goes to stderr. `--idp`, `--client-id` and `--token-url` default to
$KEYMINT_LOGIN_IDP, $KEYMINT_LOGIN_CLIENT_ID and $KEYMINT_TOKEN_URL.

Exit codes: 0 a token was issued; 1 someone said no (the user denied the sign-in, its code
expired, keymint refused the exchange), or token-info found the token expired; 2 the command
could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import sys
import tempfile
import time
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from extauthz.tools.exchange_client import (
    ExchangeClient,
    ExchangeClientError,
    ExchangedToken,
    RetryPolicy,
    TokenEndpointError,
)
from extauthz.tools.login.idp import (
    DeviceFlow,
    IdpAnswerError,
    IdpClient,
    IdpMetadata,
    IdpTokens,
    LoginError,
    LoginRefused,
    PkceRequest,
    Sleep,
    exchange_code,
    refresh,
)
from extauthz.tools.login.loopback import LoopbackReceiver
from extauthz.tools.login.store import RefreshTokenStore, account_for, system_store

DEFAULT_IDP_SCOPE = "openid email profile"
FLOWS = ("device", "pkce")

Browser = Callable[[str], object]


@dataclass(frozen=True, slots=True)
class LoginOptions:
    idp: str
    client_id: str
    token_url: str
    audience: str
    scope: str | None = None
    flow: str = "device"
    idp_scope: str = DEFAULT_IDP_SCOPE
    out: Path | None = None
    use_keyring: bool = True
    open_browser: bool = True
    allow_http: bool = False
    timeout: float = 10.0
    login_timeout: float = 300.0

    def __post_init__(self) -> None:
        if self.flow not in FLOWS:
            raise LoginError(f"--flow must be one of {', '.join(FLOWS)}")
        if "openid" not in self.idp_scope.split():
            raise LoginError("--idp-scope must include 'openid': keymint exchanges an ID token")


async def run_login(
    options: LoginOptions,
    *,
    store: RefreshTokenStore | None,
    out: TextIO,
    err: TextIO,
    sleep: Sleep = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    clock: Callable[[], float] = time.time,
    browser: Browser = webbrowser.open,
) -> ExchangedToken:
    """The whole command: an ID token from the IdP, then keymint's token for it."""
    async with aiohttp.ClientSession() as session:
        idp = IdpClient(
            session,
            issuer=options.idp,
            client_id=options.client_id,
            allow_http=options.allow_http,
            timeout=options.timeout,
        )
        metadata = await idp.discover()
        id_token = await _silently(idp, metadata, store, err)
        if id_token is None:
            # Ask for a refresh token only when there is somewhere safe to keep it.
            scope = options.idp_scope + (" offline_access" if store is not None else "")
            if options.flow == "device":
                tokens = await _device(idp, metadata, scope, err, sleep, monotonic)
            else:
                tokens = await _pkce(idp, metadata, scope, options, err, browser)
            if store is not None and tokens.refresh_token is not None:
                store.save(tokens.refresh_token)
            id_token = tokens.id_token
        keymint = ExchangeClient(
            session, retry=RetryPolicy(attempts=2), timeout=options.timeout, sleep=sleep
        )
        try:
            token = await keymint.exchange(
                options.token_url, id_token, audience=options.audience, scope=options.scope
            )
        except TokenEndpointError as exc:
            detail = f"{exc.error}: {exc.description}"
            raise LoginRefused(f"keymint refused the exchange: {detail}") from None
    emit(token, options, out, err, clock())
    return token


async def _silently(
    idp: IdpClient, metadata: IdpMetadata, store: RefreshTokenStore | None, err: TextIO
) -> str | None:
    """An ID token from the keyring's refresh token, or None (and the sign-in asks the user)."""
    saved = store.load() if store is not None else None
    if store is None or saved is None:
        return None
    try:
        tokens = await refresh(idp, metadata, saved)
    except IdpAnswerError as exc:
        store.delete()  # refused once, refused forever: do not keep trying it
        print(f"The saved sign-in was refused ({exc.error}); signing in again.", file=err)
        return None
    except LoginError as exc:
        print(f"The saved sign-in did not work ({exc}); signing in again.", file=err)
        return None
    if tokens.refresh_token is not None and tokens.refresh_token != saved:
        store.save(tokens.refresh_token)  # the IdP rotated it
    print(f"Signed in at {metadata.issuer} with the saved sign-in.", file=err)
    return tokens.id_token


async def _device(
    idp: IdpClient,
    metadata: IdpMetadata,
    scope: str,
    err: TextIO,
    sleep: Sleep,
    monotonic: Callable[[], float],
) -> IdpTokens:
    flow = DeviceFlow(idp, metadata, scope=scope, sleep=sleep, clock=monotonic)
    authorization = await flow.start()
    print(
        f"To sign in, open {authorization.verification_uri} and enter the code "
        f"{authorization.user_code}",
        file=err,
    )
    if authorization.verification_uri_complete:
        print(f"(or open {authorization.verification_uri_complete})", file=err)
    print(f"The code expires in {time_left(authorization.expires_in)}.", file=err, flush=True)
    return await flow.poll(authorization)


async def _pkce(
    idp: IdpClient,
    metadata: IdpMetadata,
    scope: str,
    options: LoginOptions,
    err: TextIO,
    browser: Browser,
) -> IdpTokens:
    async with LoopbackReceiver() as receiver:
        request = PkceRequest(redirect_uri=receiver.redirect_uri, scope=scope)
        url = request.url(metadata, idp.client_id)
        print(f"To sign in, open {url}", file=err, flush=True)
        if options.open_browser:
            browser(url)
        query = await receiver.wait(options.login_timeout)
    code = request.code_from(metadata, query)
    return await exchange_code(idp, metadata, request, code)


# --- output -----------------------------------------------------------------------------------


def emit(
    token: ExchangedToken, options: LoginOptions, out: TextIO, err: TextIO, now: float
) -> None:
    """The token to stdout or to `--out` (owner-only), then what it is for and how long it lives."""
    if options.out is not None:
        write_private(options.out, token.access_token + "\n")
        print(f"Token written to {options.out} (readable by you only).", file=err)
    else:
        print(token.access_token, file=out, flush=True)
    print(describe(unverified_claims(token.access_token), now), file=err, flush=True)


def write_private(path: Path, text: str) -> None:
    """Replace `path` with a file of mode 0600 holding `text` (never through a symlink)."""
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise LoginError(f"--out {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)  # replaces a symlink at `path`, never its target
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise LoginError(f"--out {path}: {exc.strerror or type(exc).__name__}") from None
        raise


def unverified_claims(token: str) -> Mapping[str, Any]:
    """A JWT's claims, NOT verified (for display only: `extauthz verify` checks tokens)."""
    try:
        payload = token.strip().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, IndexError):
        raise LoginError("this is not a JWT") from None
    if not isinstance(claims, dict):
        raise LoginError("this is not a JWT")
    return claims


def time_left(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


def describe(claims: Mapping[str, Any], now: float) -> str:
    """What a token is for and the time left on it."""
    exp = claims.get("exp")
    audience, scope = claims.get("aud", "?"), claims.get("scope", "")
    head = f"keymint token for {audience}" + (f", scope {scope!r}" if scope else "")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return f"{head}: no expiry (exp) in it"
    at = datetime.datetime.fromtimestamp(exp, datetime.UTC).strftime("%H:%M:%S UTC")
    if exp <= now:
        return f"{head}: expired {time_left(now - exp)} ago (at {at})"
    return f"{head}: valid for {time_left(exp - now)} (until {at})"


# --- the commands -----------------------------------------------------------------------------


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    summary = "sign in at your IdP and mint a short-lived, scoped keymint token"
    parser = subparsers.add_parser("login", help=summary, description=summary)
    env = os.environ
    parser.add_argument("--idp", default=env.get("KEYMINT_LOGIN_IDP"), help="the IdP's issuer URL")
    parser.add_argument(
        "--client-id",
        default=env.get("KEYMINT_LOGIN_CLIENT_ID"),
        help="keymint's client at the IdP",
    )
    parser.add_argument(
        "--token-url", default=env.get("KEYMINT_TOKEN_URL"), help="keymint's /token endpoint"
    )
    parser.add_argument("--audience", required=True, help="the API the token is for")
    parser.add_argument("--scope", help="space-separated scopes to ask for")
    parser.add_argument("--flow", choices=FLOWS, default="device", help="(default: %(default)s)")
    parser.add_argument(
        "--idp-scope",
        default=DEFAULT_IDP_SCOPE,
        help="scopes asked of the IdP (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, help="write the token to this file (mode 0600)")
    parser.add_argument(
        "--no-keyring",
        action="store_true",
        help="keep no refresh token (otherwise: in the OS keyring, if there is one)",
    )
    parser.add_argument("--no-browser", action="store_true", help="pkce: only print the URL")
    parser.add_argument("--allow-http", action="store_true", help="http URLs (testing only)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request")
    parser.set_defaults(handler=run)

    info = subparsers.add_parser(
        "token-info",
        help="show what a token is for and the time left on it (not a verification)",
        description="Decode a keymint token (without verifying it) and show its audience, "
        "scope and time left. Exit 1 when it has expired.",
    )
    info.add_argument("token", help="a file holding the token, or - for stdin")
    info.set_defaults(handler=run_token_info)


def options_from_args(args: argparse.Namespace) -> LoginOptions:
    for flag, value in (("--idp", args.idp), ("--client-id", args.client_id)):
        if not value:
            raise LoginError(f"{flag} is required (or set {_ENV_OF[flag]})")
    if not args.token_url:
        raise LoginError("--token-url is required (or set KEYMINT_TOKEN_URL)")
    return LoginOptions(
        idp=args.idp,
        client_id=args.client_id,
        token_url=args.token_url,
        audience=args.audience,
        scope=args.scope,
        flow=args.flow,
        idp_scope=args.idp_scope,
        out=args.out,
        use_keyring=not args.no_keyring,
        open_browser=not args.no_browser,
        allow_http=args.allow_http,
        timeout=args.timeout,
    )


_ENV_OF = {"--idp": "KEYMINT_LOGIN_IDP", "--client-id": "KEYMINT_LOGIN_CLIENT_ID"}


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    store = (
        system_store(account_for(options.idp, options.client_id)) if options.use_keyring else None
    )
    if options.use_keyring and store is None:
        print(
            "No OS keyring here: the IdP's refresh token is not kept, so the next login signs "
            "in again.",
            file=sys.stderr,
        )
    try:
        asyncio.run(run_login(options, store=store, out=sys.stdout, err=sys.stderr))
    except LoginRefused as exc:
        print(f"extauthz login: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("extauthz login: interrupted; no token was issued", file=sys.stderr)
        return 130
    except ExchangeClientError as exc:
        raise LoginError(str(exc)) from None
    return 0


def run_token_info(args: argparse.Namespace) -> int:
    try:
        source = args.token
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise LoginError(f"{source}: cannot read ({type(exc).__name__})") from None
    claims = unverified_claims(text)
    now = time.time()
    print(describe(claims, now))
    if claims.get("sub"):
        print(f"subject {claims['sub']}")
    exp = claims.get("exp")
    return 0 if isinstance(exp, int | float) and not isinstance(exp, bool) and exp > now else 1
