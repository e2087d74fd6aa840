"""Compile Rego modules in a child process and report what the compiled plan holds.

rego-cpp aborts the whole process (std::terminate) on some modules it cannot compile, so a policy
is compiled here first, in a worker process: a crash costs the worker (started again for the next
policy), and the gateway or signer refuses the policy instead of dying on a reload. The worker
stays up between policies, so a reload costs a compile, not a process start: signers compile a
new policy version on the request that first names it. The report names every rule (by its
path under `data`) and every builtin the modules call, with those rego-cpp does not provide:
such a call evaluates to undefined at run time, silently, so the parent refuses the policy.

The child runs this file by its path, importing nothing but regopy and the standard library:
with protobuf's upb loaded, rego-cpp's bundle writer corrupts the heap (free(): invalid size).

Protocol: one JSON line per request on stdin, `{"modules": [[name, text], ...], "query": "..."}`;
one line per answer on stdout, after REPORT: `{"error": "..."}` or
`{"rules": [[...path]], "calls": [...], "unavailable": [...]}`.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

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


REPORT = "keymint-rego-probe "  # marks the answer among anything else on stdout


def probe(modules: Sequence[tuple[str, str]], query: str) -> Inspection | CompileError:
    """Compile `modules` for `query` in the worker process; ProbeFailed if it dies."""
    report = _WORKER.ask(json.dumps({"modules": [list(m) for m in modules], "query": query}))
    if "error" in report:
        return CompileError(str(report["error"]))
    return Inspection(
        rules=frozenset(tuple(path) for path in report["rules"]),
        calls=frozenset(report["calls"]),
        unavailable=frozenset(report["unavailable"]),
    )


class _Worker:
    """One worker process, started on first use and again after it dies; one request at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._pending = b""  # read from the worker's stdout, not yet a whole line

    def ask(self, request: str) -> dict[str, Any]:
        with self._lock:
            process = self._running()
            assert process.stdin is not None
            try:
                process.stdin.write(request.encode() + b"\n")
                process.stdin.flush()
                line = self._answer(process)
            except (OSError, ProbeFailed) as exc:
                self._stop()
                raise ProbeFailed(str(exc)) from None
            if line is None:
                detail = self._crash_detail(process)
                self._stop()
                raise ProbeFailed(f"the Rego engine crashed compiling it ({detail})")
            report: dict[str, Any] = json.loads(line)
            return report

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._stop()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in _stop)
        self._process = subprocess.Popen(  # noqa: S603 (this interpreter, this file)
            [sys.executable, "-I", os.path.abspath(__file__), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,
        )
        return self._process

    def _answer(self, process: subprocess.Popen[bytes]) -> str | None:
        """The worker's next report line, or None if it died first."""
        assert process.stdout is not None
        descriptor = process.stdout.fileno()
        deadline = time.monotonic() + PROBE_TIMEOUT_SECONDS
        while True:
            while b"\n" in self._pending:
                line, self._pending = self._pending.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(REPORT):
                    return text[len(REPORT) :]
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([descriptor], [], [], max(remaining, 0))
            if not ready:
                raise ProbeFailed(f"compiling took over {PROBE_TIMEOUT_SECONDS:.0f}s")
            chunk = os.read(descriptor, 1 << 16)
            if not chunk:
                return None
            self._pending += chunk

    def _crash_detail(self, process: subprocess.Popen[bytes]) -> str:
        process.wait()
        if self._stderr is None:
            return f"exit status {process.returncode}"
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return " ".join(lines[-3:]) if lines else f"exit status {process.returncode}"

    def _stop(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            for stream in (self._process.stdin, self._process.stdout):
                if stream is not None:
                    stream.close()
        if self._stderr is not None:
            self._stderr.close()
        self._process, self._stderr, self._pending = None, None, b""


_WORKER = _Worker()


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
    if "--serve" not in sys.argv[1:]:
        raise SystemExit("extauthz.policy.rego_probe is started by the gateway (--serve)")
    for line in sys.stdin.buffer:
        request = json.loads(line)
        modules = [(str(name), str(text)) for name, text in request["modules"]]
        report = _inspect(modules, str(request["query"]))
        sys.stdout.write(
            "\n" + REPORT + json.dumps(report) + "\n"
        )  # own line, whatever came before
        sys.stdout.flush()


if __name__ == "__main__":
    main()
