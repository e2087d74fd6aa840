"""keymint's Envoy configs, tested like code.

Every placeholder is declared (with its default) and used; the defaults render to a config the real
Envoy accepts (`envoy --mode validate`); and the knobs keymint depends on are read back from a
live Envoy's /config_dump, as Envoy understood them, not as the YAML was written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from extauthz.config import GatewaySettings
from extauthz.dev.envoy import (
    CONFIG_DIR,
    CONFIGS,
    EnvoyProcess,
    check_port_values,
    declared_defaults,
    render,
    render_text,
    server_certificate,
    used_placeholders,
    write_tls,
)
from extauthz.dev.settings import policy_document, root_ca
from extauthz.server.token_exchange import MAX_BODY_BYTES
from extauthz.tools.pinned_keys import pinned_jwks
from signer.coordinator import CoordinatorSettings
from signer.devca import gateway_name, spiffe_id
from signer.token import kid_for
from tests.conftest import REPO
from tests.envoy.harness import validate, with_unix_check_port
from tests.helpers.certs import pem

EXAMPLE_POLICY = json.loads((REPO / "policy" / "example.json").read_text())
# A route's prefix and the route key in its own check_settings (no other `match:` in between).
ROUTE_KEY = re.compile(
    r"match: \{prefix: (/\w+/)\}(?:(?!match:)[\s\S])*?context_extensions: \{route: (\w+)\}"
)
CLOSED_PORT = 1  # nothing listens there: the live configs need no backend to load


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The files the front listener reads at load time (validate mode opens them too)."""
    directory = tmp_path_factory.mktemp("envoy-tls")
    bundle = directory / "bundle.pem"
    bundle.write_bytes(pem(root_ca("prod.test").certificate))
    server = server_certificate(root_ca("edge.test"), "front.keymint.test")
    cert, key = write_tls(directory, "server", server)
    return {
        "SERVER_CERT": cert,
        "SERVER_KEY": key,
        "CLIENT_CA_BUNDLE": bundle,
        **check_port_values(directory),
    }


@pytest.fixture(scope="module")
def pinned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JWKS as `extauthz pin-keys` writes it (jwt_authn reads local_jwks when it loads)."""
    path = tmp_path_factory.mktemp("pinned") / "keymint-jwks.json"
    key = Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    path.write_text(json.dumps(pinned_jwks({kid_for(raw): raw})))
    return path


def files_for(name: str, tls: dict[str, Path], pinned: Path) -> dict[str, Path]:
    return tls if name == "envoy.yaml" else {"PINNED_JWKS_FILE": pinned}


@pytest.mark.parametrize("name", CONFIGS)
def test_every_placeholder_is_declared_and_used(name: str) -> None:
    declared = declared_defaults(name)
    assert declared, f"{name} declares no placeholders"
    assert used_placeholders(name) == set(declared)
    assert "$$" not in (CONFIG_DIR / name).read_text()  # envsubst would not unescape it


@pytest.mark.parametrize("name", CONFIGS)
def test_the_defaults_render_to_a_config_envoy_accepts(
    name: str, tmp_path: Path, tls: dict[str, Path], pinned: Path
) -> None:
    result = validate(render(name, tmp_path, **files_for(name, tls, pinned)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_validation_is_real(tmp_path: Path, tls: dict[str, Path]) -> None:
    """The validator refuses a mistake, so its OK above means something."""
    text = render_text("envoy.yaml", **tls)
    assert "failure_mode_allow: false" in text
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("failure_mode_allow: false", "failure_mode_allow: sometimes"))
    result = validate(broken)
    assert result.returncode != 0
    assert "OK" not in result.stdout


def test_the_documented_unix_socket_cluster_is_a_config_envoy_accepts(
    tmp_path: Path, tls: dict[str, Path]
) -> None:
    socket = tmp_path / "check.sock"
    config = tmp_path / "envoy-unix.yaml"
    config.write_text(with_unix_check_port(render_text("envoy.yaml", **tls), socket))
    result = validate(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout
    (cluster,) = [
        c
        for c in yaml.safe_load(config.read_text())["static_resources"]["clusters"]
        if c["name"] == "keymint_grpc"
    ]
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"] == {"pipe": {"path": str(socket)}}
    assert "transport_socket" not in cluster


def test_render_refuses_a_placeholder_the_config_does_not_declare() -> None:
    with pytest.raises(KeyError, match="GATEWAY_PORT"):
        render_text("envoy.yaml", GATEWAY_PORT=9001)


# --- the configs as a live Envoy loaded them ------------------------------------------------------


@pytest.fixture(scope="module")
def dumps(
    tmp_path_factory: pytest.TempPathFactory, tls: dict[str, Path], pinned: Path
) -> Iterator[dict[str, dict[str, Any]]]:
    """/config_dump of both configs, each served by a real Envoy on loopback ports of 0."""
    directory = tmp_path_factory.mktemp("envoy-live")
    live = {"ADMIN_PORT": 0, "LISTEN_ADDRESS": "127.0.0.1", "LISTEN_PORT": 0}
    front = EnvoyProcess(
        render("envoy.yaml", directory, **live, **tls, GATEWAY_GRPC_PORT=CLOSED_PORT),
        directory,
        "front",
    )
    upstream = EnvoyProcess(
        render("upstream-jwt.yaml", directory, **live, PINNED_JWKS_FILE=pinned),
        directory,
        "upstream",
    )
    try:
        front.start()
        upstream.start()
        yield {"front": front.config_dump(), "upstream": upstream.config_dump()}
    finally:
        front.stop()
        upstream.stop()


def seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


def listener(dump: dict[str, Any]) -> dict[str, Any]:
    (listeners,) = [c for c in dump["configs"] if c["@type"].endswith("ListenersConfigDump")]
    (only,) = listeners["static_listeners"]
    result: dict[str, Any] = only["listener"]
    return result


def connection_manager(dump: dict[str, Any]) -> dict[str, Any]:
    (chain,) = listener(dump)["filter_chains"]
    (hcm,) = chain["filters"]
    result: dict[str, Any] = hcm["typed_config"]
    return result


def http_filter(dump: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [f for f in connection_manager(dump)["http_filters"] if f["name"] == name]
    result: dict[str, Any] = found
    return result


def routes(dump: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Routes by their match ("path:/token", "prefix:/orders/")."""
    (host,) = connection_manager(dump)["route_config"]["virtual_hosts"]
    by_match = {}
    for route in host["routes"]:
        ((kind, value),) = route["match"].items()
        by_match[f"{kind}:{value}"] = route
    return by_match


def ext_authz_per_route(route: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = route["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
    return result


def test_ext_authz_fails_closed_with_a_503(dumps: dict[str, dict[str, Any]]) -> None:
    ext_authz = http_filter(dumps["front"], "envoy.filters.http.ext_authz")["typed_config"]
    assert ext_authz.get("failure_mode_allow", False) is False
    assert ext_authz["status_on_error"] == {"code": "ServiceUnavailable"}
    assert ext_authz["transport_api_version"] == "V3"
    assert ext_authz["grpc_service"]["envoy_grpc"]["cluster_name"] == "keymint_grpc"
    assert ext_authz["include_peer_certificate"] is True
    assert "with_request_body" not in ext_authz
    names = [f["name"] for f in connection_manager(dumps["front"])["http_filters"]]
    assert names == [
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.buffer",
        "envoy.filters.http.router",
    ]


def test_ext_authz_waits_longer_than_a_mint(dumps: dict[str, dict[str, Any]]) -> None:
    """keymint's own deadline must expire first, so the caller gets keymint's answer (a 503
    no_signing_quorum with a reason) rather than Envoy's status_on_error."""
    ext_authz = http_filter(dumps["front"], "envoy.filters.http.ext_authz")["typed_config"]
    timeout = seconds(ext_authz["grpc_service"]["timeout"])
    settings = GatewaySettings.from_env(
        {"KEYMINT_ISSUER": "https://k", "POLICY_FILE": "p", "KEYMINT_OIDC_AUDIENCES": "a"}
    )
    assert CoordinatorSettings().attempt_timeout < settings.sign_timeout < timeout
    assert timeout - settings.sign_timeout >= 0.25  # room for identify, policy and the hop


def test_front_tls_accepts_certificates_and_sanitizes_xfcc(
    dumps: dict[str, dict[str, Any]], tls: dict[str, Path]
) -> None:
    (chain,) = listener(dumps["front"])["filter_chains"]
    context = chain["transport_socket"]["typed_config"]
    assert context.get("require_client_certificate", False) is False
    validation = context["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"]["filename"] == str(tls["CLIENT_CA_BUNDLE"])
    hcm = connection_manager(dumps["front"])
    assert hcm["forward_client_cert_details"] == "SANITIZE_SET"
    assert hcm["use_remote_address"] is True
    assert hcm["normalize_path"] is True


def test_front_routes(dumps: dict[str, dict[str, Any]]) -> None:
    by_match = routes(dumps["front"])
    assert list(by_match) == [
        "path:/token",
        "prefix:/.well-known/",
        "path:/authorize",
        "prefix:/deploy/",
        "prefix:/orders/",
        "prefix:/",
    ]
    # keymint's public HTTP surface: the exchange and the documents, never health or admin.
    for key in ("path:/token", "prefix:/.well-known/", "path:/authorize"):
        assert by_match[key]["route"]["cluster"] == "keymint_http"
        assert ext_authz_per_route(by_match[key])["disabled"] is True
    clusters = {r.get("route", {}).get("cluster") for r in by_match.values()}
    assert clusters == {"keymint_http", "upstream", None}
    # Envoy refuses a /token body keymint would refuse anyway, before it reaches keymint.
    buffer = by_match["path:/token"]["typed_per_filter_config"]["envoy.filters.http.buffer"]
    assert int(buffer["config"]["buffer"]["max_request_bytes"]) == MAX_BODY_BYTES
    assert http_filter(dumps["front"], "envoy.filters.http.buffer")["disabled"] is True
    # Unknown paths: a 404 that costs keymint nothing.
    assert by_match["prefix:/"]["direct_response"]["status"] == 404
    assert ext_authz_per_route(by_match["prefix:/"])["disabled"] is True


def test_route_keys_name_audiences_in_the_policies(dumps: dict[str, dict[str, Any]]) -> None:
    """Envoy redacts context_extensions in /config_dump (the field is marked sensitive), so the
    keys are read from the config text; the e2e tests see them reach keymint."""
    by_match = routes(dumps["front"])
    for match in ("prefix:/deploy/", "prefix:/orders/"):
        settings = ext_authz_per_route(by_match[match])["check_settings"]
        assert settings["context_extensions"] == {"route": "[redacted]"}
    keys = dict(ROUTE_KEY.findall(render_text("envoy.yaml")))
    assert keys == {"/deploy/": "deploy", "/orders/": "orders"}
    for policy in (EXAMPLE_POLICY, policy_document("https://issuer.test")):
        declared = {k for a in policy["audiences"].values() for k in a.get("route_keys", [])}
        assert set(keys.values()) <= declared


def test_upstream_jwt_authn_verifies_every_path_with_pinned_keys(
    dumps: dict[str, dict[str, Any]], pinned: Path
) -> None:
    jwt_authn = http_filter(dumps["upstream"], "envoy.filters.http.jwt_authn")["typed_config"]
    providers = jwt_authn["providers"]
    defaults = declared_defaults("upstream-jwt.yaml")
    assert {name: p["audiences"] for name, p in providers.items()} == {
        "keymint_orders": [defaults["ORDERS_AUDIENCE"]],
        "keymint_deploy": [defaults["DEPLOY_AUDIENCE"]],
    }
    example_audiences = set(EXAMPLE_POLICY["audiences"])
    for provider in providers.values():
        assert provider["issuer"] == defaults["KEYMINT_ISSUER"]
        assert set(provider["audiences"]) <= example_audiences
        assert provider["forward"] is True
        assert provider["require_expiration"] is True
        # Keys only from the file pin-keys wrote: nothing is fetched from the gateway.
        assert provider["local_jwks"] == {"filename": str(pinned)}
        assert "remote_jwks" not in provider
    rules = jwt_authn["rules"]
    assert rules[-1]["match"] == {"prefix": "/"}  # no path is left unverified
    assert all("requires" in rule for rule in rules)


def test_upstream_reaches_nothing_but_the_api(dumps: dict[str, dict[str, Any]]) -> None:
    """No cluster for keymint's JWKS: whoever serves it has no say in what verifies here."""
    (clusters,) = [
        c for c in dumps["upstream"]["configs"] if c["@type"].endswith("ClustersConfigDump")
    ]
    names = {c["cluster"]["name"] for c in clusters["static_clusters"]}
    assert names == {"app"}


def cluster(dump: dict[str, Any], name: str) -> dict[str, Any]:
    (clusters,) = [c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump")]
    (found,) = [c["cluster"] for c in clusters["static_clusters"] if c["cluster"]["name"] == name]
    result: dict[str, Any] = found
    return result


def test_envoy_reaches_the_check_port_over_mtls(
    dumps: dict[str, dict[str, Any]], tls: dict[str, Path]
) -> None:
    """Envoy presents its own certificate to the gateway and accepts only the gateway's: a CA
    it trusts and the gateway's SPIFFE ID, the one the dev CA issues (signer.devca)."""
    grpc_cluster = cluster(dumps["front"], "keymint_grpc")
    socket = grpc_cluster["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    context = socket["typed_config"]
    assert context["@type"].endswith("tls.v3.UpstreamTlsContext")
    common = context["common_tls_context"]
    (certificate,) = common["tls_certificates"]
    assert certificate["certificate_chain"] == {"filename": str(tls["CHECK_CLIENT_CERT"])}
    assert certificate["private_key"] == {"filename": "[redacted]"}  # Envoy hides key sources
    assert f'private_key: {{filename: "{tls["CHECK_CLIENT_KEY"]}"}}' in render_text(
        "envoy.yaml", **tls
    )
    validation = common["validation_context"]
    assert validation["trusted_ca"] == {"filename": str(tls["GATEWAY_CA_BUNDLE"])}
    gateway_id = declared_defaults("envoy.yaml")["GATEWAY_SPIFFE_ID"]
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": gateway_id}}
    ]
    assert gateway_id == spiffe_id(gateway_name())
    assert common["alpn_protocols"] == ["h2"]
    # Envoy's health checks use the cluster's transport socket: the same mTLS connection rules.
    (health_check,) = grpc_cluster["health_checks"]
    assert "transport_socket_match_criteria" not in health_check
    assert "transport_socket_matches" not in grpc_cluster
