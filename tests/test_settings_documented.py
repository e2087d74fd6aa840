"""Every setting the gateway and the signers read is declared once in their schemas, each one is
named in README.md's configuration tables (or docs/operations.md's), and nothing is read that the
schema does not declare: the tables stay true as settings come and go."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from extauthz.config import GATEWAY_SETTINGS, GatewaySettings
from extauthz.guard_checker import SETTINGS as CHECKER_SETTINGS
from signer.server import SIGNER_SETTINGS, SignerSettings
from signer.vault.config import parse_vault_config
from tests.conftest import REPO

DOCUMENTS = ("README.md", "docs/operations.md")


class Recording(Mapping[str, str]):
    """An environment that notes every name a parser looks up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self._values[name]

    def get(self, name: str, default: object = None) -> object:  # type: ignore[override]
        self.read.add(name)
        return self._values.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@pytest.mark.parametrize("settings", [GATEWAY_SETTINGS, SIGNER_SETTINGS], ids=["gateway", "signer"])
def test_every_setting_is_in_the_configuration_tables(settings: tuple[object, ...]) -> None:
    text = "\n".join((REPO / name).read_text() for name in DOCUMENTS)
    missing = [s.name for s in settings if f"`{s.name}`" not in text]  # type: ignore[attr-defined]
    assert missing == []


def test_the_gateway_reads_only_what_its_schema_declares() -> None:
    env = Recording(
        {
            "KEYMINT_ISSUER": "https://k.test",
            "POLICY_FILE": "/p.json",
            "REGO_FILE": "/p.rego",
            "KEYMINT_OIDC_AUDIENCES": "https://k.test",
            "KEYMINT_REDIS_URL": "rediss://redis:6379/0",
            "KEYMINT_GRPC_LISTEN": "0.0.0.0:9001",
            "KEYMINT_CHECK_TLS_CERT": "/c.crt",
            "KEYMINT_CHECK_TLS_KEY": "/c.key",
            "KEYMINT_CHECK_CLIENT_CA": "/ca.crt",
            "KEYMINT_CHECK_ALLOWED_CLIENTS": "spiffe://k.test/envoy",
            "KEYMINT_TRACING": "otlp",
        }
    )
    GatewaySettings.from_env(env)
    declared = {s.name for s in GATEWAY_SETTINGS}
    assert len(env.read) > 40
    assert env.read - declared == set()


def test_a_signer_reads_only_what_its_schema_declares() -> None:
    env = Recording(
        {
            "KEYMINT_SIGNER_ID": "1",
            "KEYMINT_TLS_DIR": "/tls",
            "KEYMINT_ISSUER": "https://k.test",
            "KEYMINT_EVIDENCE_CHECKER": "extauthz.guard_checker:from_env",
            "KEYMINT_VAULT": "yubikey",
        }
    )
    SignerSettings.from_env(env)
    parse_vault_config(env)
    declared = {s.name for s in (*SIGNER_SETTINGS, *CHECKER_SETTINGS)}
    assert env.read - declared == set()
