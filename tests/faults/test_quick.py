"""The quick subset of `make test-faults`, in `make test`: under steady traffic through Envoy, a
signer killed and restarted (back in use within 1 s, then the spare), two signers down (below
quorum: new mints 503 within the deadline, seen credentials served), and a gateway replica killed
and restarted. After each, the expected outcome holds and `extauthz audit reconcile` finds no gap
beyond the unreleased signatures a fault or a mint in flight may leave (tests/faults/reconcile.py);
at the end every process stops cleanly and the logs reconcile with nothing in flight. The whole
list runs with `python -m tests.faults.run`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.faults.reconcile import Window
from tests.faults.run import reconciled, run_scenario
from tests.faults.scenarios import QUICK, by_name
from tests.faults.stack import FaultStack, fault_stack
from tests.faults.traffic import Traffic


@dataclass
class Running:
    stack: FaultStack
    traffic: Traffic
    explained: list[Window] = field(default_factory=list)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with fault_stack(tmp_path_factory.mktemp("faults")) as stack:
        traffic = Traffic(stack)
        traffic.warm()
        traffic.start()
        try:
            yield Running(stack, traffic)
        finally:
            traffic.stop()


@pytest.mark.parametrize("name", QUICK)
def test_the_expected_outcome_holds_under_traffic(running: Running, name: str) -> None:
    (scenario,) = by_name([name])
    measured, problems = run_scenario(running.stack, running.traffic, scenario, running.explained)
    assert measured.outcomes, "no traffic was measured"
    assert problems == []


def test_every_process_stops_cleanly_and_the_audit_logs_reconcile(running: Running) -> None:
    running.traffic.stop()
    stopped = running.stack.stop_cleanly()
    assert [s for s in stopped if not s.clean] == []
    audit = reconciled(running.stack, running.traffic, traffic_running=False)
    assert audit.problems(explained=running.explained) == []
    assert list(audit.chains.values()) == [True] * 5  # 2 gateways, 3 signers
    assert audit.mints >= audit.released > 0
