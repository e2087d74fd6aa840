"""`make test-faults`: the faults of tests/faults/scenarios.py, one after another, under steady
traffic through Envoy, on one stack; after each, the audit logs reconciled by `extauthz audit
reconcile` (tests/faults/reconcile.py); at the end, every process stopped as an operator would,
its log checked, and the audit logs reconciled again with nothing in flight.

    python -m tests.faults.run [--quick] [--only NAME ...] [--keep DIR]

Prints readable lines per scenario and ends with one JSON line of figures. Exits 1 if any
expected outcome did not hold, 2 if the run could not be made (e.g. the audit-disk faults need
root to mount a tmpfs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.faults.disk import can_mount
from tests.faults.reconcile import IN_FLIGHT_SECONDS, Audit, Window, reconcile
from tests.faults.scenarios import QUICK, SCENARIOS, Measured, Run, Scenario, by_name
from tests.faults.stack import FaultStack, Stopped, fault_stack
from tests.faults.traffic import KINDS, Traffic, failures_by_status, latency_ms

SETTLE_SECONDS = 2.0  # between scenarios, so one's tail is not the next one's baseline


def reconciled(stack: FaultStack, traffic: Traffic, *, traffic_running: bool) -> Audit:
    return reconcile(
        [stack.gateway_audit(i) for i in range(1, len(stack.gateways) + 1)],
        {i: stack.signer_audit(i) for i in sorted(stack.cluster.signers)},
        [o.token for o in list(traffic.outcomes) if o.token is not None],
        traffic_running=traffic_running,
    )


def audit_line(audit: Audit, explained: list[Window]) -> str:
    summary = audit.summary(explained=explained)
    gaps = summary["gaps"]
    assert isinstance(gaps, dict)
    notes = summary["notes"]
    assert isinstance(notes, dict)
    shown = ", ".join(f"{kind} {n}" for kind, n in gaps.items()) or "none"
    noted = ", ".join(f"{kind} {n}" for kind, n in notes.items()) or "none"
    return (
        f"   audit (extauthz audit reconcile): {summary['chains_ok']}/{summary['chains']} chains "
        f"verify; {summary['mints']} mints, {summary['signatures']} signatures; "
        f"{summary['tokens_released']} tokens released, {summary['released_unrecorded']} "
        f"unrecorded; gaps: {shown} (of those signed without a mint: "
        f"{summary['unrecorded_explained']} while a fault kept a gateway from recording, "
        f"{summary['unrecorded_in_flight']} maybe in flight); notes: {noted}"
    )


def run_scenario(
    stack: FaultStack, traffic: Traffic, scenario: Scenario, explained: list[Window]
) -> tuple[Measured, list[str]]:
    """Act, measure, check; `explained` gathers the windows of faults in which a gateway could
    not record what its signers signed (it released none of it: checked)."""

    def say(line: str) -> None:
        print(line, flush=True)

    say(f"== {scenario.name}: {scenario.fault}")
    say(f"   expected: {scenario.expected}")
    run = Run(stack, traffic)
    start = run.mark("start")
    scenario.act(run)
    end = run.mark("end")
    measured = Measured(scenario, run.marks, run.notes, traffic.since(start, end))
    kinds = ", ".join(f"{k} {sum(1 for o in measured.outcomes if o.kind == k)}" for k in KINDS)
    failed = failures_by_status(measured.outcomes)
    say(f"   requests: {len(measured.outcomes)} ({kinds}); failed: {failed or 'none'}")
    degraded = latency_ms(measured.degraded)
    say(
        f"   while degraded ({measured.marks['recover'] - measured.marks['fault']:.1f} s): "
        f"p50 {degraded['p50_ms']} ms, p99 {degraded['p99_ms']} ms, max {degraded['max_ms']} ms "
        f"(before: p99 {latency_ms(measured.between('start', 'fault'))['p99_ms']} ms)"
    )
    say(f"   recovered: last failure {measured.recover_seconds} s after ready")
    for name, value in measured.notes.items():
        say(f"   {name.replace('_', ' ')}: {value}")
    problems = scenario.holds(measured)
    if scenario.leaves_unrecorded_signatures:
        # From the first share of a mint in flight when the fault struck to the fault undone.
        explained.append((run.marks["fault"] - IN_FLIGHT_SECONDS, run.marks["recovered"]))
    audit = reconciled(stack, traffic, traffic_running=True)
    say(audit_line(audit, explained))
    problems += audit.problems(explained=explained)
    say("   HOLDS" if not problems else "   DID NOT HOLD: " + "; ".join(problems))
    return measured, problems


def stopped_lines(stopped: list[Stopped]) -> list[str]:
    return [
        f"   {s.name}: exit {s.returncode}"
        + ("" if s.clean else f"; {'; '.join(s.problems)[:300]}")
        for s in stopped
    ]


def run(names: Sequence[str], directory: Path) -> tuple[dict[str, object], bool]:
    scenarios = by_name(names)
    mounts = ("gateway-1", "signer-3") if any(s.needs_root for s in scenarios) else ()
    figures: dict[str, object] = {}
    held = True
    explained: list[Window] = []
    with fault_stack(directory, mount_audit=mounts) as stack:
        traffic = Traffic(stack)
        traffic.warm()
        traffic.start()
        try:
            time.sleep(SETTLE_SECONDS)
            for scenario in scenarios:
                measured, problems = run_scenario(stack, traffic, scenario, explained)
                figures[scenario.name] = {**measured.figures(), "held": not problems}
                held = held and not problems
                time.sleep(SETTLE_SECONDS)
        finally:
            traffic.stop()
        total = traffic.outcomes
        stopped = stack.stop_cleanly()
        audit = reconciled(stack, traffic, traffic_running=False)
        summary, problems = audit.summary(explained=explained), audit.problems(explained=explained)
    print("== end: every process stopped with SIGTERM", flush=True)
    for line in stopped_lines(stopped):
        print(line, flush=True)
    print(audit_line(audit, explained), flush=True)
    print(
        "   audit HOLDS" if not problems else "   audit DID NOT HOLD: " + "; ".join(problems),
        flush=True,
    )
    clean = all(s.clean for s in stopped)
    held = held and clean and not problems
    result = {
        "faults": figures,
        "requests": len(total),
        "failed": failures_by_status(total),
        "audit": summary,
        "stopped_cleanly": {s.name: s.clean for s in stopped},
        "held": held,
    }
    return result, held


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these scenarios, in order")
    parser.add_argument("--keep", type=Path, help="run in DIR and keep the logs there")
    args = parser.parse_args(argv)
    names = args.only or (list(QUICK) if args.quick else [s.name for s in SCENARIOS])
    unknown = set(names) - {s.name for s in SCENARIOS}
    if unknown:
        parser.error(f"no such scenario: {', '.join(sorted(unknown))}")
    if any(s.needs_root for s in by_name(names)) and not can_mount():
        root_only = [s.name for s in by_name(names) if s.needs_root]
        print(
            f"tests.faults: {', '.join(root_only)} fill or remount a tmpfs: run as root, or pass "
            "--only with the others",
            file=sys.stderr,
        )
        return 2
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result, held = run(names, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="keymint-faults-") as directory:
            result, held = run(names, Path(directory))
    print(json.dumps(result, sort_keys=True))
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
