"""The hostile corpus's case files: one YAML document per case, read and checked here.

    id: jwt-alg-none                  # the file's name, without .yaml
    summary: what the attacker tries, and why it must fail
    target: check                     # check | token | sign | ceremony: what is attacked
    input: {...}                      # what to send (tests/corpus/build.py reads it)
    expect: {status: 401, reason: alg_not_allowed}
    envoy: {status: 431, reason: null}  # optional: the outcome through the front Envoy, when
    direct: {...}                       # it differs from `expect`; likewise for the direct replay

Where each target is replayed:
- check: through the front Envoy (a request to the route's path) and directly (a CheckRequest
  built as Envoy builds it, sent to the gateway's Check port over mTLS as Envoy);
- token: through the front Envoy (`POST /token`) and directly (the gateway's HTTP edge);
- sign: directly only, to one signer's Sign RPC with the coordinator's certificate (Envoy fronts
  no signer);
- ceremony: directly only, to the signers' KeyCeremony RPCs.

An outcome is `status` (an HTTP status, or a gRPC status name for sign and ceremony), `reason`
(keymint's `error` in a denial's JSON body, the OAuth `error` of /token, the guard rule or refusal
name of a Sign; null when someone other than keymint answered, e.g. Envoy), `detail` (ceremony:
a substring of the refusal; token: of the OAuth `error_description`), `culprit` (ceremony: the
participant blamed) and `handshake: refused` when the front Envoy refuses the TLS handshake
itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CASES = Path(__file__).resolve().parent / "cases"
TARGETS = {
    "check": ("envoy", "direct"),
    "token": ("envoy", "direct"),
    "sign": ("direct",),
    "ceremony": ("direct",),
}
OUTCOME_KEYS = frozenset({"status", "reason", "detail", "culprit", "handshake"})
CASE_KEYS = frozenset({"id", "summary", "target", "input", "expect", "envoy", "direct"})


@dataclass(frozen=True)
class Outcome:
    status: int | str | None = None
    reason: str | None = None
    detail: str | None = None
    culprit: int | None = None
    handshake: str | None = None

    @classmethod
    def of(cls, document: Mapping[str, Any]) -> Outcome:
        unknown = set(document) - OUTCOME_KEYS
        if unknown:
            raise ValueError(f"unknown outcome keys {sorted(unknown)}")
        return cls(**document)


@dataclass(frozen=True)
class Case:
    id: str
    path: Path
    summary: str
    target: str
    input: Mapping[str, Any]
    outcomes: Mapping[str, Outcome]  # by replay: "envoy", "direct"

    @property
    def replays(self) -> tuple[str, ...]:
        return TARGETS[self.target]

    def expected(self, replay: str) -> Outcome:
        return self.outcomes[replay]


def load(path: Path) -> Case:
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    unknown = set(document) - CASE_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    if document.get("id") != path.stem:
        raise ValueError(f"{path}: id {document.get('id')!r} is not the file's name")
    target = document.get("target")
    if target not in TARGETS:
        raise ValueError(f"{path}: target {target!r} is not one of {sorted(TARGETS)}")
    if not isinstance(document.get("summary"), str) or not document["summary"].strip():
        raise ValueError(f"{path}: no summary")
    expect = document.get("expect")
    if not isinstance(expect, dict):
        raise ValueError(f"{path}: no expect")
    outcomes = {}
    for replay in TARGETS[target]:
        merged = {**expect, **(document.get(replay) or {})}
        outcomes[replay] = Outcome.of(merged)
    for replay in ("envoy", "direct"):
        if document.get(replay) and replay not in TARGETS[target]:
            raise ValueError(f"{path}: a {target} case is not replayed {replay}")
    return Case(
        id=path.stem,
        path=path,
        summary=document["summary"],
        target=target,
        input=document.get("input") or {},
        outcomes=outcomes,
    )


def all_cases() -> list[Case]:
    return [load(path) for path in sorted(CASES.rglob("*.yaml"))]


def replays(target: str) -> Iterator[tuple[Case, str]]:
    for case in all_cases():
        if case.target == target:
            for replay in case.replays:
                yield case, replay
