"""Key endorsements: a verification key reaches verifiers only when t signers vouch for it.

An endorsement is a compact JWS signed by a group key (so by t signers, through their guards) over
another group key, in the canonical encoding of `signer.token`:

    header  {"alg": "EdDSA", "kid": <endorsing kid>, "typ": "keymint-key-endorsement+jwt"}
    payload {"iss": <issuer>, "iat": <unix seconds>, "key": {"kty": "OKP", "crv": "Ed25519",
             "x": <base64url key>, "kid": <its RFC 7638 thumbprint>}}

Operators pin the first key (the trust root, `TrustRoot`). `verify_chain` walks a chain of
endorsements from the pinned roots: each must be signed by a key already trusted (a root, or a key
endorsed earlier in the chain) and name the issuer; the keys it yields are the only keys a token
may verify under. Sans-IO: parsing and Ed25519 verification only.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from signer.errors import SignerError
from signer.token import ALG, TokenFormatError, b64url, kid_for, parse_signing_input, signing_input

ENDORSEMENT_TYP: Final = "keymint-key-endorsement+jwt"
PAYLOAD_MEMBERS: Final = frozenset({"iss", "iat", "key"})
KEY_MEMBERS: Final = frozenset({"kty", "crv", "x", "kid"})
HEADER_MEMBERS: Final = frozenset({"alg", "kid", "typ"})

# The guard rules an endorsement can break besides the token rules it shares (`not_a_token`,
# `not_canonical`, `header_alg`, `header_kid`, `header_extra`, `issuer`, `iat_skew`), in the order
# a signer's guard applies them. `signer.guard.RULES` includes them.
ENDORSEMENT_RULES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "endorsement_claims": "the payload is not exactly iss, iat and key, well typed",
        "endorsement_key": "key is not an Ed25519 public JWK of exactly kty, crv, x and its kid",
        "endorsement_self": "the endorsed key is the endorsing key",
        "endorsement_key_unknown": "the endorsed key is not one this signer holds a share of",
        "endorsement_threshold": "the endorsed key needs fewer signers than the endorsing key",
    }
)


class EndorsementFormatError(SignerError):
    """A message that is not a well-formed endorsement; `rule` names the guard rule it breaks."""

    def __init__(self, rule: str, detail: str) -> None:
        self.rule = rule
        self.detail = detail
        super().__init__(f"{rule}: {detail}")


class EndorsementError(SignerError):
    """An endorsement chain that does not hold; `index` names the endorsement, `reason` why."""

    def __init__(self, index: int | None, reason: str) -> None:
        self.index = index
        self.reason = reason
        where = "trust root" if index is None else f"endorsement {index}"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class Endorsement:
    """What an endorsement says: `endorser_kid` vouches for `key` under `issuer` at `issued_at`."""

    endorser_kid: str
    issuer: str
    issued_at: int
    key: bytes

    @property
    def kid(self) -> str:
        """The endorsed key's kid."""
        return kid_for(self.key)


def key_jwk(public_key: bytes) -> dict[str, str]:
    """The endorsed form of a key: an RFC 8037 OKP JWK of exactly kty, crv, x and kid."""
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(public_key), "kid": kid_for(public_key)}


def endorsement_message(
    endorser_key: bytes, endorsed_key: bytes, *, issuer: str, issued_at: int
) -> bytes:
    """The signing input t signers are asked to sign with `endorser_key`."""
    header = {"alg": ALG, "kid": kid_for(endorser_key), "typ": ENDORSEMENT_TYP}
    payload = {"iss": issuer, "iat": issued_at, "key": key_jwk(endorsed_key)}
    return signing_input(header, payload)


def read_endorsement(message: bytes) -> Endorsement:
    """The endorsement a signing input states, checked for form only (no signature, no trust).

    Raises EndorsementFormatError naming the guard rule broken: the bytes must be the canonical
    encoding of the exact header and payload in the module docstring.
    """
    try:
        parsed = parse_signing_input(message)
    except TokenFormatError as error:
        raise EndorsementFormatError("not_a_token", error.reason) from None
    except RecursionError:
        raise EndorsementFormatError("not_a_token", "JSON nested too deeply") from None
    header, payload = parsed.header, parsed.claims
    if message != signing_input(header, payload):
        raise EndorsementFormatError(
            "not_canonical", "not the canonical encoding of its header and payload"
        )
    if header.get("alg") != ALG:
        raise EndorsementFormatError("header_alg", f"alg is {_show(header.get('alg'))}, not {ALG}")
    if header.get("typ") != ENDORSEMENT_TYP:
        raise EndorsementFormatError(
            "header_typ", f"typ is {_show(header.get('typ'))}, not {ENDORSEMENT_TYP}"
        )
    endorser = header.get("kid")
    if not isinstance(endorser, str) or not endorser:
        raise EndorsementFormatError("header_kid", "kid is not a non-empty string")
    if extra := sorted(header.keys() - HEADER_MEMBERS):
        raise EndorsementFormatError("header_extra", f"header members {_show(extra)}")
    if payload.keys() != PAYLOAD_MEMBERS:
        raise EndorsementFormatError(
            "endorsement_claims", f"payload members are {_show(sorted(payload))}"
        )
    issuer, issued_at = payload["iss"], payload["iat"]
    if not isinstance(issuer, str) or not issuer or type(issued_at) is not int:
        raise EndorsementFormatError(
            "endorsement_claims", "iss must be a non-empty string and iat an integer"
        )
    return Endorsement(endorser, issuer, issued_at, public_key_from_jwk(payload["key"]))


def public_key_from_jwk(jwk: Any, *, extra: frozenset[str] = frozenset()) -> bytes:
    """The 32-byte key of an Ed25519 public JWK of exactly kty, crv, x and kid (plus `extra`
    members); its kid must be its RFC 7638 thumbprint."""
    if not isinstance(jwk, dict) or not KEY_MEMBERS <= jwk.keys() <= KEY_MEMBERS | extra:
        members = sorted(jwk) if isinstance(jwk, dict) else type(jwk).__name__
        raise EndorsementFormatError("endorsement_key", f"key members are {_show(members)}")
    if jwk["kty"] != "OKP" or jwk["crv"] != "Ed25519":
        raise EndorsementFormatError("endorsement_key", "key is not an OKP Ed25519 key")
    x = jwk["x"]
    raw = _b64url_decode(x) if isinstance(x, str) else None
    if raw is None or len(raw) != 32 or b64url(raw) != x:
        raise EndorsementFormatError("endorsement_key", "x is not a 32-byte base64url key")
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise EndorsementFormatError("endorsement_key", "x is not an Ed25519 point") from None
    if jwk["kid"] != kid_for(raw):
        raise EndorsementFormatError("endorsement_key", "kid is not the key's RFC 7638 thumbprint")
    return raw


@dataclass(frozen=True, slots=True)
class TrustRoot:
    """What operators pin: the issuer and the first key(s), from which every key is endorsed.

    Its document is `{"issuer": ..., "keys": [<Ed25519 public JWK>, ...]}`; a JWK may carry
    `alg: EdDSA` and `use: sig` besides kty, crv, x and kid.
    """

    issuer: str
    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.issuer:
            raise EndorsementError(None, "the issuer is empty")
        if not self.keys or len(set(self.keys)) != len(self.keys):
            raise EndorsementError(None, "it needs at least one key, each once")

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(kid_for(key) for key in self.keys)

    @classmethod
    def from_document(cls, document: object) -> TrustRoot:
        if not isinstance(document, dict) or document.keys() != {"issuer", "keys"}:
            raise EndorsementError(None, 'expected {"issuer": "...", "keys": [<JWK>, ...]}')
        issuer, jwks = document["issuer"], document["keys"]
        if not isinstance(issuer, str) or not isinstance(jwks, list):
            raise EndorsementError(None, "issuer must be a string and keys a list of JWKs")
        keys = []
        for index, jwk in enumerate(jwks):
            try:
                if isinstance(jwk, dict) and (
                    jwk.get("alg", ALG) != ALG or jwk.get("use", "sig") != "sig"
                ):
                    raise EndorsementFormatError("endorsement_key", "alg/use are not EdDSA/sig")
                keys.append(public_key_from_jwk(jwk, extra=frozenset({"alg", "use"})))
            except EndorsementFormatError as exc:
                raise EndorsementError(None, f"keys[{index}]: {exc.detail}") from None
        return cls(issuer, tuple(keys))

    def to_document(self) -> dict[str, object]:
        return {"issuer": self.issuer, "keys": [key_jwk(key) for key in self.keys]}


def verify_chain(root: TrustRoot, endorsements: Sequence[str]) -> list[bytes]:
    """The keys trusted from `root`: its keys, then each key the chain endorses, in order.

    Each endorsement must be the canonical compact JWS of the module docstring, signed (Ed25519)
    by a key already trusted, name `root.issuer`, and endorse a key not yet trusted. Anything else
    raises EndorsementError naming the endorsement (its index in the chain) and why.
    """
    trusted: dict[str, bytes] = {kid_for(key): key for key in root.keys}
    for index, compact_jws in enumerate(endorsements):
        endorsement = _verified(index, compact_jws, trusted)
        if endorsement.issuer != root.issuer:
            raise EndorsementError(
                index, f"names issuer {_show(endorsement.issuer)}, not {_show(root.issuer)}"
            )
        if endorsement.kid in trusted:
            raise EndorsementError(
                index, f"endorses key {endorsement.kid}, which is already trusted (a cycle)"
            )
        trusted[endorsement.kid] = endorsement.key
    return list(trusted.values())


def _verified(index: int, compact_jws: object, trusted: Mapping[str, bytes]) -> Endorsement:
    if not isinstance(compact_jws, str) or compact_jws.count(".") != 2:
        raise EndorsementError(index, "not a compact JWS of three parts")
    message, _, signature_text = compact_jws.rpartition(".")
    try:
        endorsement = read_endorsement(message.encode("ascii"))
    except UnicodeEncodeError:
        raise EndorsementError(index, "not ASCII") from None
    except EndorsementFormatError as exc:
        raise EndorsementError(index, f"not an endorsement ({exc.rule}: {exc.detail})") from None
    endorser = trusted.get(endorsement.endorser_kid)
    if endorser is None:
        raise EndorsementError(
            index,
            f"signed by key {_show(endorsement.endorser_kid)}, which is not trusted (neither a "
            "pinned root nor endorsed earlier in the chain)",
        )
    signature = _b64url_decode(signature_text)
    if signature is None or len(signature) != 64 or b64url(signature) != signature_text:
        raise EndorsementError(index, "the signature is not 64 base64url bytes")
    try:
        Ed25519PublicKey.from_public_bytes(endorser).verify(signature, message.encode("ascii"))
    except InvalidSignature:
        raise EndorsementError(
            index, f"the signature does not verify under key {endorsement.endorser_kid}"
        ) from None
    return endorsement


def _b64url_decode(text: str) -> bytes | None:
    if any(c not in _B64URL for c in text):
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error):
        return None


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 64 else f"{text[:61]}..."
