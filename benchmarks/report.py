"""make bench-report: docs/performance.md from what the benchmarks left in docs/performance/.

It runs no benchmark. Each `make bench-*` target keeps its output in docs/performance/NAME.log
(its first line: when it started; its last line: its JSON figures); bench-e2e and bench-scale
also write NAME.json and their plots. A benchmark that has not been run shows as "not run".
The hand-written part (what the profiles showed, what would close each gap) is
docs/performance/analysis.md, included as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@dataclass(frozen=True)
class Run:
    """One benchmark's last output: when it started and its JSON line."""

    name: str
    started: str
    figures: Mapping[str, Any]


def read_log(directory: Path, name: str) -> Run | None:
    path = directory / f"{name}.log"
    if not path.exists():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    started = next((ln.split(" ", 1)[1] for ln in lines if ln.startswith("started ")), "?")
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                return Run(name, started, json.loads(line))
            except json.JSONDecodeError:
                break
    return None


def read_json(directory: Path, name: str) -> dict[str, Any] | None:
    path = directory / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@dataclass(frozen=True)
class Target:
    benchmark: str
    label: str
    key: str
    target: float | None
    better: str  # "low", "high" or "" (no target: reported only)
    unit: str = ""


TARGETS = (
    Target("bench-check", "new credential p50 (direct gRPC, 50/s)", "new_p50_ms", 4, "low", " ms"),
    Target("bench-check", "new credential p99 (direct gRPC, 50/s)", "new_p99_ms", 10, "low", " ms"),
    Target("bench-check", "cached / do-nothing server (checks/s)", "cached_vs_noop", 0.9, "high"),
    Target("bench-sign", "p50 through 3 signers", "p50_ms", 3, "low", " ms"),
    Target("bench-sign", "p99 through 3 signers", "p99_ms", 8, "low", " ms"),
    Target("bench-e2e", "cached / do-nothing ext_authz (req/s)", "cached_vs_noop_rps", 0.9, "high"),
    Target("bench-e2e", "cached / do-nothing ext_authz (p99)", "cached_vs_noop_p99", 1.5, "low"),
    Target(
        "bench-e2e",
        "seen credential over Envoy alone, p50",
        "seen_overhead_p50_ms",
        0.5,
        "low",
        " ms",
    ),
    Target("bench-e2e", "new credential p50 through Envoy", "new_p50_ms", 5, "low", " ms"),
    Target("bench-e2e", "new credential p99 through Envoy", "new_p99_ms", 12, "low", " ms"),
    Target("bench-e2e", "`/token` p50", "token_p50_ms", 5, "low", " ms"),
    Target("bench-e2e", "`/token` p99", "token_p99_ms", 12, "low", " ms"),
    Target(
        "bench-e2e", "seen credential on a new path / seen, p50", "new_path_vs_seen_p50", 1.5, "low"
    ),
    Target("bench-e2e", "cached / Envoy's jwt_authn (req/s)", "cached_vs_jwt_authn_rps", None, ""),
    Target(
        "bench-scale", "cached Check, 1M / 1k cached credentials", "identities_1m_vs_1k", 1.2, "low"
    ),
    Target("bench-scale", "policy decision, 10k / 10 bindings", "bindings_10k_vs_10", 1.2, "low"),
    Target("bench-scale", "RSS per cached credential", "rss_per_token_bytes", 2048, "low", " B"),
)


def verdict(target: Target, value: float) -> str:
    if target.target is None:
        return "reported"
    met = value <= target.target if target.better == "low" else value >= target.target
    return "met" if met else "**not met**"


def number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def targets_table(runs: Mapping[str, Run | None]) -> list[str]:
    lines = [
        "| benchmark | figure | measured | target | | run started (UTC) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in TARGETS:
        run = runs.get(t.benchmark)
        goal = "" if t.target is None else f"{'<=' if t.better == 'low' else '>='} {t.target}"
        if run is None or t.key not in run.figures:
            unit = t.unit if goal else ""
            lines.append(f"| `make {t.benchmark}` | {t.label} | not run | {goal}{unit} | | |")
            continue
        value = run.figures[t.key]
        lines.append(
            f"| `make {t.benchmark}` | {t.label} | {number(value)}{t.unit} "
            f"| {goal}{t.unit if goal else ''} | {verdict(t, value)} | {run.started} |"
        )
    return lines


def e2e_tables(results: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for kind, title in (
        (
            "throughput",
            f"{results['sizes']['connections']} requests in flight (closed loop), "
            f"best of {results['sizes']['rounds']} rounds",
        ),
        (
            "latency",
            "one request at a time; `new` and `token` paced at "
            f"{results['sizes']['paced_rate']:g}/s",
        ),
    ):
        lines += [
            f"**{title}**",
            "",
            "| scenario | req/s | p50 ms | p99 ms | p99.9 ms | errors "
            "| CPU us/req: ext_authz server(s) | signers | Envoy | Redis |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, r in results[kind].items():
            cpu = r["cpu_us_per_request"]

            def total(prefix: str, cpu: Mapping[str, float] = cpu) -> str:
                return f"{sum(v for k, v in cpu.items() if k.startswith(prefix)):,.0f}"

            envoy = f"envoy-{name}" if f"envoy-{name}" in cpu else "envoy"
            server = "noop" if name.startswith("noop") else "gateway"
            p = r["percentiles_us"]
            lines.append(
                f"| {name} | {r['rps']:,.0f} | {p['50'] / 1000:.2f} | {p['99'] / 1000:.2f} | "
                f"{p['99.9'] / 1000:.2f} | {r['errors']} | {total(server)} "
                f"| {total('signer')} | {cpu.get(envoy, 0):,.0f} | {cpu.get('redis', 0):,.0f} |"
            )
        lines.append("")
    last = results["latency"].get("token") or next(iter(results["latency"].values()))
    rss = ", ".join(
        f"{name} {mb:.0f} MB"
        for name, mb in sorted(last["rss_mb"].items())
        if not name.startswith("envoy-")
    )
    idle = results.get("idle_cores", {})
    busy = ", ".join(f"{n} {v:.3f}" for n, v in sorted(idle.items()) if v >= 0.001)
    lines += [
        f"Resident memory at the end of the run: {rss}.",
        "",
        "CPU per request is each process's CPU time over the run (from /proc) less what it spends "
        f"with no request at all, measured before the runs (in cores: {busy or 'none'}), divided "
        "by the requests.",
        "",
    ]
    return lines


def scale_tables(results: Mapping[str, Any]) -> list[str]:
    lines = [
        "| cached credentials | cached Check, in process (us) |",
        "| --- | --- |",
    ]
    for size, us in results["identities"]["check_us"].items():
        lines.append(f"| {int(size):,} | {us:.2f} |")
    lines += [
        "",
        f"RSS per cached credential: {results['identities']['rss_per_token_bytes']:,.0f} bytes "
        "(resident growth over the largest fill, divided by its entries).",
        "",
        "| bindings | GitHub identity decision (us) | SPIFFE identity decision (us) |",
        "| --- | --- | --- |",
    ]
    github, spiffe = results["bindings"]["github"], results["bindings"]["spiffe"]
    for count in github:
        lines.append(f"| {int(count):,} | {github[count]:.2f} | {spiffe[count]:.2f} |")
    lines += [
        "",
        "| signers | threshold signature p50 (ms) | p99 (ms) | samples |",
        "| --- | --- | --- | --- |",
    ]
    for name, figures in results["signers"].items():
        lines.append(
            f"| {name} | {figures['p50_ms']:.2f} | {figures['p99_ms']:.2f} | {figures['samples']} |"
        )
    lines.append("")
    return lines


def json_block(run: Run | None) -> list[str]:
    if run is None:
        return ["not run", ""]
    return [f"Run started {run.started}:", "", "```json", json.dumps(dict(run.figures)), "```", ""]


def render(directory: Path) -> str:
    names = (
        "bench-frost",
        "bench-sign",
        "bench-check",
        "bench-e2e",
        "bench-scale",
        "bench-cached-ab",
        "profile-check",
    )
    runs = {name: read_log(directory, name) for name in names}
    e2e = read_json(directory, "bench-e2e")
    scale = read_json(directory, "bench-scale")
    if runs["bench-e2e"] is None and e2e is not None:
        runs["bench-e2e"] = Run("bench-e2e", e2e.get("started_utc", "?"), e2e["summary"])
    if runs["bench-scale"] is None and scale is not None:
        runs["bench-scale"] = Run("bench-scale", scale.get("started_utc", "?"), scale["summary"])
    out: list[str] = [
        "# Performance",
        "",
        "<!-- Generated by `make bench-report` (benchmarks/report.py) from docs/performance/; "
        "edit docs/performance/analysis.md or the generator, not this file. -->",
        "",
        "What keymint costs, measured on the machine the project runs on: 2 cores, shared with "
        "other work, everything on loopback. Each figure below names the command that produced it "
        "and when that run started (UTC): the machine is shared, so absolute figures move from run "
        "to run; the ratios against a baseline measured in the same run are what to compare. The "
        "profiles of the new-credential (mint) path are in "
        "[performance-mint.md](performance-mint.md).",
        "",
        "## Targets",
        "",
        *targets_table(runs),
        "",
        "## The whole path through Envoy (`make bench-e2e`)",
        "",
    ]
    if e2e is None:
        out += ["not run", ""]
    else:
        out += [
            f"Run started {e2e.get('started_utc', '?')} on {e2e.get('cpu_count')} cores. "
            "keymint: the front Envoy, 2 gateway replicas, 3 signers (2-of-3), redis-server. "
            "`noop`: the same Envoy configuration with a do-nothing grpc.aio ext_authz server "
            "(2 processes, mTLS) in keymint's place; `plain`: no ext_authz; `jwt`: Envoy's "
            "jwt_authn verifying a keymint token instead. wrk drives each over TLS (HTTP/1.1, "
            "kept-alive connections).",
            "",
            *e2e_tables(e2e),
            "![Latency through Envoy, by scenario](performance/bench-e2e-latency.png)",
            "",
            "Headline figures (the last line of `make bench-e2e`):",
            "",
            "```json",
            json.dumps(e2e["summary"]),
            "```",
            "",
        ]
    out += ["## How cost grows (`make bench-scale`)", ""]
    if scale is None:
        out += ["not run", ""]
    else:
        out += [
            f"Run started {scale.get('started_utc', '?')}.",
            "",
            *scale_tables(scale),
            "![Cost as keymint grows](performance/bench-scale.png)",
            "",
            "```json",
            json.dumps(scale["summary"]),
            "```",
            "",
        ]
    out += ["## The other benchmarks", ""]
    for name, what in (
        ("bench-check", "`make bench-check`: Envoy's Check straight to the gateway over gRPC"),
        ("bench-sign", "`make bench-sign`: threshold signatures through 3 signer processes"),
        ("bench-frost", "`make bench-frost`: the FROST core in one process"),
        (
            "bench-cached-ab",
            "`python benchmarks/bench_cached_ab.py`: the cached Check of this tree against the "
            "commit before issue 11 and do-nothing servers, in alternation",
        ),
        (
            "profile-check",
            "`python benchmarks/profile_check.py`: one Check inside the gateway, path by path, "
            "without gRPC (microseconds)",
        ),
    ):
        out += [f"{what}.", "", *json_block(runs[name])]
    analysis = directory / "analysis.md"
    if analysis.exists():
        out += [analysis.read_text().rstrip(), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--results", type=Path, default=DOCS / "performance")
    parser.add_argument("--out", type=Path, default=DOCS / "performance.md")
    args = parser.parse_args(argv)
    text = render(args.results)
    args.out.write_text(text + "\n")
    print(f"wrote {args.out} ({len(text.splitlines())} lines)", file=sys.stderr)


if __name__ == "__main__":
    main()
