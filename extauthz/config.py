"""Gateway settings: read from the environment once, at start, into typed and validated values.

Every problem names the variable it came from. Names follow the design notes operators know:
TOKEN_DEFAULT_TTL_SECONDS, ALLOWED_SCOPES, POLICY_FILE, FROST_N / FROST_T.
"""

from __future__ import annotations

import math
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extauthz.errors import ExtAuthzError
from extauthz.identity import (
    GITHUB_ISSUER,
    IdentityConfigError,
    IssuerConfig,
    github_configs,
    load_issuers_file,
)
from extauthz.policy.rego import DEFAULT_QUERY, PolicyHeaders, normalize_query
from signer.observability import OBSERVABILITY_SETTINGS, ObservabilityError, ObservabilitySettings
from signer.redisconn import REDIS_SETTINGS, RedisSettings, RedisSettingsError
from signer.settings import (
    Kind,
    Problem,
    Problems,
    Setting,
    config_file_setting,
    host_port,
    listen_setting,
    render,
    schema_of,
)


class SettingsError(ExtAuthzError):
    """The configuration is refused: `problems` holds every problem found, one line each in the
    message; `variable` and `problem` are the first one's."""

    def __init__(self, variable: str, problem: str, *, example: str = "") -> None:
        self.problems: tuple[Problem, ...] = (Problem(variable, problem, example),)
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")

    @classmethod
    def of(cls, problems: Sequence[Problem]) -> SettingsError:
        first = problems[0]
        error = cls(first.setting, first.problem, example=first.example)
        error.problems = tuple(problems)
        error.args = (render(problems),)
        return error


@dataclass(frozen=True, slots=True)
class SignerAddress:
    identifier: int
    address: str


# Where Envoy asks for Checks. One of three forms, chosen by KEYMINT_GRPC_LISTEN and the settings
# beside it; whoever can open this port can ask for a token as any certificate holder whose PEM
# they have, so only the first two are for production.


@dataclass(frozen=True, slots=True)
class CheckPortTls:
    """TCP with mTLS: a client certificate chaining to `client_ca` whose SPIFFE ID is allowed."""

    address: str
    cert: Path
    key: Path
    client_ca: Path
    allowed_clients: frozenset[str]


@dataclass(frozen=True, slots=True)
class CheckPortUnix:
    """A Unix domain socket beside Envoy (one pod); the file's mode decides who may connect."""

    path: Path
    mode: int


@dataclass(frozen=True, slots=True)
class CheckPortInsecure:
    """Plaintext TCP, for development only (KEYMINT_DEV_INSECURE_CHECK_PORT=true)."""

    address: str


CheckPort = CheckPortTls | CheckPortUnix | CheckPortInsecure

DEFAULT_GRPC_LISTEN = "unix:./state/check.sock"
DEFAULT_SOCKET_MODE = 0o600
ISSUERS_FILE_VARIABLE = "KEYMINT_ISSUERS_FILE"
# The GitHub-only settings that KEYMINT_ISSUERS_FILE replaces (a github_actions issuer there).
LEGACY_OIDC_VARIABLES = (
    "KEYMINT_OIDC_ISSUERS",
    "KEYMINT_OIDC_AUDIENCES",
    "KEYMINT_OIDC_MAX_TOKEN_AGE_SECONDS",
    "KEYMINT_OIDC_MAX_LIFETIME_SECONDS",
)
CHECK_TLS_VARIABLES = (
    "KEYMINT_CHECK_TLS_CERT",
    "KEYMINT_CHECK_TLS_KEY",
    "KEYMINT_CHECK_CLIENT_CA",
    "KEYMINT_CHECK_ALLOWED_CLIENTS",
)
# sockaddr_un.sun_path holds 108 bytes on Linux, the terminating NUL included.
MAX_SOCKET_PATH_BYTES = 107


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    issuer: str
    default_ttl_seconds: int
    allowed_scopes: frozenset[str]
    policy_file: Path | None  # None only with KEYMINT_REGO_ALONE
    rego_file: Path | None
    frost_n: int
    frost_t: int
    signers: tuple[SignerAddress, ...]
    tls_dir: Path
    grpc_listen: str
    check_port: CheckPort
    http_listen: str
    oidc_issuers: tuple[str, ...]
    oidc_audiences: tuple[str, ...]
    oidc_max_token_age: int
    oidc_allow_http: bool
    spiffe_bundles: Mapping[str, Path]
    trusted_proxies: tuple[str, ...]
    redis_url: str | None
    audit_log: Path
    admin_token_sha256: str | None
    rate_per_second: float
    rate_burst: int
    sign_timeout: float
    key_publish_lead_seconds: float
    signer_attempt_timeout: float
    jwks_fetch_timeout: float
    # The pinned first key(s), signer.endorsement.TrustRoot's JSON document: `serve` refuses to
    # start without it (signer processes read these settings for their evidence checker only).
    trust_root: Path | None
    state_dir: Path  # the key ring (public JSON, re-verified from the trust root at start)
    oidc_max_lifetime: int
    policy_headers: PolicyHeaders
    # Shared state (extauthz.server.state): Redis when configured (signer.redisconn), else files
    # under state_dir. A replica serves nothing once its last sync is older than the staleness
    # bound.
    redis: RedisSettings | None = None
    state_sync_seconds: float = 0.5
    state_max_staleness_seconds: float = 5.0
    workers: int = 1  # `extauthz serve --workers N` (KEYMINT_WORKERS): processes on one port
    # The Rego decision (KEYMINT_REGO_QUERY, `envoy/authz/allow` or `data.envoy.authz.allow`),
    # whether Rego decides without a JSON policy (KEYMINT_REGO_ALONE), and whether it may read
    # what identifies one request (KEYMINT_POLICY_PER_REQUEST_INPUT: turns the hot cache off).
    rego_query: str = DEFAULT_QUERY
    rego_alone: bool = False
    policy_per_request_input: bool = False
    # Every accepted token issuer: from KEYMINT_ISSUERS_FILE, or GitHub's from the OIDC settings.
    issuers_file: Path | None = None
    jwt_issuers: tuple[IssuerConfig, ...] = ()
    # Logs (KEYMINT_LOG_FORMAT, KEYMINT_LOG_LEVEL) and tracing (KEYMINT_TRACING...).
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewaySettings:
        """Every setting read and checked; SettingsError holds every problem found, not just
        the first (`SettingsError.problems`)."""
        p = Problems(GATEWAY_SCHEMA, (SettingsError, RedisSettingsError, ObservabilityError))
        p.attempt(lambda: _refuse_trust_envoy_principal(env), None)
        n = p.attempt(lambda: _int(env, "FROST_N", 3), None)
        t = p.attempt(lambda: _int(env, "FROST_T", 2), None)
        if n is not None and t is not None and not 2 <= t <= n:
            p.add("FROST_T", f"{t} must be between 2 and FROST_N ({n})")
        signers = p.attempt(lambda: _signers(env.get("KEYMINT_SIGNERS", "")), ())
        if signers and n is not None and len(signers) != n:
            p.add("KEYMINT_SIGNERS", f"lists {len(signers)} signers, FROST_N is {n}")
        issuers_file = _path(env, ISSUERS_FILE_VARIABLE)
        if issuers_file is not None:
            _refuse_github_settings_beside(p, env, issuers_file)
        default_issuers = "" if issuers_file is not None else GITHUB_ISSUER
        issuers = tuple(_list(env.get("KEYMINT_OIDC_ISSUERS", default_issuers)))
        audiences = tuple(_list(env.get("KEYMINT_OIDC_AUDIENCES", "")))
        if issuers and not audiences:
            p.add(
                "KEYMINT_OIDC_AUDIENCES",
                "is required when OIDC issuers are configured (GitHub's default audience is "
                "never accepted)",
            )
        allow_http = p.attempt(lambda: _bool(env, "KEYMINT_OIDC_ALLOW_HTTP", False), False)
        admin = env.get("KEYMINT_ADMIN_TOKEN_SHA256", "").strip().lower() or None
        if admin is not None and (
            len(admin) != 64 or any(c not in "0123456789abcdef" for c in admin)
        ):
            p.add("KEYMINT_ADMIN_TOKEN_SHA256", "must be 64 hex characters")
        rego = env.get("REGO_FILE", "").strip()
        audit_log = Path(env.get("KEYMINT_AUDIT_LOG", "./state/gateway-audit.jsonl"))
        grpc_listen = env.get("KEYMINT_GRPC_LISTEN", "").strip() or DEFAULT_GRPC_LISTEN
        values: dict[str, Any] = {
            "issuer": p.attempt(lambda: _required(env, "KEYMINT_ISSUER"), ""),
            "default_ttl_seconds": p.attempt(
                lambda: _int(env, "TOKEN_DEFAULT_TTL_SECONDS", 900), 900
            ),
            "allowed_scopes": frozenset(_list(env.get("ALLOWED_SCOPES", ""))),
            "policy_file": p.attempt(lambda: _policy_file(env), None),
            "rego_file": Path(rego) if rego else None,
            "frost_n": n,
            "frost_t": t,
            "signers": signers,
            "tls_dir": Path(env.get("KEYMINT_TLS_DIR", "./state/pki")),
            "grpc_listen": grpc_listen,
            "check_port": p.attempt(lambda: _check_port(env, grpc_listen), None),
            "http_listen": listen_setting(p, env, "KEYMINT_HTTP_LISTEN", "127.0.0.1:8080"),
            "oidc_issuers": issuers,
            "oidc_audiences": audiences,
            "oidc_max_token_age": p.attempt(
                lambda: _int(env, "KEYMINT_OIDC_MAX_TOKEN_AGE_SECONDS", 600), 600
            ),
            "oidc_allow_http": allow_http,
            "spiffe_bundles": p.attempt(
                lambda: _bundles(env.get("KEYMINT_SPIFFE_BUNDLES", "")), {}
            ),
            "trusted_proxies": tuple(_list(env.get("KEYMINT_TRUSTED_PROXIES", ""))),
            "redis_url": env.get("KEYMINT_REDIS_URL", "").strip() or None,
            "audit_log": audit_log,
            "admin_token_sha256": admin,
            "rate_per_second": p.attempt(lambda: _float(env, "KEYMINT_RATE_PER_SECOND", 50.0), 0),
            "rate_burst": p.attempt(lambda: _int(env, "KEYMINT_RATE_BURST", 100), 0),
            "sign_timeout": p.attempt(lambda: _float(env, "KEYMINT_SIGN_TIMEOUT_SECONDS", 2.0), 0),
            "key_publish_lead_seconds": p.attempt(
                lambda: _float(env, "KEYMINT_KEY_PUBLISH_LEAD_SECONDS", 300.0), 0
            ),
            "signer_attempt_timeout": p.attempt(
                lambda: _float(env, "KEYMINT_SIGNER_ATTEMPT_TIMEOUT_SECONDS", 0.5), 0
            ),
            # Below Envoy's ext_authz timeout, so a slow issuer is keymint's answer, not Envoy's.
            "jwks_fetch_timeout": p.attempt(
                lambda: _float(env, "KEYMINT_JWKS_FETCH_TIMEOUT_SECONDS", 1.5), 0
            ),
            "trust_root": _path(env, "KEYMINT_TRUST_ROOT"),
            "state_dir": Path(env.get("KEYMINT_STATE_DIR", "").strip() or audit_log.parent),
            # GitHub's tokens live 300 s; one published sample 21600 s.
            "oidc_max_lifetime": p.attempt(
                lambda: _int(env, "KEYMINT_OIDC_MAX_LIFETIME_SECONDS", 3600), 3600
            ),
            "policy_headers": p.attempt(lambda: _policy_headers(env), None),
            "rego_query": p.attempt(lambda: _rego_query(env), DEFAULT_QUERY),
            "rego_alone": p.attempt(lambda: _bool(env, "KEYMINT_REGO_ALONE", False), False),
            "policy_per_request_input": p.attempt(
                lambda: _rego_setting(env, "KEYMINT_POLICY_PER_REQUEST_INPUT"), False
            ),
            **_state_settings(p, env),
            "issuers_file": issuers_file,
        }
        values["observability"] = p.attempt(lambda: ObservabilitySettings.from_env(env), None)
        # Without audiences GitHub's configs cannot be built; that is already reported above.
        if audiences or not issuers or issuers_file is not None:
            values["jwt_issuers"] = p.attempt(
                lambda: _jwt_issuers(env, issuers_file, issuers, audiences, allow_http), ()
            )
        if p:
            raise SettingsError.of(p.all)
        settings = cls(**values)
        problem = workers_problem(settings)
        if problem is not None:
            raise problem
        return settings


# The most a replica may serve from memory while Redis is unreachable (so the longest a
# revocation made elsewhere can go unseen); docs/operations.md "When something fails".
MAX_STALENESS_CEILING_SECONDS = 60


def _state_settings(p: Problems, env: Mapping[str, str]) -> dict[str, Any]:
    redis = p.attempt(lambda: RedisSettings.from_env(env), None)
    sync = p.attempt(lambda: _float(env, "KEYMINT_STATE_SYNC_SECONDS", 0.5), None)
    stale = p.attempt(lambda: _float(env, "KEYMINT_STATE_MAX_STALENESS_SECONDS", 5.0), None)
    if stale is not None and stale > MAX_STALENESS_CEILING_SECONDS:
        p.add(
            "KEYMINT_STATE_MAX_STALENESS_SECONDS",
            f"{stale:g} is over {MAX_STALENESS_CEILING_SECONDS} s: it is how long a replica may "
            "ignore a revocation while Redis is unreachable",
        )
    if sync is not None and stale is not None and sync >= stale:
        p.add(
            "KEYMINT_STATE_SYNC_SECONDS",
            f"{sync} must be below KEYMINT_STATE_MAX_STALENESS_SECONDS ({stale}): a replica "
            "that polls less often than the bound would refuse between polls",
        )
    elif sync is not None and sync > 1.0:
        p.add(
            "KEYMINT_STATE_SYNC_SECONDS",
            f"{sync} is over 1 s: a revocation must reach every replica within a second",
        )
    workers = p.attempt(lambda: _int(env, "KEYMINT_WORKERS", 1), 1)
    return {
        "redis": redis,
        "state_sync_seconds": sync,
        "state_max_staleness_seconds": stale,
        "workers": workers,
    }


def workers_problem(settings: GatewaySettings) -> SettingsError | None:
    """Why `settings.workers` processes cannot share this gateway's ports, if they cannot."""
    if settings.workers > 1 and isinstance(settings.check_port, CheckPortUnix):
        return SettingsError(
            "KEYMINT_WORKERS",
            f"{settings.workers} workers need a TCP Check port (SO_REUSEPORT); "
            f"KEYMINT_GRPC_LISTEN is a Unix socket ({settings.grpc_listen}): run one worker per "
            "socket, or listen on TCP with mTLS",
        )
    if settings.workers > 64:
        return SettingsError("KEYMINT_WORKERS", f"{settings.workers} is more than 64")
    return None


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(name, "is required")
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name, "").strip()
    return Path(value) if value else None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(name, f"{raw!r} is not an integer") from None
    if value <= 0:
        raise SettingsError(name, f"{value} must be positive")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, f"{raw!r} is not a number") from None
    # "inf" and "nan" parse; a bound that is infinite bounds nothing.
    if not math.isfinite(value):
        raise SettingsError(name, f"{raw!r} is not a finite number")
    if not value > 0:
        raise SettingsError(name, f"{raw} must be positive")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(name, f"{raw!r} is not a boolean (true/false)")


def _list(raw: str) -> list[str]:
    return [item for item in raw.replace(",", " ").split() if item]


def _signers(raw: str) -> tuple[SignerAddress, ...]:
    signers = []
    for item in _list(raw):
        identifier, sep, address = item.partition("=")
        if not sep or not identifier.isdigit() or ":" not in address:
            raise SettingsError("KEYMINT_SIGNERS", f"{item!r} is not ID=HOST:PORT")
        try:
            host_port(address)
        except ValueError as exc:
            raise SettingsError("KEYMINT_SIGNERS", f"signer {identifier}: {exc}") from None
        signers.append(SignerAddress(int(identifier), address))
    if len({s.identifier for s in signers}) != len(signers):
        raise SettingsError("KEYMINT_SIGNERS", "repeats a signer identifier")
    return tuple(signers)


def _bundles(raw: str) -> dict[str, Path]:
    bundles = {}
    for item in _list(raw):
        domain, sep, path = item.partition("=")
        if not sep or not domain or not path:
            raise SettingsError("KEYMINT_SPIFFE_BUNDLES", f"{item!r} is not TRUST_DOMAIN=PATH")
        bundles[domain] = Path(path)
    return bundles


def _refuse_github_settings_beside(p: Problems, env: Mapping[str, str], issuers_file: Path) -> None:
    for name in LEGACY_OIDC_VARIABLES:
        if env.get(name, "").strip():
            p.add(
                name,
                f"is replaced by {ISSUERS_FILE_VARIABLE} ({issuers_file}): configure GitHub "
                "there as a github_actions issuer, and remove this setting",
            )


def _jwt_issuers(
    env: Mapping[str, str],
    issuers_file: Path | None,
    github_issuers: tuple[str, ...],
    audiences: tuple[str, ...],
    allow_http: bool,
) -> tuple[IssuerConfig, ...]:
    """The token issuers: KEYMINT_ISSUERS_FILE's, or GitHub's from the KEYMINT_OIDC_* settings;
    never both, so there is one place that says which issuers are trusted."""
    if issuers_file is not None:
        try:
            return load_issuers_file(issuers_file, allow_http=allow_http)
        except IdentityConfigError as exc:
            raise SettingsError(ISSUERS_FILE_VARIABLE, str(exc)) from None
    if not github_issuers:
        return ()
    try:
        return github_configs(
            github_issuers,
            audiences=audiences,
            max_token_age_seconds=_int(env, "KEYMINT_OIDC_MAX_TOKEN_AGE_SECONDS", 600),
            # GitHub's tokens live 300 s; one published sample 21600 s.
            max_lifetime_seconds=_int(env, "KEYMINT_OIDC_MAX_LIFETIME_SECONDS", 3600),
        )
    except IdentityConfigError as exc:
        raise SettingsError("KEYMINT_OIDC_ISSUERS", str(exc)) from None


def _refuse_trust_envoy_principal(env: Mapping[str, str]) -> None:
    """A removed setting: refused with the reason, rather than silently ignored."""
    if _bool(env, "KEYMINT_TRUST_ENVOY_PRINCIPAL", False):
        raise SettingsError(
            "KEYMINT_TRUST_ENVOY_PRINCIPAL",
            "is no longer supported: a principal without its certificate is the gateway's word, "
            "which no signer can check, so every signer's guard would refuse the mint. Have "
            "Envoy send the certificate (ext_authz include_peer_certificate: true) and remove "
            "this setting",
        )


def _policy_file(env: Mapping[str, str]) -> Path | None:
    """POLICY_FILE; with KEYMINT_REGO_ALONE, none (and REGO_FILE decides alone)."""
    if _bool(env, "KEYMINT_REGO_ALONE", False):
        if env.get("POLICY_FILE", "").strip():
            raise SettingsError(
                "POLICY_FILE",
                "is set, but KEYMINT_REGO_ALONE=true says the Rego policy decides alone: "
                "remove one of them",
            )
        if not env.get("REGO_FILE", "").strip():
            raise SettingsError("REGO_FILE", "is required with KEYMINT_REGO_ALONE=true")
        return None
    if not env.get("POLICY_FILE", "").strip():
        raise SettingsError(
            "POLICY_FILE",
            "is required (or set KEYMINT_REGO_ALONE=true to decide with REGO_FILE alone)",
        )
    return Path(env["POLICY_FILE"].strip())


def _rego_setting(env: Mapping[str, str], name: str) -> bool:
    """A boolean that only means something to a Rego policy: refused without REGO_FILE."""
    value = _bool(env, name, False)
    if value and not env.get("REGO_FILE", "").strip():
        raise SettingsError(name, "only applies to a Rego policy, and REGO_FILE is not set")
    return value


def _rego_query(env: Mapping[str, str]) -> str:
    raw = env.get("KEYMINT_REGO_QUERY", "").strip()
    if not raw:
        return DEFAULT_QUERY
    if not env.get("REGO_FILE", "").strip():
        raise SettingsError(
            "KEYMINT_REGO_QUERY", "only applies to a Rego policy, and REGO_FILE is not set"
        )
    try:
        return normalize_query(raw)
    except ValueError as exc:
        raise SettingsError("KEYMINT_REGO_QUERY", str(exc)) from None


def _policy_headers(env: Mapping[str, str]) -> PolicyHeaders:
    """KEYMINT_POLICY_IGNORED_HEADERS (replaces the default list) and
    KEYMINT_POLICY_CREDENTIAL_HEADERS (credential headers a Rego policy may read)."""
    raw = env.get("KEYMINT_POLICY_IGNORED_HEADERS", "")
    credentials = _list(env.get("KEYMINT_POLICY_CREDENTIAL_HEADERS", ""))
    if credentials and not env.get("REGO_FILE", "").strip():
        raise SettingsError(
            "KEYMINT_POLICY_CREDENTIAL_HEADERS",
            "only applies to a Rego policy, and REGO_FILE is not set",
        )
    try:
        headers = PolicyHeaders.default() if not raw.strip() else PolicyHeaders.ignoring(_list(raw))
    except ValueError as exc:
        raise SettingsError("KEYMINT_POLICY_IGNORED_HEADERS", str(exc)) from None
    try:
        readable = frozenset(name.lower() for name in credentials)
        return PolicyHeaders(headers.ignored, headers.ignored_prefixes, readable)
    except ValueError as exc:
        raise SettingsError("KEYMINT_POLICY_CREDENTIAL_HEADERS", str(exc)) from None


def _check_port(env: Mapping[str, str], listen: str) -> CheckPort:
    """The Check port's form, from KEYMINT_GRPC_LISTEN and the settings that go with it."""
    tls_given = [name for name in CHECK_TLS_VARIABLES if env.get(name, "").strip()]
    insecure = _bool(env, "KEYMINT_DEV_INSECURE_CHECK_PORT", False)
    mode_given = bool(env.get("KEYMINT_GRPC_SOCKET_MODE", "").strip())
    if listen.startswith("unix:"):
        path = _socket_path(listen)
        if tls_given:
            raise SettingsError(
                tls_given[0],
                f"is for a TCP Check port; KEYMINT_GRPC_LISTEN is a Unix socket ({listen})",
            )
        if insecure:
            raise SettingsError(
                "KEYMINT_DEV_INSECURE_CHECK_PORT",
                f"is for a plaintext TCP Check port; KEYMINT_GRPC_LISTEN is a Unix socket "
                f"({listen})",
            )
        return CheckPortUnix(path, _socket_mode(env))
    address = _tcp_address(listen)
    if mode_given:
        raise SettingsError(
            "KEYMINT_GRPC_SOCKET_MODE",
            f"is for a Unix socket; KEYMINT_GRPC_LISTEN is a TCP address ({listen})",
        )
    if insecure:
        if tls_given:
            raise SettingsError(
                "KEYMINT_DEV_INSECURE_CHECK_PORT",
                f"turns mTLS off, but {', '.join(tls_given)} configure it: choose one",
            )
        return CheckPortInsecure(address)
    if not tls_given:
        raise SettingsError(
            "KEYMINT_GRPC_LISTEN",
            f"{listen} is a TCP address, and a Check port without mTLS lets anyone who reaches "
            f"it obtain tokens: set {', '.join(CHECK_TLS_VARIABLES)}; or listen on "
            f"unix:/path beside Envoy; or, for development only, set "
            f"KEYMINT_DEV_INSECURE_CHECK_PORT=true",
        )
    missing = [
        Problem(name, f"is required for an mTLS Check port (given: {', '.join(tls_given)})")
        for name in CHECK_TLS_VARIABLES
        if name not in tls_given
    ]
    if missing:
        raise SettingsError.of(missing)
    return CheckPortTls(
        address=address,
        cert=Path(env["KEYMINT_CHECK_TLS_CERT"].strip()),
        key=Path(env["KEYMINT_CHECK_TLS_KEY"].strip()),
        client_ca=Path(env["KEYMINT_CHECK_CLIENT_CA"].strip()),
        allowed_clients=_spiffe_ids(env["KEYMINT_CHECK_ALLOWED_CLIENTS"]),
    )


def _socket_path(listen: str) -> Path:
    # gRPC's forms: unix:relative/or/absolute/path and unix:///absolute/path.
    raw = listen.removeprefix("unix:")
    if raw.startswith("//"):
        raw = raw[2:]
        if not raw.startswith("/"):
            raise SettingsError(
                "KEYMINT_GRPC_LISTEN", f"{listen!r}: write unix:///absolute/path or unix:path"
            )
    if not raw or raw.endswith("/"):
        raise SettingsError("KEYMINT_GRPC_LISTEN", f"{listen!r} names no socket file")
    if len(raw.encode()) > MAX_SOCKET_PATH_BYTES:
        raise SettingsError(
            "KEYMINT_GRPC_LISTEN",
            f"the socket path is {len(raw.encode())} bytes; a Unix socket path holds at most "
            f"{MAX_SOCKET_PATH_BYTES}",
        )
    return Path(raw)


def _socket_mode(env: Mapping[str, str]) -> int:
    raw = env.get("KEYMINT_GRPC_SOCKET_MODE", "").strip()
    if not raw:
        return DEFAULT_SOCKET_MODE
    try:
        mode = int(raw.removeprefix("0o"), 8)
    except ValueError:
        raise SettingsError("KEYMINT_GRPC_SOCKET_MODE", f"{raw!r} is not an octal mode") from None
    if mode & ~0o660:
        raise SettingsError(
            "KEYMINT_GRPC_SOCKET_MODE",
            f"{raw} grants more than read and write to the owner and the group (at most 0660): "
            f"every local user who may open the socket may ask for tokens",
        )
    if mode & stat.S_IRWXU != stat.S_IRUSR | stat.S_IWUSR:
        raise SettingsError(
            "KEYMINT_GRPC_SOCKET_MODE", f"{raw} must give the owner read and write (0600)"
        )
    return mode


def _tcp_address(listen: str) -> str:
    host, sep, port = listen.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if not sep or not host or not port.isdigit() or (":" in host and not bracketed):
        raise SettingsError(
            "KEYMINT_GRPC_LISTEN", f"{listen!r} is neither HOST:PORT nor unix:/path/to/socket"
        )
    if int(port) > 65535:
        raise SettingsError("KEYMINT_GRPC_LISTEN", f"port {port} is above 65535")
    return listen


def _spiffe_ids(raw: str) -> frozenset[str]:
    ids = _list(raw)
    if not ids:
        raise SettingsError("KEYMINT_CHECK_ALLOWED_CLIENTS", "names no SPIFFE ID")
    for item in ids:
        domain, _, path = item.removeprefix("spiffe://").partition("/")
        if not item.startswith("spiffe://") or not domain or not path:
            raise SettingsError(
                "KEYMINT_CHECK_ALLOWED_CLIENTS",
                f"{item!r} is not a SPIFFE ID (spiffe://trust-domain/path)",
            )
    return frozenset(ids)


# Every setting of the gateway: the names `from_env` reads, their kinds (a config file's values are
# checked against them) and an example of a right value, shown beside each problem. The signers'
# evidence checker reads the same ones (extauthz.guard_checker). README.md's configuration table
# lists each (tests/test_settings_documented.py).
GATEWAY_SETTINGS: tuple[Setting, ...] = (
    Setting("KEYMINT_ISSUER", Kind.TEXT, "https://keymint.example.com"),
    Setting("POLICY_FILE", Kind.TEXT, "/etc/keymint/policy/policy.json"),
    Setting("REGO_FILE", Kind.TEXT, "/etc/keymint/policy/policy.rego"),
    Setting("KEYMINT_REGO_QUERY", Kind.TEXT, "envoy/authz/allow"),
    Setting("KEYMINT_REGO_ALONE", Kind.BOOLEAN, "true"),
    Setting("KEYMINT_POLICY_CREDENTIAL_HEADERS", Kind.LIST, "authorization"),
    Setting("KEYMINT_POLICY_PER_REQUEST_INPUT", Kind.BOOLEAN, "false"),
    Setting("KEYMINT_POLICY_IGNORED_HEADERS", Kind.LIST, "x-request-id,traceparent,x-b3-*"),
    Setting("ALLOWED_SCOPES", Kind.LIST, "deploy:read,deploy:write"),
    Setting("TOKEN_DEFAULT_TTL_SECONDS", Kind.INTEGER, "900"),
    Setting("FROST_N", Kind.INTEGER, "3"),
    Setting("FROST_T", Kind.INTEGER, "2"),
    Setting(
        "KEYMINT_SIGNERS",
        Kind.PAIRS,
        "1=keymint-signer-1:9443,2=keymint-signer-2:9443,3=keymint-signer-3:9443",
    ),
    Setting("KEYMINT_TLS_DIR", Kind.TEXT, "/etc/keymint/tls"),
    Setting(ISSUERS_FILE_VARIABLE, Kind.TEXT, "/etc/keymint/issuers/issuers.json"),
    Setting("KEYMINT_OIDC_ISSUERS", Kind.LIST, GITHUB_ISSUER),
    Setting("KEYMINT_OIDC_AUDIENCES", Kind.LIST, "https://keymint.example.com"),
    Setting("KEYMINT_OIDC_MAX_TOKEN_AGE_SECONDS", Kind.INTEGER, "600"),
    Setting("KEYMINT_OIDC_MAX_LIFETIME_SECONDS", Kind.INTEGER, "3600"),
    Setting("KEYMINT_OIDC_ALLOW_HTTP", Kind.BOOLEAN, "false"),
    Setting("KEYMINT_JWKS_FETCH_TIMEOUT_SECONDS", Kind.NUMBER, "1.5"),
    Setting(
        "KEYMINT_SPIFFE_BUNDLES", Kind.PAIRS, "prod.example.com=/etc/keymint/spiffe/bundle.pem"
    ),
    Setting("KEYMINT_TRUSTED_PROXIES", Kind.LIST, "spiffe://prod.example.com/ns/edge/sa/proxy"),
    Setting("KEYMINT_TRUST_ENVOY_PRINCIPAL", Kind.BOOLEAN, "false"),
    Setting("KEYMINT_STATE_SYNC_SECONDS", Kind.NUMBER, "0.5"),
    Setting("KEYMINT_STATE_MAX_STALENESS_SECONDS", Kind.NUMBER, "5"),
    Setting("KEYMINT_WORKERS", Kind.INTEGER, "1"),
    Setting("KEYMINT_AUDIT_LOG", Kind.TEXT, "/var/lib/keymint/gateway-audit.jsonl"),
    Setting(
        "KEYMINT_ADMIN_TOKEN_SHA256",
        Kind.TEXT,
        "1566387083da0f47b569a8a26d1252d5fb7b818f3e8620e93b62f16a0eaf63a1",
    ),
    Setting("KEYMINT_TRUST_ROOT", Kind.TEXT, "/etc/keymint/trust-root/trust-root.json"),
    Setting("KEYMINT_STATE_DIR", Kind.TEXT, "/var/lib/keymint"),
    Setting("KEYMINT_RATE_PER_SECOND", Kind.NUMBER, "50"),
    Setting("KEYMINT_RATE_BURST", Kind.INTEGER, "100"),
    Setting("KEYMINT_SIGN_TIMEOUT_SECONDS", Kind.NUMBER, "2"),
    Setting("KEYMINT_SIGNER_ATTEMPT_TIMEOUT_SECONDS", Kind.NUMBER, "0.5"),
    Setting("KEYMINT_KEY_PUBLISH_LEAD_SECONDS", Kind.NUMBER, "300"),
    Setting("KEYMINT_GRPC_LISTEN", Kind.TEXT, "unix:/var/run/keymint/check.sock"),
    Setting("KEYMINT_CHECK_TLS_CERT", Kind.TEXT, "/etc/keymint/check/tls.crt"),
    Setting("KEYMINT_CHECK_TLS_KEY", Kind.TEXT, "/etc/keymint/check/tls.key"),
    Setting("KEYMINT_CHECK_CLIENT_CA", Kind.TEXT, "/etc/keymint/check/ca.crt"),
    Setting("KEYMINT_CHECK_ALLOWED_CLIENTS", Kind.LIST, "spiffe://keymint.internal/keymint/envoy"),
    Setting("KEYMINT_GRPC_SOCKET_MODE", Kind.TEXT, "0660"),
    Setting("KEYMINT_DEV_INSECURE_CHECK_PORT", Kind.BOOLEAN, "false"),
    Setting("KEYMINT_HTTP_LISTEN", Kind.TEXT, "0.0.0.0:8080"),
    *REDIS_SETTINGS,
    *OBSERVABILITY_SETTINGS,
    config_file_setting(),
)
GATEWAY_SCHEMA = schema_of(GATEWAY_SETTINGS)
