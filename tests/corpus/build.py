"""What a case's `input` describes, made real: tokens, certificates, XFCC headers, forms.

Values are data with a few templates, evaluated at replay time so every replay gets fresh
credentials (a new jti, certificates valid now):

    "$now", "$now+300", "$now-3600"     unix seconds
    "$issuer", "$issuer/..."           the local GitHub-shaped OIDC issuer's URL (and a suffix)
    "$lone_surrogate"                  U+D800 alone: JSON can escape it, UTF-8 cannot hold it
    "$oidc_audience"                   the audience keymint accepts in OIDC tokens
    "$keymint_issuer", "$deploy", "$orders"
    "$grant_type", "$jwt_type", "$id_token_type", "$access_token_type"   RFC 8693 URNs
    "$repeat:<text>:<count>"           <text> repeated <count> times (the whole value)
    "...{{repeat:<text>:<count>}}..."  the same, inside a longer string
    "$json_null"                       a JSON null (a YAML null removes a member instead)

A token spec (`bearer`, a form value `{token: ...}`):

    header: {...}        members replacing GitHub's header (null removes one)
    claims: {...}        members replacing GitHub's example claims, issued now (null removes)
    sign: issuer | none | attacker | hs256_issuer_public_key | garbage
    raw_header / raw_claims: JSON text used verbatim for that segment
    raw: the whole token, verbatim
    keymint: {audience: ..., tamper: none | signature | alg_none | kid | claims}
    append / prepend: text added around the compact token

A certificate spec (`certificate`, or an entry of `certificates` for XFCC placeholders):

    uris, dns: SANs (none: no SAN extension)
    issuer: root (the trust bundle's CA) | stranger (a CA nobody trusts) | self
    intermediates: how many CAs between the root and the leaf (default 0)
    expired_intermediate: true     the intermediate nearest the root expired yesterday
    pathlen_zero_intermediates: true
    eku: [client_auth, server_auth, code_signing] or [] for none (default both auth EKUs)
    key_usage: [digital_signature, key_encipherment, key_cert_sign] (default digital_signature)
    ca: true                       the leaf claims to be a CA
    not_before / not_after         templates (default: an hour ago / a day from now)
    key: ec | rsa1024 | rsa2048
    unknown_critical_extension: true
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from extauthz.dev.github import (
    REMOVE,
    LocalOidcIssuer,
    b64url,
    compact_jws,
    hs256_signer,
    rs256_signer,
)
from extauthz.dev.settings import DEPLOY, ISSUER, OIDC_AUDIENCE, ORDERS
from extauthz.server.token_exchange import (
    GRANT_TYPE_TOKEN_EXCHANGE,
    TOKEN_TYPE_ACCESS_TOKEN,
    TOKEN_TYPE_ID_TOKEN,
    TOKEN_TYPE_JWT,
)
from tests.helpers.certs import CertificateAuthority

_TEMPLATE = re.compile(r"\$now([+-]\d+)?")
_REPEAT = re.compile(r"\{\{repeat:(.*?):(\d+)\}\}")
_PLACEHOLDER = re.compile(r"\{\{(cert|chain|hash):([a-z0-9_]+)\}\}")
EKUS = {
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
}
UNKNOWN_EXTENSION = ObjectIdentifier("1.3.6.1.4.1.55555.1")
JSON_NULL = object()


@dataclass(frozen=True)
class Chain:
    """A leaf, its key, and the CAs between it and the root (leaf's issuer first)."""

    leaf: x509.Certificate
    key: Any = field(repr=False)
    intermediates: tuple[x509.Certificate, ...] = ()

    @property
    def leaf_pem(self) -> bytes:
        return self.leaf.public_bytes(serialization.Encoding.PEM)

    @property
    def chain_pem(self) -> bytes:
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (self.leaf, *self.intermediates)
        )

    @property
    def key_pem(self) -> bytes:
        return bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    @property
    def der_sha256(self) -> str:
        return hashlib.sha256(self.leaf.public_bytes(serialization.Encoding.DER)).hexdigest()

    @property
    def first_uri(self) -> str:
        """What Envoy reports as the peer's principal: the first URI SAN, else the subject."""
        try:
            san = self.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        return uris[0] if uris else self.leaf.subject.rfc4514_string()


_ISSUER: list[str] = []  # the running OIDC issuer's URL, set by the Builder


def evaluate(value: Any) -> Any:
    """Templates in `value`, recursively (see the module docstring)."""
    if isinstance(value, dict):
        return {k: evaluate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [evaluate(v) for v in value]
    if isinstance(value, str) and "{{repeat:" in value:
        value = _REPEAT.sub(lambda m: m.group(1) * int(m.group(2)), value)
    if not isinstance(value, str) or not value.startswith("$"):
        return value
    if value == "$json_null":
        return JSON_NULL
    if value == "$lone_surrogate":
        return "\ud800"
    if value.startswith("$issuer"):
        return _ISSUER[-1] + value[len("$issuer") :]
    if value.startswith("$repeat:"):
        _, text, count = value.split(":", 2)
        return text * int(count)
    match = _TEMPLATE.fullmatch(value)
    if match:
        return int(time.time()) + int(match.group(1) or 0)
    constants = {
        "$keymint_issuer": ISSUER,
        "$oidc_audience": OIDC_AUDIENCE,
        "$deploy": DEPLOY,
        "$orders": ORDERS,
        "$grant_type": GRANT_TYPE_TOKEN_EXCHANGE,
        "$jwt_type": TOKEN_TYPE_JWT,
        "$id_token_type": TOKEN_TYPE_ID_TOKEN,
        "$access_token_type": TOKEN_TYPE_ACCESS_TOKEN,
    }
    if value in constants:
        return constants[value]
    raise ValueError(f"unknown template {value!r}")


def _overrides(members: Mapping[str, Any] | None) -> dict[str, Any]:
    """YAML null removes a member; "$json_null" sets it to JSON null."""
    out: dict[str, Any] = {}
    for name, value in (members or {}).items():
        if value is None:
            out[name] = REMOVE
        elif value is JSON_NULL:
            out[name] = None
        else:
            out[name] = value
    return out


def _segment(raw: str) -> str:
    return b64url(raw.encode("utf-8"))


class Builder:
    """Makes a case's inputs from the stack's parties: the OIDC issuer, the trust bundle's CA,
    and an attacker with keys and a CA of its own."""

    def __init__(
        self,
        *,
        issuer: LocalOidcIssuer,
        root: CertificateAuthority,
        keymint_token: Callable[[str], str],
    ) -> None:
        self.issuer = issuer
        _ISSUER.append(issuer.issuer)
        self.root = root
        self.keymint_token = keymint_token  # audience -> a fresh keymint token for it
        self.attacker_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.stranger = CertificateAuthority.root(
            "prod.test", not_before=_ago(3600), not_after=_ago(-86400 * 30)
        )

    # --- tokens -----------------------------------------------------------------------------

    def token(self, spec: Mapping[str, Any]) -> str:
        spec = evaluate(dict(spec))
        if "raw" in spec:
            return str(spec["raw"])
        token = self._keymint(spec["keymint"]) if "keymint" in spec else self._oidc(spec)
        return f"{spec.get('prepend', '')}{token}{spec.get('append', '')}"

    def _oidc(self, spec: Mapping[str, Any]) -> str:
        header = self.issuer.header(_overrides(spec.get("header")))
        claims = self.issuer.claims({"jti": str(uuid.uuid4()), **_overrides(spec.get("claims"))})
        sign = spec.get("sign", "issuer")
        signer = {
            "issuer": rs256_signer(self.issuer.signing_key.private_key),
            "attacker": rs256_signer(self.attacker_key),
            "none": None,
            "hs256_issuer_public_key": hs256_signer(
                self.issuer.signing_key.private_key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            ),
            "garbage": lambda _: bytes(range(256)),
        }[sign]
        if "raw_header" not in spec and "raw_claims" not in spec:
            return compact_jws(header, claims, signer)
        first = _segment(spec["raw_header"]) if "raw_header" in spec else _json_segment(header)
        second = _segment(spec["raw_claims"]) if "raw_claims" in spec else _json_segment(claims)
        signing_input = f"{first}.{second}"
        signature = signer(signing_input.encode()) if signer is not None else b""
        return f"{signing_input}.{b64url(signature)}"

    def _keymint(self, spec: Mapping[str, Any]) -> str:
        token = self.keymint_token(spec.get("audience", DEPLOY))
        head, claims, signature = token.split(".")
        tamper = spec.get("tamper", "none")
        if tamper == "signature":
            middle = len(signature) // 2
            flipped = "A" if signature[middle] != "A" else "B"
            signature = signature[:middle] + flipped + signature[middle + 1 :]
        elif tamper == "alg_none":
            header = json.loads(base64.urlsafe_b64decode(head + "=="))
            head, signature = _json_segment({**header, "alg": "none"}), ""
        elif tamper == "alg_hs256":
            header = json.loads(base64.urlsafe_b64decode(head + "=="))
            head = _json_segment({**header, "alg": "HS256"})
        elif tamper == "claims":
            payload = json.loads(base64.urlsafe_b64decode(claims + "=="))
            payload["scope"] = payload["scope"] + " admin"
            claims = _json_segment(payload)
        elif tamper != "none":
            raise ValueError(f"unknown keymint token tamper {tamper!r}")
        return f"{head}.{claims}.{signature}"

    # --- certificates -----------------------------------------------------------------------

    def certificate(self, spec: Mapping[str, Any]) -> Chain:
        spec = evaluate(dict(spec))
        key = _key(spec.get("key", "ec"))
        issuer_name, issuer_key, above = self._issuer(spec)
        not_before = _instant(spec.get("not_before"), -3600)
        not_after = _instant(spec.get("not_after"), 86400)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(spec.get("common_name", "workload")))
            .issuer_name(issuer_name if issuer_name is not None else _name("workload"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(
                x509.BasicConstraints(ca=bool(spec.get("ca", False)), path_length=None),
                critical=True,
            )
            .add_extension(_key_usage(spec.get("key_usage", ["digital_signature"])), True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        ekus = spec.get("eku", ["client_auth", "server_auth"])
        if ekus:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([EKUS[e] for e in ekus]), critical=False
            )
        names: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(u) for u in spec.get("uris", [])
        ]
        names += [x509.DNSName(d) for d in spec.get("dns", [])]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        if spec.get("unknown_critical_extension"):
            builder = builder.add_extension(
                x509.UnrecognizedExtension(UNKNOWN_EXTENSION, b"\x05\x00"), critical=True
            )
        if issuer_key is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
        signing_key = issuer_key if issuer_key is not None else key
        leaf = builder.sign(signing_key, hashes.SHA256())
        return Chain(leaf, key, above)

    def _issuer(
        self, spec: Mapping[str, Any]
    ) -> tuple[x509.Name | None, Any, tuple[x509.Certificate, ...]]:
        """(issuer name, issuer key, intermediates leaf-side first) for the leaf."""
        which = spec.get("issuer", "root")
        if which == "self":
            return None, None, ()
        authority = self.root if which == "root" else self.stranger
        name, key = authority.certificate.subject, authority.private_key
        chain: list[x509.Certificate] = []
        for depth in range(int(spec.get("intermediates", 0))):
            expired = depth == 0 and spec.get("expired_intermediate", False)
            pathlen = 0 if spec.get("pathlen_zero_intermediates") else None
            certificate, child_key = _intermediate(name, key, depth, expired, pathlen)
            chain.insert(0, certificate)
            name, key = certificate.subject, child_key
        return name, key, tuple(chain)

    # --- XFCC -------------------------------------------------------------------------------

    def xfcc(self, template: str, certificates: Mapping[str, Chain]) -> str:
        def value(match: re.Match[str]) -> str:
            what, name = match.groups()
            chain = certificates[name]
            if what == "hash":
                return chain.der_sha256
            pem = chain.leaf_pem if what == "cert" else chain.chain_pem
            return urllib.parse.quote(pem.decode(), safe="")

        return str(evaluate(_PLACEHOLDER.sub(value, template)))


def _json_segment(value: Mapping[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def _ago(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)


def _instant(value: int | None, default_offset: int) -> datetime.datetime:
    seconds = time.time() + default_offset if value is None else value
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "keymint hostile corpus"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key(kind: str) -> Any:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    bits = {"rsa1024": 1024, "rsa2048": 2048}[kind]
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _key_usage(usages: list[str]) -> x509.KeyUsage:
    flags = set(usages)
    return x509.KeyUsage(
        digital_signature="digital_signature" in flags,
        content_commitment=False,
        key_encipherment="key_encipherment" in flags,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign="key_cert_sign" in flags,
        crl_sign="key_cert_sign" in flags,
        encipher_only=False,
        decipher_only=False,
    )


def _intermediate(
    issuer: x509.Name, issuer_key: Any, depth: int, expired: bool, pathlen: int | None
) -> tuple[x509.Certificate, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = (
        (_ago(86400 * 2), _ago(86400)) if expired else (_ago(3600), _ago(-86400))
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(f"intermediate CA {depth}"))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=pathlen), critical=True)
        .add_extension(_key_usage(["key_cert_sign"]), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return certificate, key
