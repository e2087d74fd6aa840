"""Compile Rego modules in a child process and report what the compiled plan holds.

rego-cpp aborts the whole process (std::terminate) on some modules it cannot compile, so a policy
is compiled here first, in `python -m extauthz.policy.rego_probe`: a crash costs the child, and the
gateway refuses the policy instead of dying on a reload. The report names every rule (by its
path under `data`) and every builtin the modules call, with those rego-cpp does not provide:
such a call evaluates to undefined at run time, silently, so the parent refuses the policy.

The child runs this file by its path, importing nothing but regopy and the standard library:
with protobuf's upb loaded, rego-cpp's bundle writer corrupts the heap (free(): invalid size).

Protocol: one JSON object on stdin, `{"modules": [[name, text], ...], "query": "..."}`; one on
stdout, `{"error": "..."}` or `{"rules": [[...path]], "calls": [...], "unavailable": [...]}`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

PROBE_TIMEOUT_SECONDS = 60.0
_USER = "g0."  # rego-cpp's prefix for functions compiled from the modules (rules, queries)


class ProbeFailed(Exception):
    """The child could not report: it crashed, hung or wrote something else than a report."""


@dataclass(frozen=True, slots=True)
class Inspection:
    """What the compiled modules hold: rule paths under `data`, the builtins they call, and
    those of them this rego-cpp does not provide."""

    rules: frozenset[tuple[str, ...]]
    calls: frozenset[str]
    unavailable: frozenset[str]


@dataclass(frozen=True, slots=True)
class CompileError:
    """rego-cpp refused the modules; `message` is its error text."""

    message: str


def probe(modules: Sequence[tuple[str, str]], query: str) -> Inspection | CompileError:
    """Compile `modules` for `query` in a child process; ProbeFailed if it dies."""
    request = json.dumps({"modules": [list(m) for m in modules], "query": query})
    try:
        done = subprocess.run(  # noqa: S603 (this interpreter, this file: no outside input)
            [sys.executable, "-I", os.path.abspath(__file__)],
            input=request.encode(),
            capture_output=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ProbeFailed(f"compiling took over {PROBE_TIMEOUT_SECONDS:.0f}s") from None
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        last = " ".join(detail[-3:]) if detail else f"exit status {done.returncode}"
        raise ProbeFailed(f"the Rego engine crashed compiling it ({last})")
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        report = json.loads(lines[-1])  # the last line: anything printed before it is noise
    except (IndexError, json.JSONDecodeError):
        raise ProbeFailed("the compile check wrote no report") from None
    if "error" in report:
        return CompileError(str(report["error"]))
    return Inspection(
        rules=frozenset(tuple(path) for path in report["rules"]),
        calls=frozenset(report["calls"]),
        unavailable=frozenset(report["unavailable"]),
    )


def _inspect(modules: Sequence[tuple[str, str]], query: str) -> dict[str, Any]:
    from regopy import Interpreter, LogLevel

    builder = Interpreter()
    builder.log_level = LogLevel.NONE
    try:
        for name, text in modules:
            builder.add_module(name, text)
        bundle = builder.build(query)
    except Exception as exc:  # RegoError, and on some faults other types
        return {"error": str(exc)}
    if not bundle.ok():
        return {"error": "the modules do not compile"}
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "bundle")
        builder.save_bundle(path, bundle)
        with open(os.path.join(path, "plan.json"), encoding="utf-8") as handle:
            plan = json.load(handle)
    rules: list[list[str]] = []
    calls: set[str] = set()
    for function in plan.get("funcs", {}).get("funcs", []):
        path_ = function.get("path", [])
        if path_[:1] == ["g0"] and not any(part.startswith("query$") for part in path_):
            rules.append(path_[1:])
        calls.update(
            name for name in _called(function.get("blocks", [])) if not name.startswith(_USER)
        )
    return {
        "rules": rules,
        "calls": sorted(calls),
        "unavailable": sorted(name for name in calls if not builder.is_builtin(name)),
    }


def _called(value: object) -> Iterator[str]:
    """Every function a plan's statements call, at any depth."""
    if isinstance(value, dict):
        if value.get("type") == "CallStmt":
            func = value.get("stmt", {}).get("func")
            if isinstance(func, str):
                yield func
        for item in value.values():
            yield from _called(item)
    elif isinstance(value, list):
        for item in value:
            yield from _called(item)


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    modules = [(str(name), str(text)) for name, text in request["modules"]]
    report = _inspect(modules, str(request["query"]))
    sys.stdout.write("\n" + json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
