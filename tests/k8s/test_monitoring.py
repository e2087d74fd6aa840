"""k8s/monitoring/: the alert rules pass `promtool check rules` and their unit tests (`promtool test
rules`), the dashboard's expressions are valid PromQL, and every metric either reads is one keymint
exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import extauthz.server.app  # noqa: F401  (registers the gateway's collectors)
import signer.metrics  # noqa: F401
from tests.conftest import REPO

MONITORING = REPO / "k8s" / "monitoring"
METRIC = re.compile(r"\bkeymint_[a-z_]+\b")
# What operators need to see (issue 15): each has a panel whose title says so.
DASHBOARD_TOPICS = (
    "Decisions",
    "latency",
    "cache hit rate",
    "Mints",
    "Signer faults",
    "Quorum",
    "Key publish lead",
)
ALERTS = {
    "KeymintQuorumAtRisk",
    "KeymintQuorumLost",
    "KeymintSignerSetAside",
    "KeymintMintSlow",
    "KeymintJwksFetchFailing",
    "KeymintKeyPublishLeadEnding",
    "KeymintAuditWriteFailing",
    "KeymintNotReady",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: `make setup` installs Debian's prometheus package"
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=120, check=False, cwd=MONITORING
    )


def exported_metrics() -> set[str]:
    """Every series name keymint's registry can produce."""
    names = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("keymint_"):
            continue
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        else:
            names.add(family.name)
    return names


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((MONITORING / "dashboard.json").read_text())
    return document


def dashboard_expressions() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", "alerts.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_runs_the_unit_test_of_each_alert() -> None:
    result = promtool("test", "rules", "alerts.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "alerts.test.yaml").read_text()))
    assert tested == ALERTS


def test_promtool_test_rules_fails_when_an_alert_does_not_fire(tmp_path: Path) -> None:
    """The unit tests can fail: the same tests against rules that never fire do."""
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    for rule in rules["groups"][0]["rules"]:
        rule["expr"] = "vector(1) == 0"
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules))
    shutil.copy(MONITORING / "alerts.test.yaml", tmp_path / "alerts.test.yaml")
    binary = shutil.which("promtool")
    assert binary
    result = subprocess.run(
        [binary, "test", "rules", "alerts.test.yaml"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_the_alerts_are_the_ones_operators_need() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert names == ALERTS
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


@pytest.mark.parametrize("source", ["alerts.yaml", "dashboard.json"])
def test_every_metric_read_is_one_keymint_exports(source: str) -> None:
    text = (MONITORING / source).read_text()
    if source == "alerts.yaml":
        rules = yaml.safe_load(text)["groups"][0]["rules"]
        text = "\n".join(rule["expr"] for rule in rules)
    else:
        text = "\n".join(dashboard_expressions())
    read = set(METRIC.findall(text))
    assert read, source
    assert read <= exported_metrics(), sorted(read - exported_metrics())


def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each expression as a recording rule (Grafana's variables filled in)."""
    rules = [
        {
            "record": f"keymint:dashboard:{index}",
            "expr": expr.replace("$__rate_interval", "5m").replace("$instance", ".*"),
        }
        for index, expr in enumerate(dashboard_expressions())
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_shows_what_operators_watch() -> None:
    titles = " | ".join(panel["title"] for panel in dashboard()["panels"])
    for topic in DASHBOARD_TOPICS:
        assert topic.lower() in titles.lower(), topic
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
