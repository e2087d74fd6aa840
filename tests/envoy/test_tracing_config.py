"""envoy/tracing.yaml, the tracing example: declared, used, and accepted by a real Envoy once merged
into envoy.yaml as its header says (tests/e2e/test_observability.py runs it live)."""

from __future__ import annotations

from pathlib import Path

import yaml

from extauthz.dev.envoy import (
    check_port_values,
    declared_defaults,
    render_text,
    server_certificate,
    used_placeholders,
    write_tls,
)
from extauthz.dev.settings import root_ca
from tests.envoy.harness import TRACING, validate, with_tracing
from tests.helpers.certs import pem


def test_the_tracing_example_declares_and_uses_its_placeholders() -> None:
    declared = declared_defaults(TRACING)
    assert set(declared) == {
        "OTEL_COLLECTOR_ADDRESS",
        "OTEL_COLLECTOR_PORT",
        "TRACE_SAMPLING_PERCENT",
    }
    assert used_placeholders(TRACING) == set(declared)


def test_the_tracing_example_merged_into_envoy_yaml_is_a_config_envoy_accepts(
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pem(root_ca("prod.test").certificate))
    cert, key = write_tls(tmp_path, "server", server_certificate(root_ca("edge.test"), "front"))
    rendered = render_text(
        "envoy.yaml",
        SERVER_CERT=cert,
        SERVER_KEY=key,
        CLIENT_CA_BUNDLE=bundle,
        **check_port_values(tmp_path),
    )
    config = tmp_path / "envoy-tracing.yaml"
    config.write_text(with_tracing(rendered))
    result = validate(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout
    merged = yaml.safe_load(config.read_text())
    clusters = [c["name"] for c in merged["static_resources"]["clusters"]]
    assert "otel_collector" in clusters
    # A mistake in the addition is refused too, so the OK above means something.
    broken = tmp_path / "broken.yaml"
    broken.write_text(config.read_text().replace("v3.OpenTelemetryConfig", "v3.OpenTelemetryConfg"))
    assert validate(broken).returncode != 0
