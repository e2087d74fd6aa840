"""`signer`: run a signer sidecar, make development certificates, run and approve key ceremonies."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from signer.errors import SignerError
from signer.observability import configure_logging


def _serve(args: argparse.Namespace) -> int:
    from signer import runtime, tracing
    from signer.config_check import load
    from signer.observability import configure_logging
    from signer.server import serve

    settings, env = load(os.environ, config_file=args.config)
    configure_logging(settings.observability, verbose=args.verbose)
    settings.observability.start_tracing(f"keymint-signer-{settings.identifier}")

    def announce(port: int) -> None:
        # A machine-readable line for supervisors and tests that start signers on port 0.
        print(f"keymint-signer ready id={settings.identifier} port={port}", flush=True)

    try:
        runtime.run(serve(settings, env, started=announce))
    finally:
        tracing.shutdown()
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from signer.config_check import load, summary

    settings, _ = load(os.environ, config_file=args.config)
    print(summary(settings))
    return 0


def _certs(args: argparse.Namespace) -> int:
    from signer.devca import make_dev_pki

    ids = [int(x) for x in args.signers.split(",") if x.strip()]
    files = make_dev_pki(Path(args.out), ids)
    for name, f in files.items():
        print(f"{name}: {f.cert} (key {f.key})")
    print(f"CA bundle: {Path(args.out) / 'ca.pem'}  (development only)")
    return 0


def _approve_replace(args: argparse.Namespace) -> int:
    import datetime

    from signer.ceremony.approvals import ReplaceApprovals

    if not args.state_dir:
        raise SignerError("--state-dir (or KEYMINT_SIGNER_STATE_DIR) is required")
    approvals = ReplaceApprovals(Path(args.state_dir))
    valid_for = datetime.timedelta(seconds=args.valid_for)
    for kid in args.kids:
        path, approval = approvals.approve(kid, valid_for=valid_for)
        until = approval.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"approved: a ceremony may replace key {kid} on this signer until {until} ({path})")
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from signer.audit import verify_log

    result = verify_log(Path(args.path))
    print(result)
    return 0 if result.ok else 1


def build_parser(prog: str = "signer") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a signer sidecar (configured by environment)")
    serve.add_argument(
        "--config",
        type=Path,
        help="a TOML or YAML file of settings (or KEYMINT_CONFIG_FILE); the environment "
        "overrides it",
    )
    serve.set_defaults(handler=_serve)

    check = sub.add_parser(
        "check-config",
        help="check this signer's configuration whole, without starting (exit 2 on a problem)",
        description="Read the environment and the config file as `serve` would, and the files "
        "they name; print every problem, one line each, and exit 2; or a summary and exit 0. "
        "Unseals nothing and opens no device.",
    )
    check.add_argument("--config", type=Path, help="a TOML or YAML file (or KEYMINT_CONFIG_FILE)")
    check.set_defaults(handler=_check_config)

    certs = sub.add_parser("certs", help="make a development CA and mTLS certificates")
    certs.add_argument("--out", required=True, help="directory for ca.pem and the certificates")
    certs.add_argument("--signers", default="1,2,3", help="signer identifiers, comma-separated")
    certs.set_defaults(handler=_certs)

    from signer.ceremony.approvals import DEFAULT_VALIDITY, MAX_VALIDITY

    approve = sub.add_parser(
        "approve-replace",
        help="on a signer's host: let one ceremony with --replace-existing-key destroy a key here",
        description="Write a local approval (no network) that lets the next ceremony with "
        "--replace-existing-key drop key KID on this signer. Each affected signer's host needs "
        "its own; the signer deletes it once the new key is installed.",
    )
    approve.add_argument(
        "--state-dir",
        default=os.environ.get("KEYMINT_SIGNER_STATE_DIR"),
        help="the signer's state directory (default: $KEYMINT_SIGNER_STATE_DIR)",
    )
    approve.add_argument(
        "--kid",
        dest="kids",
        action="append",
        required=True,
        help="the key id the ceremony may destroy (as in the JWKS); repeat for several",
    )
    approve.add_argument(
        "--valid-for",
        type=int,
        default=int(DEFAULT_VALIDITY.total_seconds()),
        metavar="SECONDS",
        help="how long the approval stays usable (default: %(default)s, "
        f"at most {int(MAX_VALIDITY.total_seconds())})",
    )
    approve.set_defaults(handler=_approve_replace)

    audit = sub.add_parser("audit-verify", help="check a signer audit log's hash chain")
    audit.add_argument("path")
    audit.set_defaults(handler=_audit_verify)

    from signer.ceremony.cli import add_commands

    add_commands(sub)

    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "signer") -> int:
    """`prog` names the command in usage and error lines (`keymint` passes its own)."""
    args = build_parser(prog).parse_args(argv)
    configure_logging(verbose=args.verbose)
    try:
        code: int = args.handler(args)
    except SignerError as exc:
        problems = getattr(exc, "problems", ())
        if len(problems) > 1:
            print(
                f"{prog} {args.command}: the configuration has {len(problems)} problems:",
                file=sys.stderr,
            )
            for problem in problems:
                print(f"  {problem.line()}", file=sys.stderr)
        elif problems:
            print(f"{prog} {args.command}: {problems[0].line()}", file=sys.stderr)
        else:
            print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
