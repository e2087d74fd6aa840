"""`extauthz`: run the gateway, exchange a CI job's OIDC token, self-mint a token as an engineer,
verify tokens and audit logs.

    extauthz serve [--workers N] [--config FILE]  # the environment over the file (extauthz.config)
    extauthz check-config [--config FILE]         # the same settings checked, nothing started
    extauthz exchange --audience AUD --token-url https://keymint.example/token [--export-env]
    extauthz login --idp URL --client-id ID --token-url URL --audience AUD [--scope S] [--out F]
    extauthz token-info FILE|-
    extauthz verify --trust-root FILE --endorsements URL --issuer ISS --audience AUD TOKEN|-
    extauthz pin-keys --trust-root FILE --endorsements URL --out JWKS_FILE
    extauthz audit verify PATH
    extauthz policy test [FILE...]    # a Rego policy's test_ rules, a JSON policy's examples
    extauthz audit reconcile --gateway LOG... --signer ID=LOG... [--json]
    extauthz dev --dir DIR [--signers N --threshold T] [--check]  # the local stack (development)

Exit codes: 0 done; 1 a check said no (token refused, audit chain broken, a login denied or
refused, a token expired); 2 the command could not run (bad settings or arguments, a server
refused or was unreachable), with a message on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from extauthz import check_config
from extauthz.config import SettingsError
from extauthz.dev import cli as dev_cli
from extauthz.errors import ExtAuthzError
from extauthz.tools import exchange_client, pinned_keys, policy_cli, verify_cli
from extauthz.tools.login import command as login_command
from signer.errors import SignerError
from signer.observability import configure_logging

READY_LINE = "keymint-gateway ready grpc_port={grpc_port} http_port={http_port}"


class CommandError(ExtAuthzError):
    """A command failed for a reason outside the gateway package (e.g. an unreadable file)."""


def _serve(args: argparse.Namespace) -> int:
    import dataclasses

    from extauthz.check_config import load
    from extauthz.config import workers_problem
    from extauthz.server import app  # the gateway's dependencies load only for this command
    from signer import runtime
    from signer.observability import configure_logging
    from signer.settings import CONFIG_FILE_VARIABLE

    settings, _ = load(os.environ, config_file=args.config)
    if args.config is not None:  # workers read the same file
        os.environ[CONFIG_FILE_VARIABLE] = str(args.config)
    configure_logging(settings.observability, verbose=args.verbose)
    if args.workers is not None:
        settings = dataclasses.replace(settings, workers=args.workers)
        problem = workers_problem(settings)
        if problem is not None:
            raise problem

    def announce(grpc_port: int, http_port: int) -> None:
        # One machine-readable line for supervisors and tests that start the gateway on port 0.
        print(READY_LINE.format(grpc_port=grpc_port, http_port=http_port), flush=True)

    if args.worker_index is not None:  # one of `--workers N`'s processes
        from extauthz.server.workers import worker_audit_log

        settings = dataclasses.replace(
            settings, audit_log=worker_audit_log(settings.audit_log, args.worker_index)
        )
    elif settings.workers > 1:
        from extauthz.server.workers import Supervisor

        return Supervisor(settings, verbose=args.verbose, announce=announce).run()
    runtime.run(app.serve(settings, started=announce))
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _audit_verify(args: argparse.Namespace) -> int:
    from signer.audit import AuditError, verify_log

    try:
        result = verify_log(args.path)
    except AuditError as exc:
        raise CommandError(str(exc)) from None
    print(result)
    if result.first_problem is not None:
        print(f"{args.path}: first problem at {result.first_problem}", file=sys.stderr)
        return 1
    return 0


def _audit_reconcile(args: argparse.Namespace) -> int:
    import json

    from extauthz.tools import audit_reconcile
    from signer.audit import AuditError

    try:
        signer_paths = dict(audit_reconcile.parse_signer_argument(a) for a in args.signer)
    except ValueError as exc:
        raise CommandError(f"--signer {exc}") from None
    if len(signer_paths) != len(args.signer):
        raise CommandError("--signer: a signer is named twice")
    try:
        gateways = [audit_reconcile.read_source(f"gateway {path}", path) for path in args.gateway]
        signers = {
            i: audit_reconcile.read_source(f"signer {i} {path}", path)
            for i, path in sorted(signer_paths.items())
        }
    except AuditError as exc:
        raise CommandError(str(exc)) from None
    result = audit_reconcile.reconcile(gateways, signers)
    if args.json:
        print(json.dumps(result.document(), sort_keys=True))
    else:
        print("\n".join(result.lines()))
    return 0 if result.ok else 1


def build_parser(
    prog: str = "extauthz", *, with_signer: bool = False, description: str | None = None
) -> argparse.ArgumentParser:
    """The `extauthz` commands; `with_signer` adds `signer`, the `signer` command's (`keymint`)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or (__doc__ or "").split("\n\n")[0],
        epilog="exit codes: 0 done, 1 a check said no, 2 the command could not run",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the gateway (gRPC ext_authz and HTTP), configured by the environment",
        description="Run the gateway. Prints 'keymint-gateway ready grpc_port=N http_port=M' "
        "once both listeners are up (grpc_port=0 when the Check port is a Unix socket).",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help="run N gateway processes on the same ports (SO_REUSEPORT), sharing state through "
        "Redis or the state directory (default: KEYMINT_WORKERS, else 1)",
    )
    serve.add_argument("--worker-index", type=_positive, help=argparse.SUPPRESS)
    serve.add_argument(
        "--config",
        type=Path,
        help="a TOML or YAML file of settings (or KEYMINT_CONFIG_FILE); "
        "the environment overrides it",
    )
    serve.set_defaults(handler=_serve)

    check_config.add_command(commands)
    exchange_client.add_command(commands)
    login_command.add_commands(commands)
    verify_cli.add_command(commands)
    pinned_keys.add_command(commands)
    policy_cli.add_command(commands)

    audit = commands.add_parser("audit", help="audit-log tools")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    audit_verify = audit_commands.add_parser(
        "verify", help="check an audit log's hash chain", description="check an audit log"
    )
    audit_verify.add_argument("path", type=Path, help="the audit log (JSON lines)")
    audit_verify.set_defaults(handler=_audit_verify)
    reconcile = audit_commands.add_parser(
        "reconcile",
        help="hold the gateway's audit logs against the signers' logs",
        description="Verify every chain, then check that every mint in a gateway log appears in "
        "the logs of the signers that signed it, that every signature in a signer's log appears "
        "in a gateway log, and that no signer used a nonce commitment twice. Exit 0: reconciled; "
        "1: a chain is broken or a gap was found (each is named); 2: could not run.",
    )
    reconcile.add_argument(
        "--gateway",
        action="append",
        required=True,
        metavar="LOG",
        help="a gateway replica's audit log (repeat for every replica)",
    )
    reconcile.add_argument(
        "--signer",
        action="append",
        required=True,
        metavar="ID=LOG",
        help="a signer's audit log, after its FROST identifier (repeat for every signer)",
    )
    reconcile.add_argument("--json", action="store_true", help="one JSON document on stdout")
    reconcile.set_defaults(handler=_audit_reconcile)
    dev_cli.add_command(commands)
    if with_signer:
        signer = commands.add_parser(
            "signer",
            help="run a signer sidecar, make development certificates, run and approve key "
            "ceremonies (as the `signer` command)",
            add_help=False,  # `keymint signer --help` is the signer command's help
            prefix_chars="\0",  # every argument after `signer` is the signer command's
        )
        signer.add_argument("signer_args", nargs=argparse.REMAINDER)
        signer.set_defaults(handler=lambda args: _signer(args, f"{prog} signer"))
    return parser


def _signer(args: argparse.Namespace, prog: str) -> int:
    from signer import cli as signer_cli

    return signer_cli.main([*(["-v"] if args.verbose else []), *args.signer_args], prog=prog)


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "extauthz",
    with_signer: bool = False,
    description: str | None = None,
) -> int:
    """`prog` names the command in usage and error lines (`keymint` passes its own)."""
    parser = build_parser(prog, with_signer=with_signer, description=description)
    args = parser.parse_args(argv)
    configure_logging(verbose=args.verbose)
    try:
        code: int = args.handler(args)
    except SettingsError as exc:  # every problem, one line each
        check_config.print_problems(f"{prog} {args.command}", exc)
        return 2
    except (ExtAuthzError, SignerError) as exc:  # e.g. a port that cannot be bound
        print(f"{prog} {args.command}: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
