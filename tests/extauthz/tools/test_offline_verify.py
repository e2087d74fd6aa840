"""`extauthz verify`: tokens signed with a plain Ed25519 key, checked against a JWKS file or URL."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from extauthz.cli import main
from extauthz.identity.errors import IdentityError, Reason
from extauthz.tools.offline_verify import Ed25519KeySet, KeySetError, verify_token
from signer.token import b64url, compact, header_for, kid_for, public_jwk, signing_input

ISSUER = "https://keymint.test"
AUDIENCE = "https://api.internal"
NOW = 1_700_000_000.0
REMOVE = object()


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def jwks_file(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(raw_public(key))]}))
    return path


def claims(now: float, **overrides: object) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "repo:octo-org/octo-repo:environment:prod",
        "aud": AUDIENCE,
        "scope": "deploy",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + 900,
        "jti": "4f1c1a52-5a0c-4a9e-9f6e-1b0c8a2d7e11",
        "repository_id": "35",
    }
    for name, value in overrides.items():
        if value is REMOVE:
            del base[name]
        else:
            base[name] = value
    return base


def mint(
    key: Ed25519PrivateKey,
    payload: Mapping[str, Any],
    header_overrides: Mapping[str, Any] | None = None,
) -> str:
    header: dict[str, Any] = {**header_for(raw_public(key)), **(header_overrides or {})}
    message = signing_input(header, payload)
    return compact(message, key.sign(message))


def verify_args(jwks_file: Path, token: str, *extra: str) -> list[str]:
    return [
        "verify",
        "--trust-served-keys",  # these tests are about the JWKS and the token checks
        "--jwks-file",
        str(jwks_file),
        "--issuer",
        ISSUER,
        "--audience",
        AUDIENCE,
        *extra,
        token,
    ]


# --- the command, against the wall clock -----------------------------------------------------


def test_valid_token_prints_header_and_claims(
    key: Ed25519PrivateKey, jwks_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = claims(time.time())
    assert main(verify_args(jwks_file, mint(key, payload))) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["header"] == {"alg": "EdDSA", "kid": kid_for(raw_public(key)), "typ": "at+jwt"}
    assert shown["claims"] == payload


def test_token_from_stdin(
    key: Ed25519PrivateKey,
    jwks_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(mint(key, claims(time.time())) + "\n"))
    assert main(verify_args(jwks_file, "-")) == 0
    assert json.loads(capsys.readouterr().out)["claims"]["iss"] == ISSUER


def _tamper_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    flipped = "A" if signature[10] != "A" else "B"  # not the last char: its low bits are padding
    return f"{head}.{payload}.{signature[:10]}{flipped}{signature[11:]}"


def _swap_payload(token: str, payload: Mapping[str, Any]) -> str:
    head, _, signature = token.split(".")
    body = b64url(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{head}.{body}.{signature}"


def _unsigned(key: Ed25519PrivateKey, payload: Mapping[str, Any]) -> str:
    header = {**header_for(raw_public(key)), "alg": "none"}
    return signing_input(header, payload).decode() + "."


def _hs256_with_public_key(key: Ed25519PrivateKey, payload: Mapping[str, Any]) -> str:
    """The algorithm-confusion attack: HMAC keyed with the (public) verification key."""
    header = {**header_for(raw_public(key)), "alg": "HS256"}
    message = signing_input(header, payload)
    mac = hmac.HMAC(raw_public(key), hashes.SHA256())
    mac.update(message)
    return compact(message, mac.finalize())


REFUSALS: dict[str, tuple[Callable[[Ed25519PrivateKey, float], str], Reason]] = {
    "tampered signature": (
        lambda k, now: _tamper_signature(mint(k, claims(now))),
        Reason.BAD_SIGNATURE,
    ),
    "tampered claims": (
        lambda k, now: _swap_payload(mint(k, claims(now)), claims(now, scope="admin")),
        Reason.BAD_SIGNATURE,
    ),
    "wrong issuer": (
        lambda k, now: mint(k, claims(now, iss="https://evil.test")),
        Reason.UNKNOWN_ISSUER,
    ),
    "wrong audience": (
        lambda k, now: mint(k, claims(now, aud="https://other.internal")),
        Reason.BAD_AUDIENCE,
    ),
    "expired": (
        lambda k, now: mint(k, claims(now - 3600)),
        Reason.TOKEN_EXPIRED,
    ),
    "alg none": (lambda k, now: _unsigned(k, claims(now)), Reason.ALG_NOT_ALLOWED),
    "HS256 keyed with the public key": (
        lambda k, now: _hs256_with_public_key(k, claims(now)),
        Reason.ALG_NOT_ALLOWED,
    ),
    "unknown kid": (
        lambda k, now: mint(k, claims(now), {"kid": "not-our-key"}),
        Reason.UNKNOWN_KID,
    ),
    "missing jti": (lambda k, now: mint(k, claims(now, jti=REMOVE)), Reason.MISSING_CLAIM),
    "missing sub": (lambda k, now: mint(k, claims(now, sub=REMOVE)), Reason.MISSING_CLAIM),
    "missing nbf": (lambda k, now: mint(k, claims(now, nbf=REMOVE)), Reason.MISSING_CLAIM),
    "typ JWT, not an access token": (
        lambda k, now: mint(k, claims(now), {"typ": "JWT"}),
        Reason.BAD_TOKEN_TYPE,
    ),
    "crit header": (
        lambda k, now: mint(k, claims(now), {"crit": ["exp"]}),
        Reason.CRIT_NOT_SUPPORTED,
    ),
    "no kid": (lambda k, now: mint(k, claims(now), {"kid": None}), Reason.MISSING_KID),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_token_exits_1_with_reason(
    case: str,
    key: Ed25519PrivateKey,
    jwks_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make, reason = REFUSALS[case]
    token = make(key, time.time())
    assert main(verify_args(jwks_file, token)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"token refused: {reason.value}: ")


def test_unknown_kid_names_the_keys_there_are(
    key: Ed25519PrivateKey, jwks_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(verify_args(jwks_file, mint(key, claims(time.time()), {"kid": "k2"}))) == 1
    err = capsys.readouterr().err
    assert "'k2' is not in" in err
    assert kid_for(raw_public(key)) in err


def test_key_in_the_token_header_is_never_used(
    key: Ed25519PrivateKey, jwks_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    attacker = Ed25519PrivateKey.generate()
    attacker_jwk = public_jwk(raw_public(attacker))
    overrides = {
        "kid": kid_for(raw_public(key)),  # our kid, the attacker's signature
        "jwk": attacker_jwk,
        "jku": "https://evil.test/jwks.json",
        "x5u": "https://evil.test/cert.pem",
    }
    forged = mint(attacker, claims(time.time()), overrides)
    assert main(verify_args(jwks_file, forged)) == 1
    assert capsys.readouterr().err.startswith("token refused: bad_signature: ")


def test_kid_of_a_non_ed25519_key(
    key: Ed25519PrivateKey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rsa_like = {"kty": "RSA", "kid": "rsa-1", "n": "AQAB", "e": "AQAB", "alg": "RS256"}
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps({"keys": [rsa_like, public_jwk(raw_public(key))]}))
    token = mint(key, claims(time.time()), {"kid": "rsa-1"})
    assert main(verify_args(path, token)) == 1
    assert "not OKP Ed25519" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"keys": []}, "no OKP Ed25519 signing key"),
        ([], "not a JWKS"),
        ({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "d": "AAAA"}]}, "private key"),
    ],
)
def test_unusable_jwks_file_exits_2(
    key: Ed25519PrivateKey,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    document: object,
    problem: str,
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(document))
    assert main(verify_args(path, mint(key, claims(time.time())))) == 2
    assert problem in capsys.readouterr().err


def test_missing_jwks_file_exits_2(
    key: Ed25519PrivateKey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(verify_args(tmp_path / "absent.json", mint(key, claims(time.time())))) == 2
    assert "cannot read" in capsys.readouterr().err


# --- JWKS over HTTP -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve_jwks(document: object, status: int = 200) -> AsyncIterator[tuple[str, list[str]]]:
    """A local JWKS endpoint; yields its URL and the paths it was asked for."""
    requests: list[str] = []

    async def jwks(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.json_response(document, status=status)

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{port}/.well-known/jwks.json", requests
    finally:
        await runner.cleanup()


def http_args(url: str, token: str, *extra: str) -> list[str]:
    return [
        "verify",
        "--trust-served-keys",
        "--jwks",
        url,
        "--issuer",
        ISSUER,
        "--audience",
        AUDIENCE,
        *extra,
        token,
    ]


def test_jwks_over_http(key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]) -> None:
    token = mint(key, claims(time.time()))

    async def scenario() -> tuple[int, list[str]]:
        async with serve_jwks({"keys": [public_jwk(raw_public(key))]}) as (url, requests):
            # main runs its own event loop, so it runs in a thread beside the server's loop
            code = await asyncio.to_thread(main, http_args(url, token, "--allow-http"))
            return code, requests

    code, requests = asyncio.run(scenario())
    assert code == 0
    assert requests == ["/.well-known/jwks.json"]
    assert json.loads(capsys.readouterr().out)["claims"]["aud"] == AUDIENCE


def test_http_jwks_needs_allow_http(
    key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    token = mint(key, claims(time.time()))
    assert main(http_args("http://127.0.0.1:9/.well-known/jwks.json", token)) == 2
    assert "must be https" in capsys.readouterr().err


def test_jwks_endpoint_error_exits_2(
    key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    token = mint(key, claims(time.time()))

    async def scenario() -> int:
        async with serve_jwks({"error": "nope"}, status=500) as (url, _):
            return await asyncio.to_thread(main, http_args(url, token, "--allow-http"))

    assert asyncio.run(scenario()) == 2
    assert "HTTP 500" in capsys.readouterr().err


def test_fetch_failure_is_a_keyset_error() -> None:
    with pytest.raises(KeySetError, match="cannot fetch"):
        asyncio.run(
            Ed25519KeySet.from_url(
                "http://127.0.0.1:9/.well-known/jwks.json", allow_http=True, timeout=2.0
            )
        )


# --- time, exactly (the library function, with an injected now) -----------------------------


@pytest.fixture
def keys(key: Ed25519PrivateKey) -> Ed25519KeySet:
    return Ed25519KeySet.from_jwks({"keys": [public_jwk(raw_public(key))]}, source="test")


def refusal(token: str, keys: Ed25519KeySet, now: float, leeway: float = 30.0) -> Reason:
    with pytest.raises(IdentityError) as caught:
        verify_token(token, keys, issuer=ISSUER, audience=AUDIENCE, now=now, leeway=leeway)
    return caught.value.reason


def test_valid_at_now(key: Ed25519PrivateKey, keys: Ed25519KeySet) -> None:
    verified = verify_token(mint(key, claims(NOW)), keys, issuer=ISSUER, audience=AUDIENCE, now=NOW)
    assert verified.claims["jti"] == claims(NOW)["jti"]


def test_expiry_is_exact_with_leeway(key: Ed25519PrivateKey, keys: Ed25519KeySet) -> None:
    token = mint(key, claims(NOW))  # exp = NOW + 900
    verify_token(token, keys, issuer=ISSUER, audience=AUDIENCE, now=NOW + 929, leeway=30)
    assert refusal(token, keys, NOW + 930) is Reason.TOKEN_EXPIRED
    assert refusal(token, keys, NOW + 900, leeway=0) is Reason.TOKEN_EXPIRED


def test_not_yet_valid_and_issued_in_the_future(
    key: Ed25519PrivateKey, keys: Ed25519KeySet
) -> None:
    later = mint(key, claims(NOW, nbf=int(NOW) + 60))
    assert refusal(later, keys, NOW) is Reason.TOKEN_NOT_YET_VALID
    future = mint(key, claims(NOW, iat=int(NOW) + 60))
    assert refusal(future, keys, NOW) is Reason.IAT_IN_FUTURE


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": "soon"}, Reason.INVALID_CLAIM),
        ({"exp": True}, Reason.INVALID_CLAIM),
        ({"exp": int(NOW) - 1}, Reason.INVALID_CLAIM),  # exp before iat
        ({"sub": ""}, Reason.INVALID_CLAIM),
        ({"jti": 7}, Reason.INVALID_CLAIM),
        ({"aud": ["https://other.internal"]}, Reason.BAD_AUDIENCE),
    ],
)
def test_bad_claim_values(
    key: Ed25519PrivateKey, keys: Ed25519KeySet, overrides: dict[str, object], reason: Reason
) -> None:
    assert refusal(mint(key, claims(NOW, **overrides)), keys, NOW) is reason


def test_audience_list_containing_ours(key: Ed25519PrivateKey, keys: Ed25519KeySet) -> None:
    token = mint(key, claims(NOW, aud=["https://other.internal", AUDIENCE]))
    verify_token(token, keys, issuer=ISSUER, audience=AUDIENCE, now=NOW)


def test_repeated_claim_is_refused(key: Ed25519PrivateKey, keys: Ed25519KeySet) -> None:
    header = header_for(raw_public(key))
    head = b64url(json.dumps(header).encode())
    body = json.dumps(claims(NOW))[:-1] + ', "aud": "https://other.internal"}'
    message = f"{head}.{b64url(body.encode())}".encode()
    token = compact(message, key.sign(message))
    assert refusal(token, keys, NOW) is Reason.MALFORMED_TOKEN


@pytest.mark.parametrize(
    "token",
    ["", "a.b", "a.b.c.d", "!!.e30.AA", base64.urlsafe_b64encode(b"{}").decode() + ".e30.AA"],
)
def test_malformed_tokens(token: str, keys: Ed25519KeySet) -> None:
    assert refusal(token, keys, NOW) in (Reason.MALFORMED_TOKEN, Reason.ALG_NOT_ALLOWED)


def test_token_too_large(keys: Ed25519KeySet) -> None:
    assert refusal("a" * 20_000, keys, NOW) is Reason.TOKEN_TOO_LARGE
