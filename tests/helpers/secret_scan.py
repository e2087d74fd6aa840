"""Looks for secrets in text a log could hold: tokens (any JWT, and the exact ones a test made), PEM
private keys, key shares in the encodings a careless line would use, and named secrets."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from signer.frost.encoding import encode_key_share
from signer.frost.group import serialize_scalar
from signer.frost.keys import KeyShare

# A compact JWS: three base64url segments, the first two JSON objects ("eyJ" is base64 of '{"').
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")
PEM_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


@dataclass(frozen=True)
class Finding:
    where: str
    what: str


def share_forms(share: KeyShare) -> dict[str, str]:
    """The signing share's scalar and the encoded share, as hex, base64 and base64url."""
    forms = {}
    for name, raw in (
        ("signing share", serialize_scalar(share.signing_share)),
        ("encoded key share", encode_key_share(share)),
    ):
        forms[f"{name} {share.identifier} (hex)"] = raw.hex()
        forms[f"{name} {share.identifier} (base64)"] = base64.b64encode(raw).decode()
        forms[f"{name} {share.identifier} (base64url)"] = (
            base64.urlsafe_b64encode(raw).decode().rstrip("=")
        )
    return forms


def scan(
    texts: Mapping[str, str],
    *,
    secrets: Mapping[str, str] | None = None,
    shares: Iterable[KeyShare] = (),
) -> list[Finding]:
    """Every finding in `texts` (name -> content): JWTs, PEM private keys, and each of `secrets`
    (what it is -> its value) and of the shares' forms, anywhere."""
    exact = dict(secrets or {})
    for share in shares:
        exact.update(share_forms(share))
    findings = []
    for where, text in texts.items():
        for match in JWT.finditer(text):
            findings.append(Finding(where, f"a JWT: {match.group(0)[:24]}..."))
        if PEM_PRIVATE_KEY.search(text):
            findings.append(Finding(where, "a PEM private key"))
        for what, value in exact.items():
            if value and value in text:
                findings.append(Finding(where, what))
    return findings


def read_logs(paths: Iterable[Path]) -> dict[str, str]:
    return {str(path): path.read_text(errors="replace") for path in paths if path.exists()}
