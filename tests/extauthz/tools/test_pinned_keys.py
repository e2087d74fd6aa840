"""`extauthz verify --trust-root` and `extauthz pin-keys`: only keys chained from the root."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from extauthz.cli import main
from signer.endorsement import TrustRoot, endorsement_message
from signer.token import compact, header_for, kid_for, public_jwk, signing_input

ISSUER = "https://keymint.test"
AUDIENCE = "https://api.internal"


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


ROOT, NEXT, ATTACKER = (Ed25519PrivateKey.generate() for _ in range(3))


def endorse(endorser: Ed25519PrivateKey, endorsed: Ed25519PrivateKey) -> str:
    message = endorsement_message(
        raw(endorser), raw(endorsed), issuer=ISSUER, issued_at=int(time.time())
    )
    return compact(message, endorser.sign(message))


def token(key: Ed25519PrivateKey) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "svc",
        "aud": AUDIENCE,
        "scope": "read",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "j-1",
    }
    message = signing_input(header_for(raw(key)), claims)
    return compact(message, key.sign(message))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "root.json"
    root.write_text(json.dumps(TrustRoot(ISSUER, (raw(ROOT),)).to_document()))
    endorsements = tmp_path / "endorsements.json"
    write(endorsements, [endorse(ROOT, NEXT)], [ROOT, NEXT])
    return {"root": root, "endorsements": endorsements, "dir": tmp_path}


def write(path: Path, chain: list[str], published: list[Ed25519PrivateKey]) -> None:
    document: dict[str, Any] = {
        "issuer": ISSUER,
        "roots": [kid_for(raw(ROOT))],
        "endorsements": chain,
        "keys": [kid_for(raw(k)) for k in published],
    }
    path.write_text(json.dumps(document))


def verify(files: dict[str, Path], presented: str, *extra: str) -> list[str]:
    return [
        "verify",
        "--trust-root",
        str(files["root"]),
        "--endorsements-file",
        str(files["endorsements"]),
        "--issuer",
        ISSUER,
        "--audience",
        AUDIENCE,
        *extra,
        presented,
    ]


def test_tokens_of_the_root_and_of_an_endorsed_key_verify(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    for key in (ROOT, NEXT):
        assert main(verify(files, token(key))) == 0
        assert json.loads(capsys.readouterr().out)["header"]["kid"] == kid_for(raw(key))


def test_a_key_the_chain_does_not_endorse_is_refused_even_in_the_served_jwks(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    jwks = files["dir"] / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(raw(k)) for k in (ROOT, NEXT, ATTACKER)]}))
    assert main(verify(files, token(ATTACKER), "--jwks-file", str(jwks))) == 1
    err = capsys.readouterr().err
    assert f"unknown_kid: kid '{kid_for(raw(ATTACKER))}' is not in the keys" in err
    assert "chains from the trust root" in err


def test_a_served_jwks_only_narrows_the_trusted_keys(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    jwks = files["dir"] / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(raw(ROOT))]}))
    assert main(verify(files, token(NEXT), "--jwks-file", str(jwks))) == 1
    assert "unknown_kid" in capsys.readouterr().err
    assert main(verify(files, token(ROOT), "--jwks-file", str(jwks))) == 0


def test_a_key_no_longer_published_is_not_trusted(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    write(files["endorsements"], [endorse(ROOT, NEXT)], [NEXT])  # the root key has retired
    assert main(verify(files, token(ROOT))) == 1
    assert "unknown_kid" in capsys.readouterr().err


def test_a_forged_endorsement_makes_the_chain_untrusted(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    write(files["endorsements"], [endorse(ROOT, NEXT), endorse(ATTACKER, ATTACKER)], [ATTACKER])
    assert main(verify(files, token(ATTACKER))) == 2
    err = capsys.readouterr().err
    assert "the chain does not verify from the trust root: endorsement 1: signed by key" in err
    assert f"'{kid_for(raw(ATTACKER))}', which is not trusted" in err


def test_a_trust_root_for_another_issuer_is_refused(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    files["root"].write_text(json.dumps(TrustRoot("https://other", (raw(ROOT),)).to_document()))
    assert main(verify(files, token(ROOT))) == 2
    assert "issuer" in capsys.readouterr().err


def test_pin_keys_writes_the_endorsed_published_keys(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = files["dir"] / "pinned.json"
    argv = [
        "pin-keys",
        "--trust-root",
        str(files["root"]),
        "--endorsements-file",
        str(files["endorsements"]),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert json.loads(out.read_text()) == {"keys": [public_jwk(raw(ROOT)), public_jwk(raw(NEXT))]}
    assert f"pinned 2 key(s) to {out}" in capsys.readouterr().out
    assert out.stat().st_mode & 0o777 == 0o644

    before = out.read_bytes()
    write(files["endorsements"], [endorse(ROOT, NEXT), endorse(ATTACKER, ATTACKER)], [ATTACKER])
    assert main(argv) == 2
    assert "endorsement 1: signed by key" in capsys.readouterr().err
    assert out.read_bytes() == before  # a chain it cannot trust changes nothing
