"""The gateway's configuration, checked whole before anything connects; `extauthz check-config`.

`load` reads the environment over the config file (`--config`, or KEYMINT_CONFIG_FILE), parses every
setting (`GatewaySettings.from_env`), then reads every file the settings name the way `serve` will:
the trust root, the JSON and Rego policies, the issuers file, the SPIFFE bundles, the coordinator's
mTLS files, the Check port's certificate and key, Redis's credentials and CA. Every problem found is
kept; the one SettingsError raised holds them all, one line each. Nothing here opens a connection:
signers, Redis and OIDC issuers being down is not a configuration problem (the gateway starts and
waits for them, `extauthz.server.startup`).

    extauthz check-config [--config FILE]    # exit 0: "configuration OK ..."; exit 2: the problems
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

from extauthz.config import GATEWAY_SCHEMA, CheckPortUnix, GatewaySettings, SettingsError
from extauthz.errors import ExtAuthzError
from extauthz.identity import IdentityConfigError, TrustBundle
from extauthz.policy.model import PolicyError
from extauthz.server.keyring import KeyRingError, load_trust_root
from signer.devca import tls_files
from signer.redisconn import RedisSettingsError
from signer.settings import Problem, Problems, effective_env

if TYPE_CHECKING:
    import aiohttp

# The signers' own settings: a config file shared by the gateway and the signers may hold them.
SIGNER_ONLY_SETTINGS = frozenset(
    {
        "KEYMINT_SIGNER_ID",
        "KEYMINT_SIGNER_LISTEN",
        "KEYMINT_SIGNER_STATE_DIR",
        "KEYMINT_SHARE_FILE",
        "KEYMINT_SIGNER_AUDIT_LOG",
        "TOKEN_MAX_TTL_SECONDS",
        "KEYMINT_COORDINATOR_ID",
        "KEYMINT_EVIDENCE_CHECKER",
        "KEYMINT_OPERATOR_IDS",
        "KEYMINT_DEV_ALLOW_TRUSTED_DEALER",
        "KEYMINT_SIGNER_REVOCATIONS_FILE",
        "KEYMINT_EVIDENCE_BUDGET",
        "KEYMINT_EVIDENCE_BUDGET_WINDOW_SECONDS",
        "KEYMINT_POLICY_OVERLAP_SECONDS",
        "KEYMINT_VAULT",
        "KEYMINT_VAULT_LABEL",
        "KEYMINT_VAULT_PASSPHRASE",
        "KEYMINT_PKCS11_MODULE",
        "KEYMINT_PKCS11_TOKEN_LABEL",
        "KEYMINT_PKCS11_KEY_LABEL",
        "KEYMINT_PKCS11_PIN",
        "KEYMINT_YUBIKEY_SLOT",
        "KEYMINT_YUBIKEY_SERIAL",
        "KEYMINT_YUBIKEY_PIN",
    }
)


def load(
    env: Mapping[str, str], *, config_file: Path | None = None, serving: bool = True
) -> tuple[GatewaySettings, dict[str, str]]:
    """The settings `serve` runs with and the environment they came from (the file's values
    under the environment's); SettingsError with every problem. `serving`: also what only a
    serving gateway needs (its signers, its trust root)."""
    merged, file_problems = effective_env(
        env, GATEWAY_SCHEMA, config_file=config_file, known_elsewhere=SIGNER_ONLY_SETTINGS
    )
    p = Problems(GATEWAY_SCHEMA, (SettingsError,))
    p.extend(file_problems)
    settings = p.attempt(lambda: GatewaySettings.from_env(merged), None)
    if serving:
        _required_for_serving(p, merged)
    if settings is not None:
        p.extend(file_problems_of(settings, serving=serving))
    else:
        # The files are read whole only from settings that parsed; until then, at least say
        # which of them cannot be read, so one round of fixes is enough.
        p.extend(_unreadable_files(merged))
    if p:
        raise SettingsError.of(p.all)
    assert settings is not None
    return settings, merged


def file_problems_of(settings: GatewaySettings, *, serving: bool = True) -> list[Problem]:
    """What is wrong with the files `settings` name, read as `serve` reads them."""
    p = Problems({}, (ExtAuthzError, RedisSettingsError))
    if serving:
        _serving_problems(p, settings)
    _policy_problems(p, settings)
    for domain, path in sorted(settings.spiffe_bundles.items()):
        try:
            TrustBundle.from_pem(domain, path.read_bytes())
        except OSError as exc:
            p.add("KEYMINT_SPIFFE_BUNDLES", f"{domain}: {path} cannot be read: {exc.strerror}")
        except IdentityConfigError as exc:
            p.add("KEYMINT_SPIFFE_BUNDLES", f"{domain}: {path}: {exc}")
    if not any(problem.setting == "KEYMINT_SPIFFE_BUNDLES" for problem in p):
        from extauthz.server.app import build_identifier

        # The identifier reads the issuers' local JWKS files; it only keeps the session, for
        # fetches that never happen here.
        no_session = cast("aiohttp.ClientSession", None)
        p.attempt(lambda: build_identifier(settings, no_session, lambda: 0.0), None)
    return list(p)


# Settings naming one file that `serve` reads.
FILE_SETTINGS = ("POLICY_FILE", "REGO_FILE", "KEYMINT_TRUST_ROOT", "KEYMINT_ISSUERS_FILE")


def _unreadable_files(env: Mapping[str, str]) -> list[Problem]:
    problems = []
    for name in FILE_SETTINGS:
        value = env.get(name, "").strip()
        if not value:
            continue
        try:
            with open(value, "rb"):
                pass
        except OSError as exc:
            problems.append(Problem(name, f"{value} cannot be read: {exc.strerror}"))
    return problems


def _required_for_serving(p: Problems, env: Mapping[str, str]) -> None:
    """What a serving gateway needs that a signer's evidence checker does not (checked whatever
    else is wrong, so every problem is reported at once)."""
    if not env.get("KEYMINT_SIGNERS", "").strip():
        p.add("KEYMINT_SIGNERS", "is required: the address of each of the FROST_N signers")
    if not env.get("KEYMINT_TRUST_ROOT", "").strip():
        p.add(
            "KEYMINT_TRUST_ROOT",
            "is required: the JSON document of the issuer and the first group key(s), from which "
            "every published key must be endorsed",
        )


def _serving_problems(p: Problems, settings: GatewaySettings) -> None:
    """What only the gateway process reads (a signer's evidence checker reads the rest)."""
    if settings.trust_root is not None:
        try:
            load_trust_root(settings.trust_root, settings.issuer)
        except KeyRingError as exc:
            p.add("KEYMINT_TRUST_ROOT", str(exc))
    files = tls_files(settings.tls_dir, "coordinator")
    for path in (files.ca, files.cert, files.key):
        if not os.access(path, os.R_OK):
            p.add(
                "KEYMINT_TLS_DIR",
                f"{path} cannot be read: the coordinator's mTLS files are ca.pem, coordinator.pem "
                "and coordinator-key.pem (`signer certs` makes them for development)",
            )
    if settings.check_port is not None and not isinstance(settings.check_port, CheckPortUnix):
        from extauthz.server.check_port import preflight

        port = settings.check_port
        p.attempt(lambda: preflight(port), None)
    if settings.redis is not None:
        redis = settings.redis
        p.attempt(lambda: redis.client_options(), None)
    directory = _existing_ancestor(settings.audit_log.parent)
    if not os.access(directory, os.W_OK):
        p.add("KEYMINT_AUDIT_LOG", f"{settings.audit_log}: {directory} is not writable here")


def _policy_problems(p: Problems, settings: GatewaySettings) -> None:
    from extauthz.server.app import build_policy_engine

    try:
        build_policy_engine(settings)
    except PolicyError as exc:
        source = exc.source or ""
        setting = "REGO_FILE" if source == str(settings.rego_file) else "POLICY_FILE"
        p.add(setting, str(exc))
    except ExtAuthzError as exc:  # e.g. Rego unavailable (the rego extra)
        p.add("REGO_FILE" if settings.rego_file else "POLICY_FILE", str(exc))


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def summary(settings: GatewaySettings) -> str:
    """One line saying what was checked, with no secret in it."""
    issuers = len(settings.jwt_issuers)
    return (
        f"configuration OK: issuer {settings.issuer}, {settings.frost_t} of "
        f"{len(settings.signers)} signers, {issuers} token issuer(s), "
        f"{len(settings.spiffe_bundles)} SPIFFE bundle(s), Check port {settings.grpc_listen}"
    )


def _check_config(args: argparse.Namespace) -> int:
    settings, _ = load(os.environ, config_file=args.config)
    print(summary(settings))
    return 0


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check-config",
        help="check the gateway's configuration whole, without starting (exit 2 on a problem)",
        description="Read the environment and the config file as `serve` would, and every file "
        "they name; print every problem, one line each, and exit 2; or print a summary and exit "
        "0. Connects to nothing: signers, Redis and issuers need not be up.",
    )
    check.add_argument("--config", type=Path, help="a TOML or YAML file (or KEYMINT_CONFIG_FILE)")
    check.set_defaults(handler=_check_config)


def print_problems(command: str, error: SettingsError) -> None:
    """One problem on the command's line (`command`: as typed, e.g. "extauthz serve"); several
    under a line that counts them."""
    count = len(error.problems)
    if count == 1:
        print(f"{command}: {error.problems[0].line()}", file=sys.stderr)
        return
    noun = "problem" if count == 1 else "problems"
    print(f"{command}: the configuration has {count} {noun}:", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem.line()}", file=sys.stderr)
