"""A signer's configuration, checked whole before it starts; `signer check-config`.

The signer's own settings (`SIGNER_SETTINGS`), its vault's, and the evidence checker's (the
gateway's identity and policy settings, which the checker module declares as `SETTINGS` and
checks with its `check_config(env)`), from the environment over the config file (`--config`, or
KEYMINT_CONFIG_FILE); then the files they name: the signer's mTLS certificate, key and CA, its
revocation list, the checker's policy and trust files. Every problem is kept, one line each.
Nothing is unsealed and no device is opened: the vault's secret must be set, and the share is
read when the signer starts.

    signer check-config [--config FILE]    # exit 0 and a summary, or exit 2 and the problems
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType

from signer.redisconn import RedisSettingsError
from signer.revocations import RevocationFile, RevocationFileError
from signer.server import SIGNER_SETTINGS, SignerSettings, SignerSettingsError
from signer.settings import (
    CONFIG_FILE_VARIABLE,
    Problem,
    Problems,
    Setting,
    effective_env,
    read_config_file,
    schema_of,
)
from signer.vault.base import VaultConfigError
from signer.vault.config import (
    PASSPHRASE_ENV,
    PKCS11_PIN_ENV,
    YUBIKEY_PIN_ENV,
    Pkcs11Config,
    SealedFileConfig,
    YubiKeyConfig,
    parse_vault_config,
)


def load(
    env: Mapping[str, str], *, config_file: Path | None = None
) -> tuple[SignerSettings, dict[str, str]]:
    """The settings `signer serve` runs with and the environment they came from (the file's
    values under the environment's); SignerSettingsError with every problem."""
    checker_module, checker_problem = _checker_module(env, config_file)
    declared: Sequence[Setting] = getattr(checker_module, "SETTINGS", ())
    schema = schema_of(_merged(SIGNER_SETTINGS, declared))
    merged, file_problems = effective_env(env, schema, config_file=config_file)
    p = Problems(schema, (SignerSettingsError, RedisSettingsError, VaultConfigError))
    p.extend(file_problems)
    if checker_problem is not None:
        p.extend([checker_problem])
    settings = p.attempt(lambda: SignerSettings.from_env(merged), None)
    vault = p.attempt(lambda: parse_vault_config(merged), None)
    secret = _vault_secret(vault)
    if secret is not None and not merged.get(secret, ""):
        p.add(secret, "is not set (the vault needs this secret to unseal the share)")
    check: Callable[[Mapping[str, str]], Sequence[Problem]] | None = getattr(
        checker_module, "check_config", None
    )
    if check is not None:
        # FROST_T is read by both (the signer's minimum threshold, the gateway's t): a value
        # the signer already refused is named once, in the signer's words.
        named = {problem.setting for problem in p}
        p.extend(q for q in check(merged) if not (q.setting == "FROST_T" and q.setting in named))
    if settings is not None:
        _file_problems(p, settings)
    if p:
        raise SignerSettingsError.of(p.all)
    assert settings is not None
    return settings, merged


def _merged(own: Sequence[Setting], checker: Sequence[Setting]) -> list[Setting]:
    names = {setting.name for setting in own}
    return [*own, *(setting for setting in checker if setting.name not in names)]


def _checker_module(
    env: Mapping[str, str], config_file: Path | None
) -> tuple[ModuleType | None, Problem | None]:
    """The evidence checker's module, named in the environment or else in the config file."""
    spec = env.get("KEYMINT_EVIDENCE_CHECKER", "").strip()
    if not spec:
        named = env.get(CONFIG_FILE_VARIABLE, "").strip()
        path = config_file or (Path(named) if named else None)
        if path is not None:
            raw, _ = read_config_file(path)
            spec = str(raw.get("KEYMINT_EVIDENCE_CHECKER", "")).strip()
    if not spec:
        return None, None  # SignerSettings.from_env says it is required
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        return None, None  # load_evidence_checker says what is wrong when the signer starts
    try:
        return importlib.import_module(module_name), None
    except ImportError as exc:
        return None, Problem("KEYMINT_EVIDENCE_CHECKER", f"cannot load {spec!r}: {exc}")


def _vault_secret(vault: object) -> str | None:
    if isinstance(vault, SealedFileConfig):
        return PASSPHRASE_ENV
    if isinstance(vault, Pkcs11Config):
        return PKCS11_PIN_ENV
    if isinstance(vault, YubiKeyConfig):
        return YUBIKEY_PIN_ENV
    return None


def _file_problems(p: Problems, settings: SignerSettings) -> None:
    for path in (settings.tls.ca, settings.tls.cert, settings.tls.key):
        if not os.access(path, os.R_OK):
            p.add(
                "KEYMINT_TLS_DIR",
                f"{path} cannot be read: signer {settings.identifier}'s mTLS files are ca.pem, "
                f"{settings.tls.cert.name} and {settings.tls.key.name}",
            )
    if settings.revocations_file is not None:
        try:
            RevocationFile(settings.revocations_file)
        except RevocationFileError as exc:
            p.add("KEYMINT_SIGNER_REVOCATIONS_FILE", exc.problem)
    if settings.redis is not None:
        redis = settings.redis
        p.attempt(lambda: redis.client_options(), None)


def summary(settings: SignerSettings) -> str:
    return (
        f"configuration OK: signer {settings.identifier} for issuer {settings.issuer}, listening "
        f"on {settings.listen}, {len(settings.operator_ids)} operator identit(y/ies), "
        f"revocation list {settings.revocations_file or 'none'}"
    )
