"""PolicyStore: a bad edit keeps the policy in force; a good one replaces it whole."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from extauthz.model import Grant
from extauthz.policy import (
    Denial,
    Limits,
    Policy,
    PolicyEngine,
    PolicyError,
    PolicyStore,
    RegoPolicy,
    ReloadOutcome,
    ReloadResult,
    parse_policy,
)
from tests.extauthz.policy import ORDERS, policy_document, request, route, spiffe_identity

LIMITS = Limits(allowed_scopes=frozenset({"orders:read", "orders:write"}))
WEB = request(spiffe_identity("spiffe://prod.test/ns/web/sa/search"), route("orders.example.com"))


def write(path: Path, document: dict[str, Any] | str, *, mtime_ns: int | None = None) -> None:
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    if mtime_ns is not None:  # make the change visible to polling whatever the clock resolution
        os.utime(path, ns=(mtime_ns, mtime_ns))


def with_reader_ttl(ttl: int) -> dict[str, Any]:
    document = policy_document()
    document["roles"]["reader"]["max_ttl_seconds"] = ttl
    return document


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.json"
    write(path, with_reader_ttl(600), mtime_ns=1_000_000_000)
    return path


def granted_ttl(store: PolicyStore[Policy]) -> int:
    decision = PolicyEngine(limits=LIMITS, policy=store).evaluate(WEB)
    assert isinstance(decision, Grant), decision
    return decision.ttl_seconds


def test_first_load_must_succeed(tmp_path: Path) -> None:
    bad = tmp_path / "policy.json"
    write(bad, "{")
    with pytest.raises(PolicyError, match="invalid JSON"):
        PolicyStore(bad, load=parse_policy)
    with pytest.raises(PolicyError, match="cannot read policy"):
        PolicyStore(tmp_path / "absent.json", load=parse_policy)


def test_bad_edit_keeps_the_old_policy_and_a_good_one_replaces_it(policy_file: Path) -> None:
    seen: list[ReloadResult] = []
    store = PolicyStore(policy_file, load=parse_policy, on_reload=seen.append)
    before = store.current
    assert granted_ttl(store) == 600

    broken = with_reader_ttl(600)
    broken["bindings"][0]["rolee"] = "reader"
    write(policy_file, broken)
    result = store.reload()
    assert result.outcome is ReloadOutcome.REJECTED
    assert result.error is not None
    assert "bindings[0].rolee" in result.error
    assert str(policy_file) in result.error
    assert store.current is before
    assert granted_ttl(store) == 600

    write(policy_file, with_reader_ttl(300))
    assert store.reload().outcome is ReloadOutcome.SWAPPED
    assert store.current is not before
    assert granted_ttl(store) == 300
    assert [r.outcome for r in seen] == [ReloadOutcome.REJECTED, ReloadOutcome.SWAPPED]


def test_poll_reads_only_when_mtime_or_size_moved(policy_file: Path) -> None:
    store = PolicyStore(policy_file, load=parse_policy)
    digest = store.sha256
    assert store.poll().outcome is ReloadOutcome.UNCHANGED

    # Same size, same mtime: polling does not look (reload() would).
    write(policy_file, with_reader_ttl(500), mtime_ns=1_000_000_000)
    assert store.poll().outcome is ReloadOutcome.UNCHANGED
    assert store.reload().outcome is ReloadOutcome.SWAPPED
    assert granted_ttl(store) == 500

    write(policy_file, with_reader_ttl(400), mtime_ns=2_000_000_000)
    assert store.poll().outcome is ReloadOutcome.SWAPPED
    assert granted_ttl(store) == 400
    assert store.sha256 != digest


def test_touch_without_change_is_unchanged(policy_file: Path) -> None:
    store = PolicyStore(policy_file, load=parse_policy)
    before = store.current
    os.utime(policy_file, ns=(5_000_000_000, 5_000_000_000))
    assert store.poll().outcome is ReloadOutcome.UNCHANGED
    assert store.current is before


def test_missing_file_keeps_the_policy_and_is_reported_once(
    policy_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = PolicyStore(policy_file, load=parse_policy)
    policy_file.unlink()
    with caplog.at_level(logging.ERROR, logger="extauthz.policy.reload"):
        results = [store.poll(), store.poll()]
    assert {r.outcome for r in results} == {ReloadOutcome.REJECTED}
    assert len(caplog.records) == 1
    assert granted_ttl(store) == 600


def test_watch_picks_up_an_edit(policy_file: Path) -> None:
    store = PolicyStore(policy_file, load=parse_policy)
    stop = asyncio.Event()
    intervals: list[float] = []

    async def sleep(seconds: float) -> None:
        intervals.append(seconds)
        if len(intervals) == 2:
            write(policy_file, with_reader_ttl(120), mtime_ns=3_000_000_000)
        if len(intervals) == 3:
            stop.set()

    asyncio.run(store.watch(interval_seconds=0.5, sleep=sleep, stop=stop))
    assert intervals == [0.5, 0.5, 0.5]
    assert granted_ttl(store) == 120


def test_watch_refuses_a_non_positive_interval(policy_file: Path) -> None:
    store = PolicyStore(policy_file, load=parse_policy)
    with pytest.raises(ValueError, match="positive"):
        asyncio.run(store.watch(interval_seconds=0))


def test_evaluations_during_swaps_see_one_whole_policy(policy_file: Path) -> None:
    store = PolicyStore(policy_file, load=parse_policy)
    engine = PolicyEngine(limits=LIMITS, policy=store)
    outcomes: set[int | str] = set()
    done = threading.Event()

    def evaluate() -> None:
        while not done.is_set():
            decision = engine.evaluate(WEB)
            outcomes.add(decision.ttl_seconds if isinstance(decision, Grant) else "denied")

    reader = threading.Thread(target=evaluate)
    reader.start()
    try:
        for round_ in range(20):
            write(policy_file, with_reader_ttl(100 + round_ % 2))
            store.reload()
    finally:
        done.set()
        reader.join()
    assert outcomes <= {600, 100, 101}


def test_rego_store_keeps_the_old_module_on_a_bad_edit(tmp_path: Path) -> None:
    path = tmp_path / "authz.rego"
    path.write_text('package keymint.authz\nallow := true\nscopes := ["orders:read"]\n')
    store = PolicyStore(path, load=RegoPolicy.loader())
    engine = PolicyEngine(limits=LIMITS, rego=store)
    ask = request(WEB.identity, route("h", audience=ORDERS))
    assert isinstance(engine.evaluate(ask), Grant)

    path.write_text("package keymint.authz\nallow if {{\n")
    result = store.reload()
    assert result.outcome is ReloadOutcome.REJECTED
    assert result.error is not None
    assert result.error.startswith(f"{path}: line 2")
    assert isinstance(engine.evaluate(ask), Grant)

    path.write_text("package keymint.authz\nallow := false\n")
    assert store.reload().outcome is ReloadOutcome.SWAPPED
    assert isinstance(engine.evaluate(ask), Denial)
