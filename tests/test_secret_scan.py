"""The log scanner of tests/e2e/test_observability.py finds each kind of secret it looks for, in
the forms a careless log line would hold it: its clean result there means something."""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signer.frost import trusted_dealer_keygen
from signer.frost.encoding import encode_key_share
from signer.frost.group import serialize_scalar
from tests.helpers.secret_scan import scan

TOKEN = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImsifQ.eyJzdWIiOiJzcGlmZmU6Ly9wcm9kLnRlc3Qvc2EifQ."
    "c2lnbmF0dXJlLW9mLXNpeHR5LWZvdXItYnl0ZXMtbm90LXJlYWxseQ"
)


def test_each_kind_of_secret_is_found_where_it_was_planted() -> None:
    shares, _package, _ = trusted_dealer_keygen(2, 3)
    share = shares[0]
    pem = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    scalar = serialize_scalar(share.signing_share)
    planted = {
        "token in a JSON line": json.dumps({"message": "minted", "authorization": TOKEN}),
        "private key": f"loaded key\n{pem}",
        "share scalar, hex": f"share={scalar.hex()}",
        "share, base64": base64.b64encode(encode_key_share(share)).decode(),
        "passphrase": "unsealing with hunter2-not-secret",
        "clean": '{"message":"decision allow","token":"sha256:0123456789abcdef"}',
    }
    findings = scan(planted, secrets={"passphrase": "hunter2-not-secret"}, shares=[share])
    found = {(f.where, f.what.split(":")[0]) for f in findings}
    assert ("token in a JSON line", "a JWT") in found
    assert ("private key", "a PEM private key") in found
    assert ("share scalar, hex", f"signing share {share.identifier} (hex)") in found
    assert ("share, base64", f"encoded key share {share.identifier} (base64)") in found
    assert ("passphrase", "passphrase") in found
    assert not [f for f in findings if f.where == "clean"]
