"""Rego policies through regopy (rego-cpp): compiled, inspected, then asked for their decision.

The decision is a query, in opa-envoy-plugin's path form (`envoy/authz/allow`) or as a data
reference (`data.envoy.authz.allow`; keymint's default is the package `data.keymint.authz`). Its
value is read through a binding (`keymint_decision := <query>`): rego-cpp reports a plain query
whose value is `false` as undefined, which would turn OPA-Envoy's `default allow := false` into a
policy fault. Undefined is a denial of its own (`RegoUndefined`), never a load failure.

A policy is refused at load, naming what is wrong, when: it does not compile (line and column);
no rule answers the query (no such package, or no such rule in it); it calls a builtin rego-cpp
does not provide (`http.send`, `net.cidr_contains`, ...), which would evaluate to undefined,
silently, where OPA would have an answer; it calls `print`, whose output goes to the gateway's
standard output with whatever input it prints (allowed for `extauthz policy test` only); or
compiling it crashes the engine (checked in a child process first, see `rego_probe`).

The input and the answer's shapes are `rego_input` and `rego_decision`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from extauthz.policy.model import PolicyError
from extauthz.policy.rego_decision import (
    PolicyResponse,
    RegoAnswer,
    RegoEvaluationError,
    RegoUndefined,
    answer_of,
)
from extauthz.policy.rego_input import (
    CREDENTIAL_HEADERS,
    CREDENTIAL_QUERY_PARAMETERS,
    DEFAULT_IGNORED_HEADERS,
    PolicyHeaders,
    build_input,
)
from extauthz.policy.rego_probe import CompileError, Inspection, ProbeFailed, probe

__all__ = [
    "CREDENTIAL_HEADERS",
    "CREDENTIAL_QUERY_PARAMETERS",
    "DEFAULT_IGNORED_HEADERS",
    "DEFAULT_QUERY",
    "PolicyHeaders",
    "PolicyResponse",
    "RegoAnswer",
    "RegoEvaluationError",
    "RegoPolicy",
    "RegoUndefined",
    "build_input",
    "normalize_query",
]

DEFAULT_QUERY = "data.keymint.authz"
BINDING = "keymint_decision"
PRINT = "internal.print"  # what rego-cpp compiles `print(...)` to
_SEGMENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DATA_FORM = re.compile(rf"data(\.{_SEGMENT})+")
_PATH_FORM = re.compile(rf"/?{_SEGMENT}(/{_SEGMENT})*")
_ERROR = re.compile(
    r"\(error \d+:(?P<file>[^|]*)\|(?P<offset>\d+)\|\d+\s*\(errormsg (?P<size>\d+):"
)
_WITH = re.compile(r"\bwith\s+input\b")
_probed: dict[str, Inspection] = {}  # by the modules' and query's digest: each is probed once
_probed_lock = threading.Lock()


def normalize_query(query: str) -> str:
    """`envoy/authz/allow` (opa-envoy-plugin's `path`) or `data.envoy.authz.allow` ->
    the `data.` form; ValueError for anything else."""
    query = query.strip()
    if _DATA_FORM.fullmatch(query):
        return query
    if _PATH_FORM.fullmatch(query):
        return "data." + query.strip("/").replace("/", ".")
    raise ValueError(
        f"{query!r} is neither a path (envoy/authz/allow) nor a data reference "
        "(data.envoy.authz.allow)"
    )


@dataclass(frozen=True, slots=True)
class TestResult:
    """One `test_` rule: passed (its value is true), failed (false or undefined) or an error."""

    name: str  # data.package.test_rule
    outcome: str  # "pass", "fail" or "error"
    detail: str = ""


class RegoPolicy:
    """One compiled Rego module and its decision query; safe to share between threads."""

    def __init__(self, *, interpreter: Any, bundle: Any, query: str, source: str) -> None:
        self._interpreter = interpreter
        self._bundle = bundle
        self._lock = threading.Lock()  # one interpreter; ctypes calls drop the GIL
        self.query = query
        self.source = source

    @classmethod
    def compile(
        cls,
        text: str,
        source: str = "policy.rego",
        *,
        query: str = DEFAULT_QUERY,
        allow_print: bool = False,
    ) -> RegoPolicy:
        """Compile a module and check that it can answer `query`; PolicyError otherwise."""
        interpreter_type, log_level = _regopy(source)
        try:
            query = normalize_query(query)
        except ValueError as exc:
            raise PolicyError(str(exc), source=source) from None
        inspection = inspect_modules([(source, text)], query, source)
        _check_decision(inspection, query, source)
        _check_calls(inspection, source, allow_print=allow_print)
        builder = interpreter_type()
        builder.log_level = log_level.NONE
        try:
            builder.add_module(source, text)
            bundle = builder.build(f"{BINDING} := {query}")
        except Exception as exc:  # the child compiled the same text: not expected
            message = _describe_compile_error(str(exc), {source: text}, source)
            raise PolicyError(message, source=source) from None
        if not bundle.ok():
            raise PolicyError("the module does not compile", source=source)
        runner = interpreter_type()
        runner.log_level = log_level.NONE
        return cls(interpreter=runner, bundle=bundle, query=query, source=source)

    @classmethod
    def load_file(cls, path: str | os.PathLike[str], *, query: str = DEFAULT_QUERY) -> RegoPolicy:
        source = os.fspath(path)
        try:
            with open(source, "rb") as handle:
                content = handle.read()
        except OSError as exc:
            raise PolicyError(f"cannot read policy: {exc.strerror}", source=source) from None
        return cls.loader(query)(content, source)

    @classmethod
    def loader(cls, query: str = DEFAULT_QUERY) -> Callable[[bytes, str], RegoPolicy]:
        """A `PolicyStore` loader for Rego files."""

        def load(content: bytes, source: str) -> RegoPolicy:
            return cls.compile(_utf8(content, source), source, query=query)

        return load

    def decide(self, document: object) -> RegoAnswer:
        """The decision for one input document; RegoUndefined when it has no value."""
        # A JSON term, not regopy's `Input`: rego-cpp keeps strings in their escaped source
        # form, so only JSON-escaped input compares equal to policy literals such as "\"",
        # and non-ASCII must stay literal UTF-8 for the same reason.
        try:
            term = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except ValueError as exc:
            raise RegoEvaluationError(f"{self.source}: the input is not JSON: {exc}") from None
        with self._lock:
            try:
                self._interpreter.set_input_term(term)
                output = self._interpreter.query_bundle(self._bundle)
                succeeded = bool(output.ok())
                results = [dict(result.bindings) for result in output.results]
            except json.JSONDecodeError as exc:
                # regopy hands back rego-cpp's error node as if it were JSON; its text is not
                # reachable through the public API.
                detail = "rego-cpp returned an error instead of a value"
                raise RegoEvaluationError(f"{self.source}: {detail}") from exc
            except Exception as exc:  # a foreign library: any fault is a failed evaluation
                raise RegoEvaluationError(f"{self.source}: evaluation failed: {exc}") from exc
        if not succeeded:
            raise RegoEvaluationError(
                f"{self.source}: evaluation failed (conflicting values, or a builtin's error)"
            )
        values = [bindings[BINDING] for bindings in results if BINDING in bindings]
        if not values:
            raise RegoUndefined(f"{self.query} is undefined for this request")
        if len(values) != 1:
            raise RegoEvaluationError(f"{self.query} gave {len(values)} values")
        return answer_of(values[0])


def run_tests(modules: Sequence[tuple[str, str]]) -> list[TestResult]:
    """Every `test_` rule of `modules` (policies and their tests, compiled together), as
    `opa test` runs them: a test passes when its value is true. PolicyError if they do not
    compile or call what the engine lacks (`print` is allowed here)."""
    if not modules:
        return []
    interpreter_type, log_level = _regopy(modules[0][0])
    try:
        inspection = inspect_modules(modules, "true", modules[0][0])
    except PolicyError as exc:
        if "crashed" in exc.message and any(_WITH.search(text) for _, text in modules):
            raise PolicyError(
                f"{exc.message}; rego-cpp cannot compile `with` beside most policies: test "
                "functions with arguments instead, or give the decision's inputs as JSON "
                "examples",
                source=exc.source,
            ) from None
        raise
    _check_calls(inspection, modules[0][0], allow_print=True)
    names = sorted(
        "data." + ".".join(path)
        for path in inspection.rules
        if path and path[-1].startswith("test_")
    )
    interpreter = interpreter_type()
    interpreter.log_level = log_level.NONE
    for name, text in modules:
        interpreter.add_module(name, text)
    interpreter.set_input_term("{}")
    results = []
    for name in names:
        try:
            output = interpreter.query(f"{BINDING} := {name}")
            if not output.ok():
                results.append(TestResult(name, "error", "evaluation failed"))
                continue
            values = [r.bindings.get(BINDING) for r in output.results if BINDING in r.bindings]
        except Exception as exc:  # a foreign library: a fault fails this test alone
            results.append(TestResult(name, "error", str(exc)))
            continue
        if values == [True]:
            results.append(TestResult(name, "pass"))
        else:
            detail = "undefined" if not values else f"value {json.dumps(values[0])}"
            results.append(TestResult(name, "fail", detail))
    return results


def inspect_modules(modules: Sequence[tuple[str, str]], query: str, source: str) -> Inspection:
    """What the modules compile to, checked in a child process; PolicyError if they do not
    compile or the engine crashes on them."""
    digest = hashlib.sha256(json.dumps([list(modules), query]).encode()).hexdigest()
    with _probed_lock:
        known = _probed.get(digest)
    if known is not None:
        return known
    try:
        found = probe(modules, f"{BINDING} := {query}")
    except ProbeFailed as exc:
        raise PolicyError(str(exc), source=source) from None
    if isinstance(found, CompileError):
        message = _describe_compile_error(found.message, dict(modules), source)
        raise PolicyError(message, source=source)
    with _probed_lock:
        _probed[digest] = found
    return found


def _check_decision(inspection: Inspection, query: str, source: str) -> None:
    """Some rule must answer the query: it or a rule inside it, or a rule that holds it."""
    wanted = tuple(query.split(".")[1:])
    for rule in inspection.rules:
        if rule[: len(wanted)] == wanted or wanted[: len(rule)] == rule:
            return
    packages = sorted({".".join(rule[:-1]) for rule in inspection.rules if len(rule) > 1})
    package = ".".join(wanted[:-1])
    if package in packages:
        in_package = sorted(r[-1] for r in inspection.rules if ".".join(r[:-1]) == package)
        raise PolicyError(
            f"package {package} has no rule {wanted[-1]} to answer {query} "
            f"(its rules: {', '.join(in_package)})",
            source=source,
        )
    declared = f"its packages: {', '.join(packages)}" if packages else "it has no rules"
    raise PolicyError(
        f"no rule answers {query} ({declared}); set KEYMINT_REGO_QUERY to the policy's decision",
        source=source,
    )


def _check_calls(inspection: Inspection, source: str, *, allow_print: bool) -> None:
    missing = sorted(inspection.unavailable)
    if missing:
        raise PolicyError(
            f"calls {', '.join(missing)}, which keymint's Rego engine (rego-cpp) does not "
            "provide: every call would be undefined, silently, where OPA has an answer",
            source=source,
        )
    if PRINT in inspection.calls and not allow_print:
        raise PolicyError(
            "calls print, whose output goes to the gateway's standard output with whatever "
            "input it prints: remove it (extauthz policy test allows it)",
            source=source,
        )


def _regopy(source: str) -> tuple[Any, Any]:
    try:
        from regopy import Interpreter, LogLevel
    except ImportError:
        raise PolicyError("Rego needs regopy: install keymint[rego]", source=source) from None
    return Interpreter, LogLevel


def _utf8(content: bytes, source: str) -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"not UTF-8 (byte {exc.start})", source=source) from None


def _describe_compile_error(raw: str, texts: Mapping[str, str], source: str) -> str:
    """rego-cpp reports `(error N:file|offset|length (errormsg N:message))`; show the line and
    column (and the file, when it is not `source`)."""
    found: list[tuple[str, int, str]] = []
    for match in _ERROR.finditer(raw):
        start = match.end()
        message = raw[start : start + int(match["size"])]
        found.append((match["file"], int(match["offset"]), message))
    if not found:
        return f"does not compile: {raw.strip()}"
    name, offset, message = found[0]  # rego-cpp lists the innermost position first
    text = texts.get(name, "")
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    where = "" if name in ("", source) else f"{name}: "
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"{where}line {line}, column {column}: {message}{more}"
