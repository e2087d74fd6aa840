"""Token issuers of every kind keymint accepts, for the local stack and tests: keys of every
allowed algorithm, a local issuer serving discovery and a JWKS (or writing the JWKS to a file),
and claims in each issuer's documented shape.

    key = JwtKey.generate("k8s-1", "RS256")
    async with LocalIssuer(clock=clock, keys=[key]) as cluster:
        path = cluster.write_jwks(tmp / "cluster-jwks.json")   # keys from a file
        token = cluster.mint(kubernetes_claims(cluster.issuer, "keymint", clock()))

The shapes follow each issuer's documentation: Kubernetes' projected service-account tokens
(`kubernetes.io` with namespace, service account, pod, node), GitLab CI `id_tokens`, SPIRE's
JWT-SVIDs (no `iss`, `aud` a list, ES256), and ID tokens from Google, Okta and Entra ID.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from extauthz.dev.github import REMOVE, compact_jws
from extauthz.dev.servers import LoopbackServer

_CURVES = {
    "ES256": (ec.SECP256R1(), hashes.SHA256(), 32),
    "ES384": (ec.SECP384R1(), hashes.SHA384(), 48),
}


@dataclass(frozen=True, slots=True)
class JwtKey:
    """A signing key for one of RS256, PS256, ES256, ES384, EdDSA, and the kid it goes by."""

    kid: str
    alg: str
    private_key: Any = field(repr=False)

    @classmethod
    def generate(cls, kid: str, alg: str = "RS256") -> JwtKey:
        if alg in ("RS256", "PS256"):
            return cls(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        if alg in _CURVES:
            return cls(kid, alg, ec.generate_private_key(_CURVES[alg][0]))
        if alg == "EdDSA":
            return cls(kid, alg, ed25519.Ed25519PrivateKey.generate())
        raise ValueError(f"no key for {alg}")

    def sign(self, data: bytes) -> bytes:
        key = self.private_key
        if self.alg == "RS256":
            return bytes(key.sign(data, padding.PKCS1v15(), hashes.SHA256()))
        if self.alg == "PS256":
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            return bytes(key.sign(data, pss, hashes.SHA256()))
        if self.alg in _CURVES:
            _, digest, size = _CURVES[self.alg]
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        return bytes(key.sign(data))

    def with_kid(self, kid: str) -> JwtKey:
        return JwtKey(kid, self.alg, self.private_key)

    def public_jwk(self, *, use: str | None = "sig", alg: bool = True) -> dict[str, Any]:
        public = self.private_key.public_key()
        if self.alg in ("RS256", "PS256"):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif self.alg in _CURVES:
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        jwk = {**jwk, "kid": self.kid}
        if use is not None:
            jwk["use"] = use
        if alg:
            jwk["alg"] = self.alg
        return jwk


def _apply(base: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    for name, value in (overrides or {}).items():
        if value is REMOVE:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def sign_token(
    key: JwtKey,
    claims: Mapping[str, Any],
    header: Mapping[str, Any] | None = None,
    *,
    typ: str | None = "JWT",
) -> str:
    """A compact JWS of `claims` by `key`; `header` members replace (or REMOVE) the defaults."""
    base: dict[str, Any] = {"alg": key.alg, "kid": key.kid}
    if typ is not None:
        base["typ"] = typ
    return compact_jws(_apply(base, header), claims, key.sign)


class LocalIssuer(LoopbackServer):
    """An OIDC issuer on 127.0.0.1: `{issuer}/.well-known/openid-configuration` and its JWKS.
    `published` may change at any time (rotation); `served` counts what was fetched."""

    def __init__(
        self,
        *,
        keys: Iterable[JwtKey],
        path: str = "",
        max_age: int = 300,
        typ: str | None = "JWT",
    ) -> None:
        super().__init__()
        self.published = list(keys)
        self.path = path
        self.max_age = max_age
        self.typ = typ
        self.served: Counter[str] = Counter()

    def routes(self, app: web.Application) -> None:
        app.router.add_get(f"{self.path}/.well-known/openid-configuration", self._discovery)
        app.router.add_get(f"{self.path}/keys", self._jwks)

    @property
    def key(self) -> JwtKey:
        return self.published[0]

    def jwks_document(self, *, use: str | None = "sig") -> dict[str, Any]:
        return {"keys": [key.public_jwk(use=use) for key in self.published]}

    def write_jwks(self, path: Path, *, use: str | None = "sig") -> Path:
        path.write_text(json.dumps(self.jwks_document(use=use)))
        return path

    def mint(
        self,
        claims: Mapping[str, Any],
        header: Mapping[str, Any] | None = None,
        *,
        key: JwtKey | None = None,
    ) -> str:
        return sign_token(key or self.key, claims, header, typ=self.typ)

    async def _discovery(self, request: web.Request) -> web.Response:
        self.served["discovery"] += 1
        return web.json_response(
            {
                "issuer": self.issuer,
                "jwks_uri": f"{self.issuer}/keys",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": sorted({k.alg for k in self.published}),
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        self.served["jwks"] += 1
        body = json.dumps(self.jwks_document()).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        headers = {"ETag": etag, "Cache-Control": f"public, max-age={self.max_age}"}
        return web.Response(body=body, content_type="application/json", headers=headers)


# --- the shapes -------------------------------------------------------------------------------

Claims = dict[str, Any]
Overrides = Mapping[str, Any] | None


def kubernetes_claims(
    issuer: str,
    audience: str,
    now: float,
    *,
    namespace: str = "shop",
    service_account: str = "web",
    pod: str | None = "web-7d4b9c6f5-x2x9q",
    lifetime: int = 3600,
    overrides: Overrides = None,
) -> Claims:
    """A projected service-account token (a volume with `audience` and `expirationSeconds`), as
    the API server issues it: `aud` is always a list, the `kubernetes.io` claim names the pod
    and node it is bound to, and `warnafter` is when the kubelet should have renewed it."""
    iat = int(now)
    bound: dict[str, Any] = {
        "namespace": namespace,
        "serviceaccount": {
            "name": service_account,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, service_account)),
        },
    }
    if pod is not None:
        bound["pod"] = {"name": pod, "uid": "778a530c-b3f4-47c0-9cd5-ab018fb64f33"}
        bound["node"] = {"name": "node-a", "uid": "58456cb0-dd00-45ed-b797-5578fdceaced"}
    bound["warnafter"] = iat + int(lifetime * 0.8)
    claims = {
        "aud": [audience],
        "exp": iat + lifetime,
        "iat": iat,
        "iss": issuer,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": bound,
        "nbf": iat,
        "sub": f"system:serviceaccount:{namespace}:{service_account}",
    }
    return _apply(claims, overrides)


def gitlab_claims(
    issuer: str,
    audience: str,
    now: float,
    *,
    project_id: str = "20",
    namespace_id: str = "72",
    ref: str = "main",
    overrides: Overrides = None,
) -> Claims:
    """A GitLab CI/CD job's `id_tokens` token (GitLab's documented example): ids are strings,
    `ref_protected` is "true"/"false", and it lives for the job timeout plus 5 minutes."""
    iat = int(now)
    claims = {
        "namespace_id": namespace_id,
        "namespace_path": "my-group",
        "project_id": project_id,
        "project_path": "my-group/my-project",
        "user_id": "1",
        "user_login": "sample-user",
        "user_email": "sample-user@example.com",
        "user_identities": [{"provider": "github", "extern_uid": "2435223452345"}],
        "pipeline_id": "574",
        "pipeline_source": "push",
        "job_id": "302",
        "ref": ref,
        "ref_type": "branch",
        "ref_path": f"refs/heads/{ref}",
        "ref_protected": "true",
        "groups_direct": ["my-group", "my-group/deployers"],
        "environment": "production",
        "environment_protected": "true",
        "deployment_tier": "production",
        "environment_action": "start",
        "runner_id": 1,
        "runner_environment": "gitlab-hosted",
        "sha": "714a629c0b401fdce83e847fc9589983fc6f46bc",
        "project_visibility": "private",
        "ci_config_ref_uri": (
            "gitlab.example.com/my-group/my-project//.gitlab-ci.yml@refs/heads/main"
        ),
        "ci_config_sha": "714a629c0b401fdce83e847fc9589983fc6f46bc",
        "jti": str(uuid.uuid4()),
        "iss": issuer,
        "iat": iat,
        "nbf": iat - 5,
        "exp": iat + 3600 + 300,
        "sub": f"project_path:my-group/my-project:ref_type:branch:ref:{ref}",
        "aud": audience,
    }
    return _apply(claims, overrides)


def svid_claims(
    spiffe_id: str, audience: str, now: float, *, lifetime: int = 300, overrides: Overrides = None
) -> Claims:
    """A JWT-SVID as SPIRE issues it: `sub` the SPIFFE ID, `aud` a list, no `iss` unless SPIRE
    was configured with one."""
    iat = int(now)
    claims = {"aud": [audience], "exp": iat + lifetime, "iat": iat, "sub": spiffe_id}
    return _apply(claims, overrides)


def google_claims(
    issuer: str,
    client_id: str,
    now: float,
    *,
    email: str = "jsmith@example.com",
    overrides: Overrides = None,
) -> Claims:
    """A Google ID token (Google's documented example): no `nbf`, `hd` the Workspace domain."""
    iat = int(now)
    claims = {
        "iss": issuer,
        "azp": client_id,
        "aud": client_id,
        "sub": "10769150350006150715113082367",
        "at_hash": "HK6E_P6Dh8Y93mRNtsDB1Q",
        "hd": "example.com",
        "email": email,
        "email_verified": True,
        "iat": iat,
        "exp": iat + 3600,
        "nonce": "0394852-3190485-2490358",
        "name": "Jane Smith",
        "given_name": "Jane",
        "family_name": "Smith",
    }
    return _apply(claims, overrides)


def okta_claims(
    issuer: str,
    client_id: str,
    now: float,
    *,
    groups: list[str] | None = None,
    overrides: Overrides = None,
) -> Claims:
    """An Okta ID token (Okta's documented example), with the `groups` claim an org adds."""
    iat = int(now)
    claims = {
        "sub": "00uid4BxXw6I6TV4m0g3",
        "name": "John Doe",
        "email": "john.doe@example.com",
        "email_verified": True,
        "ver": 1,
        "iss": issuer,
        "aud": client_id,
        "iat": iat,
        "exp": iat + 3600,
        "jti": "ID.4eAWJOCMB3SX8XewDfVR",
        "amr": ["pwd"],
        "idp": "00ouht6UpCOOnLCG00g3",
        "preferred_username": "john.doe@example.com",
        "auth_time": iat,
        "at_hash": "preK8BHuzWUMwBhHMOoKGA",
        "groups": ["Everyone", "platform"] if groups is None else groups,
    }
    return _apply(claims, overrides)


def entra_claims(issuer: str, client_id: str, now: float, *, overrides: Overrides = None) -> Claims:
    """An Entra ID (v2.0) ID token (Microsoft's documented example): `oid` is the stable user
    id, `sub` is pairwise per application, and there is no `email_verified`."""
    iat = int(now)
    claims = {
        "aud": client_id,
        "iss": issuer,
        "iat": iat,
        "nbf": iat,
        "exp": iat + 3900,
        "aio": "AXQAi/8IAAAAqxsuB+R4D2rFQqOETO4YdXbLD9kZ8xfXadeAM0Q2NkNT5izfg3uwbWSXhuSSj6UT5",
        "name": "Abe Lincoln",
        "oid": "00000000-0000-0000-66f3-3332eca7ea81",
        "email": "AbeLi@microsoft.com",
        "preferred_username": "AbeLi@microsoft.com",
        "rh": "I",
        "sub": "HKZpfaHyWadeOouYlitjrI-KffTm222X5rrV3xDqfKQ",
        "tid": "9188040d-6c67-4c5b-b112-36a304b66dad",
        "uti": "fqiBqXLPj0eQa82S-IYFAA",
        "ver": "2.0",
        "groups": ["62e90394-69f5-4237-9190-012177145e10"],
    }
    return _apply(claims, overrides)


def entra_header(key: JwtKey) -> dict[str, Any]:
    """Entra ID's header carries `x5t` too (never read by keymint)."""
    return {"typ": "JWT", "alg": key.alg, "kid": key.kid, "x5t": key.kid}


def trust_bundle(jwt_keys: Iterable[JwtKey], x509_key: JwtKey | None = None) -> dict[str, Any]:
    """A SPIFFE trust bundle (SPIFFE Trust Domain and Bundle, section 4): JWT-SVID keys with
    `use: jwt-svid`, X.509 authorities with `use: x509-svid` (never a JWT key)."""
    keys = [key.public_jwk(use="jwt-svid", alg=False) for key in jwt_keys]
    if x509_key is not None:
        keys.append(x509_key.public_jwk(use="x509-svid", alg=False))
    return {"keys": keys, "spiffe_sequence": 12, "spiffe_refresh_hint": 300}


def claims_factory(
    shape: Callable[..., Claims], *args: Any, **kwargs: Any
) -> Callable[[float, Overrides], Claims]:
    """`shape` with its issuer and audience fixed: (now, overrides) -> claims."""

    def claims(now: float, overrides: Overrides = None) -> Claims:
        return shape(*args, now, overrides=overrides, **kwargs)

    return claims
