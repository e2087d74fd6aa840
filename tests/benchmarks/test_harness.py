"""The benchmark harnesses run end to end with tiny counts (`--quick`), so they cannot rot
between `make bench-*` runs: each reaches its last JSON line with every headline figure, writes
its results and plot, and `make bench-report` renders them. No figure is asserted on: these runs
are far too short to mean anything, and the machine is shared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(script: str, out: Path) -> dict[str, object]:
    finished = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    last: dict[str, object] = json.loads(finished.stdout.strip().splitlines()[-1])
    return last


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


def test_bench_e2e_reaches_every_headline_figure(results: Path) -> None:
    summary = run("bench_e2e.py", results)
    for key in (
        "cached_vs_noop_rps",
        "cached_vs_noop_p99",
        "seen_overhead_p50_ms",
        "new_p50_ms",
        "new_p99_ms",
        "token_p50_ms",
        "new_path_vs_seen_p50",
        "cached_vs_jwt_authn_rps",
    ):
        assert isinstance(summary[key], float), key
    data = json.loads((results / "bench-e2e.json").read_text())
    # Every scenario is answered 200, as a rule: a wrong path, credential or configuration
    # fails all of its requests. (On a machine loaded enough for a replica's shared state to go
    # stale, or for a signer to miss its deadline, a few 503s are the stack's honest answer, and
    # the benchmark reports them in `errors`: they are not the harness's.)
    failed = {
        f"{kind} {name}": {k: v for k, v in run.items() if k.endswith(("errors", "timeouts"))}
        for kind in ("throughput", "latency")
        for name, run in data[kind].items()
        if run["errors"] * 2 > run["requests"]
    }
    assert failed == {}
    assert summary["fresh_exhausted"] == 0  # every "new" credential really was new
    assert set(data["throughput"]) == {"noop", "noop_uds", "seen", "plain", "jwt", "newpath", "mix"}
    assert set(data["latency"]) == {
        "noop",
        "noop_uds",
        "seen",
        "plain",
        "jwt",
        "newpath",
        "new",
        "token",
    }
    assert (results / "bench-e2e-latency.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_scale_reaches_every_headline_figure(results: Path) -> None:
    summary = run("bench_scale.py", results)
    for key in ("identities_1m_vs_1k", "bindings_10k_vs_10", "rss_per_token_bytes"):
        assert isinstance(summary[key], int | float), key
    assert any(key.startswith("mint_sign_p50_ms_") for key in summary)
    assert (results / "bench-scale.png").read_bytes()[:4] == b"\x89PNG"


def test_the_report_renders_what_the_benchmarks_left(results: Path) -> None:
    out = results / "performance.md"
    subprocess.run(
        [sys.executable, "benchmarks/report.py", "--results", str(results), "--out", str(out)],
        cwd=REPO,
        check=True,
        timeout=120,
    )
    text = out.read_text()
    assert "![Latency through Envoy, by scenario](performance/bench-e2e-latency.png)" in text
    assert "![Cost as keymint grows](performance/bench-scale.png)" in text
    assert (
        "| `make bench-check` | cached / do-nothing server (checks/s) | not run | >= 0.9 |" in text
    )
    e2e = json.loads((results / "bench-e2e.json").read_text())["summary"]
    assert f"| new credential p50 through Envoy | {e2e['new_p50_ms']:.3g} ms |" in text


def test_profile_check_with_redis_reaches_every_path() -> None:
    finished = subprocess.run(
        [sys.executable, "benchmarks/profile_check.py", "--redis"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    figures = json.loads(finished.stdout.strip().splitlines()[-1])
    paths = ("hit", "hit_parsed", "newpath", "newpath_unverified", "newpath_shared_only")
    assert sorted(figures) == sorted(f"{path}_us" for path in paths)
    assert all(isinstance(value, float) and value > 0 for value in figures.values())
