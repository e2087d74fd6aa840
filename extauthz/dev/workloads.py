"""Every kind of caller the gateway accepts, around the local stack (the demo, tests).

- GitHub Actions: the stack's own GitHub-shaped issuer (discovery).
- A Kubernetes cluster: projected service-account tokens; its keys exported to a JWKS file, as an
  operator does with `kubectl get --raw /openid/v1/jwks`.
- GitLab CI: `id_tokens`, keys by discovery.
- SPIRE: JWT-SVIDs for the stack's trust domain, keys in a SPIFFE trust bundle file.
- The organisation's IdP (`extauthz.dev.idp.LocalIdp`): engineers, by device flow or PKCE.

`Workloads.env()` writes `KEYMINT_ISSUERS_FILE` and a policy with a binding for each of them (on
top of the stack's own), and turns the GitHub-only settings off; `local_stack(workloads=True)`
does so with the stack's GitHub issuer.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extauthz.dev.github import LocalOidcIssuer
from extauthz.dev.idp import DEFAULT_USERS, LocalIdp
from extauthz.dev.issuers import (
    JwtKey,
    LocalIssuer,
    gitlab_claims,
    kubernetes_claims,
    sign_token,
    svid_claims,
    trust_bundle,
)
from extauthz.dev.settings import (
    DEPLOY,
    OIDC_AUDIENCE,
    ORDERS,
    TRUST_DOMAIN,
    policy_document,
)

# The audience each workload asks its platform for (a projected volume's `audience`, an
# `id_tokens` entry's `aud`, a JWT-SVID's audience); GitHub's is the stack's OIDC_AUDIENCE.
WORKLOAD_AUDIENCE = "https://keymint.test"
CLIENT_ID = "keymint-cli"  # the login command's client at the IdP: its ID tokens' audience
ENGINEER_TTL = 900  # the seeds' engineer roles: 15 minutes
ENGINEER_SCOPES = "deploy:read"


def workloads_policy(github_issuer: str, cluster: str, gitlab: str, idp: str) -> dict[str, Any]:
    """The stack's policy, plus a role and a binding for each new kind of caller."""
    document = policy_document(github_issuer)
    document["roles"]["engineer-deploy-read"] = {
        "description": "Engineers who self-mint: read deploys, 15 minutes at most.",
        "scopes": ["deploy:read"],
        "max_ttl_seconds": ENGINEER_TTL,
    }
    document["roles"]["nobody"] = {
        "description": "Grants a scope ALLOWED_SCOPES leaves out: a binding that grants nothing.",
        "scopes": ["admin:everything"],
        "max_ttl_seconds": 60,
    }
    document["bindings"] += [
        {
            "name": "shop-pods-read-orders",
            "role": "orders-reader",
            "match": {
                "kind": "kubernetes",
                "issuer": cluster,
                "claims": {"namespace": "shop", "service_account": ["web", "glob:batch-*"]},
            },
            "routes": {"audiences": [ORDERS]},
        },
        {
            "name": "my-project-deploys",
            "role": "deployer",
            "match": {
                "kind": "gitlab_ci",
                "issuer": gitlab,
                "claims": {"project_id": "20", "ref": "main", "ref_protected": "true"},
            },
            "routes": {"audiences": [DEPLOY]},
        },
        {
            "name": "shop-jwt-svids-read-orders",
            "role": "orders-reader",
            "match": {
                "kind": "spiffe",
                "ids": [f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/*"],
                "svids": ["jwt"],
            },
            "routes": {"audiences": [ORDERS]},
        },
        {
            "name": "platform-engineers-read-deploys",
            "role": "engineer-deploy-read",
            "match": {
                "kind": "oidc",
                "issuer": idp,
                "claims": {"groups": "platform", "email": "glob:*@example.com"},
            },
            "routes": {"audiences": [DEPLOY]},
        },
        {
            "name": "sales-get-nothing",
            "role": "nobody",
            "match": {"kind": "oidc", "issuer": idp, "claims": {"groups": "sales"}},
            "routes": {"audiences": [DEPLOY]},
        },
    ]
    return document


@dataclass
class Workloads:
    directory: Path
    github: LocalOidcIssuer
    cluster: LocalIssuer
    gitlab: LocalIssuer
    spire: JwtKey
    idp: LocalIdp

    @classmethod
    async def start(cls, directory: Path, *, idp_interval: int = 5) -> Workloads:
        github = await LocalOidcIssuer(clock=time.time, audience=OIDC_AUDIENCE).start()
        cluster = await LocalIssuer(keys=[JwtKey.generate("cluster-1", "RS256")]).start()
        gitlab = await LocalIssuer(keys=[JwtKey.generate("gitlab-1", "RS256")]).start()
        idp = LocalIdp(
            key=JwtKey.generate("idp-1", "RS256"), users=DEFAULT_USERS, interval=idp_interval
        )
        await idp.start()
        return cls(directory, github, cluster, gitlab, JwtKey.generate("spire-1", "ES256"), idp)

    async def stop(self) -> None:
        for server in (self.github, self.cluster, self.gitlab, self.idp):
            await server.stop()

    def issuers_document(self) -> dict[str, Any]:
        return {
            "version": 1,
            "issuers": {
                "github": {
                    "preset": "github_actions",
                    "issuer": self.github.issuer,
                    "audiences": [OIDC_AUDIENCE],
                },
                "prod-cluster": {
                    "preset": "kubernetes",
                    "issuer": self.cluster.issuer,
                    "audiences": [WORKLOAD_AUDIENCE],
                    "jwks_file": "prod-cluster-jwks.json",
                },
                "gitlab": {
                    "preset": "gitlab_ci",
                    "issuer": self.gitlab.issuer,
                    "audiences": [WORKLOAD_AUDIENCE],
                },
                "spire": {
                    "preset": "spiffe_jwt",
                    "trust_domain": TRUST_DOMAIN,
                    "audiences": [WORKLOAD_AUDIENCE],
                    "jwks_file": "spire-bundle.json",
                },
                "corp-idp": {
                    "preset": "oidc",
                    "issuer": self.idp.issuer,
                    "audiences": [CLIENT_ID],
                    "description": "engineers, through `extauthz login`",
                },
            },
        }

    def env(self) -> dict[str, str]:
        """Settings for the gateway and the signers (written into `directory`)."""
        self.cluster.write_jwks(self.directory / "prod-cluster-jwks.json")
        bundle = trust_bundle([self.spire])
        (self.directory / "spire-bundle.json").write_text(json.dumps(bundle))
        issuers = self.directory / "issuers.json"
        issuers.write_text(json.dumps(self.issuers_document(), indent=2))
        policy = self.directory / "workloads-policy.json"
        document = workloads_policy(
            self.github.issuer, self.cluster.issuer, self.gitlab.issuer, self.idp.issuer
        )
        policy.write_text(json.dumps(document, indent=2))
        return {
            "KEYMINT_ISSUERS_FILE": str(issuers),
            "POLICY_FILE": str(policy),
            "KEYMINT_OIDC_ISSUERS": "",
            "KEYMINT_OIDC_AUDIENCES": "",
        }

    # --- tokens ------------------------------------------------------------------------------

    def service_account_token(
        self, namespace: str = "shop", name: str = "web", **overrides: Any
    ) -> str:
        claims = kubernetes_claims(
            self.cluster.issuer,
            WORKLOAD_AUDIENCE,
            time.time(),
            namespace=namespace,
            service_account=name,
            overrides=overrides,
        )
        return sign_token(self.cluster.key, claims, typ=None)

    def gitlab_token(self, **overrides: Any) -> str:
        claims = gitlab_claims(self.gitlab.issuer, WORKLOAD_AUDIENCE, time.time())
        claims.update(overrides)
        return sign_token(self.gitlab.key, claims)

    def jwt_svid(self, path: str = "/ns/shop/sa/web", **overrides: Any) -> str:
        spiffe_id = f"spiffe://{TRUST_DOMAIN}{path}"
        claims = svid_claims(spiffe_id, WORKLOAD_AUDIENCE, time.time(), overrides=overrides)
        claims.setdefault("jti", str(uuid.uuid4()))
        return sign_token(self.spire, claims)

    def engineer_token(self, user: str = "ada", **overrides: Any) -> str:
        """The ID token `extauthz login` would get for `user`."""
        return self.idp.id_token(user, **overrides)
