"""`extauthz policy test`: policies tested like code, as `opa test` tests them.

    extauthz policy test [--query Q] [--allowed-scopes S] [--credential-headers H] [FILE...]

Runs every `test_` rule of the Rego files (policies and `*_test.rego` files compiled together;
`print` allowed here), then every example of the JSON policy (`extauthz.policy.examples`)
through the gateway's own engine, with the Rego policy (the one `.rego` file not named
`*_test.rego`) deciding too when there is one. A JSON file with only `examples` (no roles,
audiences or bindings) tests the Rego policy alone, as KEYMINT_REGO_ALONE runs it. With no
FILE, the gateway's settings name them: POLICY_FILE and REGO_FILE. KEYMINT_REGO_QUERY,
ALLOWED_SCOPES, TOKEN_DEFAULT_TTL_SECONDS and KEYMINT_POLICY_CREDENTIAL_HEADERS apply as in the
gateway unless a flag says otherwise (without ALLOWED_SCOPES, every scope the JSON policy's
roles name is allowed).

Exit codes: 0 every test passed; 1 a test failed, or there was none; 2 a file does not load.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path

from extauthz.errors import ExtAuthzError
from extauthz.policy import Limits, PolicyEngine, PolicyHeaders, RegoPolicy, parse_policy
from extauthz.policy.examples import parse_examples, run_examples
from extauthz.policy.rego import DEFAULT_QUERY, normalize_query, run_tests

RULE = "-" * 80


class PolicyTestError(ExtAuthzError):
    """The files given cannot be tested (none, too many policies, unreadable)."""


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = subparsers.add_parser("policy", help="policy tools")
    commands = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    summary = "run a Rego policy's test_ rules and a JSON policy's examples"
    test = commands.add_parser("test", help=summary, description=summary)
    test.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="a JSON policy, a Rego policy and *_test.rego files (default: POLICY_FILE, REGO_FILE)",
    )
    test.add_argument("--query", help="the Rego decision (default: KEYMINT_REGO_QUERY)")
    test.add_argument(
        "--allowed-scopes", help="ALLOWED_SCOPES for the examples (default: the setting)"
    )
    test.add_argument(
        "--credential-headers",
        help="credential headers Rego reads (default: KEYMINT_POLICY_CREDENTIAL_HEADERS)",
    )
    test.add_argument("-v", "--verbose", action="store_true", help="list passing tests too")
    test.set_defaults(handler=run)


def run(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> int:
    files: list[Path] = list(args.files) or [
        Path(env[name]) for name in ("POLICY_FILE", "REGO_FILE") if env.get(name, "").strip()
    ]
    if not files:
        raise PolicyTestError("no files: name them, or set POLICY_FILE and REGO_FILE")
    policies = [f for f in files if f.suffix == ".json"]
    modules = [f for f in files if f.suffix == ".rego"]
    other = [f for f in files if f.suffix not in (".json", ".rego")]
    decisions = [f for f in modules if not f.name.endswith("_test.rego")]
    if other or len(policies) > 1 or len(decisions) > 1:
        raise PolicyTestError(
            "give at most one JSON policy, one Rego policy and any *_test.rego files "
            f"(got: {', '.join(map(str, files))})"
        )
    texts = [(str(path), _read(path)) for path in modules]
    outcomes: list[tuple[str, bool, str]] = []
    for result in run_tests(texts):
        outcomes.append((result.name, result.outcome == "pass", result.detail))
    if policies:
        outcomes.extend(_examples(args, env, policies[0], decisions[0] if decisions else None))
    return _report(outcomes, verbose=args.verbose)


def _examples(
    args: argparse.Namespace, env: Mapping[str, str], path: Path, rego_path: Path | None
) -> list[tuple[str, bool, str]]:
    content = _read(path)
    document = json.loads(content)
    examples = parse_examples(document, str(path))
    policy = parse_policy(content, str(path))
    alone = isinstance(document, dict) and not set(document) & {"roles", "audiences", "bindings"}
    rego = None
    if rego_path is not None:
        raw_query = args.query or env.get("KEYMINT_REGO_QUERY", "").strip() or DEFAULT_QUERY
        try:
            query = normalize_query(raw_query)
        except ValueError as exc:
            raise PolicyTestError(f"--query: {exc}") from None
        rego = RegoPolicy.compile(_read(rego_path), str(rego_path), query=query)
    scopes_setting = args.allowed_scopes or env.get("ALLOWED_SCOPES", "")
    allowed = frozenset(scopes_setting.replace(",", " ").split()) or frozenset(
        scope for role in policy.roles.values() for scope in role.scopes
    )
    ttl = int(env.get("TOKEN_DEFAULT_TTL_SECONDS", "").strip() or 900)
    credentials = args.credential_headers or env.get("KEYMINT_POLICY_CREDENTIAL_HEADERS", "")
    try:
        headers = PolicyHeaders.default(credentials.replace(",", " ").split())
    except ValueError as exc:
        raise PolicyTestError(f"--credential-headers: {exc}") from None
    engine = PolicyEngine(
        limits=Limits(allowed, ttl),
        policy=None if alone and rego is not None else policy,
        rego=rego,
        headers=headers,
    )
    return [
        (f"{path}: example {r.name!r}", r.passed, r.detail) for r in run_examples(engine, examples)
    ]


def _report(outcomes: list[tuple[str, bool, str]], *, verbose: bool) -> int:
    if not outcomes:
        print("no test_ rules and no examples found")
        return 1
    failed = [o for o in outcomes if not o[1]]
    for name, passed, detail in outcomes:
        if verbose or not passed:
            print(f"{name}: {'PASS' if passed else 'FAIL'}{f' ({detail})' if detail else ''}")
    print(RULE)
    print(f"PASS: {len(outcomes) - len(failed)}/{len(outcomes)}")
    if failed:
        print(f"FAIL: {len(failed)}/{len(outcomes)}")
        return 1
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyTestError(f"{path}: cannot read: {exc}") from None
