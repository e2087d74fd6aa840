"""PolicyVersions: the version in force is honoured, and a replaced one for the overlap only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from extauthz.model import Grant
from extauthz.policy import Limits, PolicyEngine, PolicyStore, parse_policy
from extauthz.policy.versions import PolicyVersions
from tests.extauthz.policy import policy_document, request, route, spiffe_identity

LIMITS = Limits(allowed_scopes=frozenset({"orders:read", "orders:write"}))
WEB = request(spiffe_identity("spiffe://prod.test/ns/web/sa/search"), route("orders.example.com"))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, ttl: int, mtime_seconds: int) -> None:
    document: dict[str, Any] = policy_document()
    document["roles"]["reader"]["max_ttl_seconds"] = ttl
    path.write_text(json.dumps(document))
    os.utime(path, ns=(mtime_seconds * 10**9, mtime_seconds * 10**9))


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.json"
    write(path, 600, 1)
    return path


def versions(
    path: Path, clock: Clock, overlap: float = 300.0
) -> tuple[PolicyVersions, PolicyEngine]:
    store = PolicyStore(path, load=parse_policy)
    engine = PolicyEngine(limits=LIMITS, policy=store)
    return PolicyVersions(engine, overlap_seconds=overlap, poll_seconds=2.0, clock=clock), engine


def granted_ttl(engine: PolicyEngine, versions: PolicyVersions, digest: str) -> int:
    snapshot = versions.snapshot_for(digest)
    assert snapshot is not None
    grant = engine.evaluate(WEB, snapshot)
    assert isinstance(grant, Grant), grant
    return grant.ttl_seconds


def test_the_version_in_force_is_found(policy_file: Path) -> None:
    honoured, engine = versions(policy_file, Clock())

    assert honoured.snapshot_for(engine.snapshot().digest) == honoured.current
    assert honoured.snapshot_for("0" * 64) is None
    assert honoured.snapshot_for("") is None


def test_a_version_the_gateway_read_first_is_found_at_once(policy_file: Path) -> None:
    clock = Clock()
    honoured, _ = versions(policy_file, clock)
    write(policy_file, 300, 2)
    gateway = PolicyEngine(limits=LIMITS, policy=PolicyStore(policy_file, load=parse_policy))
    new = gateway.snapshot().digest

    # No poll is due (the clock has not moved): the unknown digest makes the signer look.
    snapshot = honoured.snapshot_for(new)
    assert snapshot is not None
    assert snapshot.digest == new
    assert granted_ttl(gateway, honoured, new) == 300


def test_a_replaced_version_is_honoured_for_the_overlap_and_no_longer(policy_file: Path) -> None:
    clock = Clock()
    honoured, engine = versions(policy_file, clock, overlap=300.0)
    old = engine.snapshot().digest
    write(policy_file, 300, 2)
    clock.now = 2.0
    assert honoured.snapshot_for(old) is not None  # the poll is due: the signer moves on
    new = honoured.current.digest
    assert new != old

    assert granted_ttl(engine, honoured, old) == 600  # the gateway, still on the old one
    clock.now = 2.0 + 299.0
    assert honoured.snapshot_for(old) is not None
    clock.now = 2.0 + 300.0
    assert honoured.snapshot_for(old) is None
    assert granted_ttl(engine, honoured, new) == 300


def test_a_rejected_edit_leaves_the_version_in_force(policy_file: Path) -> None:
    clock = Clock()
    honoured, engine = versions(policy_file, clock)
    digest = engine.snapshot().digest
    policy_file.write_text("{ not json")
    clock.now = 10.0

    assert honoured.snapshot_for(digest) is not None
    assert honoured.current.digest == digest
