"""Redis connections for the gateway replicas and the signers: one way to say where and how.

    KEYMINT_REDIS_URL               redis://HOST:PORT/DB        plaintext (a private network)
                                    rediss://HOST:PORT/DB       TLS, the server certificate checked
                                    redis+sentinel://S1:P1,S2:P2/MASTER/DB   through Sentinel
                                    rediss+sentinel://...       the same over TLS (sentinels too)
    KEYMINT_REDIS_CREDENTIALS_FILE  a file holding USERNAME:PASSWORD (an ACL user) or PASSWORD alone
                                    (the default user); never in the URL, which process listings,
                                    crash reports and logs show
    KEYMINT_REDIS_CA_FILE           CAs for rediss (default: the system's)
    KEYMINT_REDIS_CLIENT_CERT/_KEY  a client certificate, when Redis asks for one (tls-auth-clients)

Every call is bounded: `timeout_seconds` to connect and to answer, one retry on a fresh connection
(a pooled connection that Redis closed when it restarted), then the caller's error. Values are
bytes in and out; whoever stores a value chooses its encoding (JSON, never pickle).
"""

from __future__ import annotations

import os
import stat
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signer.errors import SignerError
from signer.settings import Kind, Setting

if TYPE_CHECKING:
    from redis.asyncio import Redis

SCHEMES = ("redis", "rediss", "redis+sentinel", "rediss+sentinel")
DEFAULT_TIMEOUT_SECONDS = 0.5


class RedisSettingsError(SignerError):
    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where Redis is and how to reach it, parsed once; `connect` builds a client from it."""

    hosts: tuple[tuple[str, int], ...]  # the server, or the sentinels
    db: int
    tls: bool
    sentinel_master: str | None = None
    credentials_file: Path | None = None  # read when connecting, never kept in the settings
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS

    @property
    def where(self) -> str:
        """For log lines and errors: scheme, hosts and database, never a credential."""
        scheme = ("rediss" if self.tls else "redis") + ("+sentinel" if self.sentinel_master else "")
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
        master = f"/{self.sentinel_master}" if self.sentinel_master else ""
        return f"{scheme}://{hosts}{master}/{self.db}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RedisSettings | None:
        """None when KEYMINT_REDIS_URL is not set; RedisSettingsError names what is wrong."""
        url = env.get("KEYMINT_REDIS_URL", "").strip()
        if not url:
            for name in ("KEYMINT_REDIS_CREDENTIALS_FILE", "KEYMINT_REDIS_CA_FILE"):
                if env.get(name, "").strip():
                    raise RedisSettingsError(name, "is set but KEYMINT_REDIS_URL is not")
            return None
        parsed = parse_url(url)
        ca_file = _path(env, "KEYMINT_REDIS_CA_FILE")
        client_cert = _path(env, "KEYMINT_REDIS_CLIENT_CERT")
        client_key = _path(env, "KEYMINT_REDIS_CLIENT_KEY")
        if (client_cert is None) != (client_key is None):
            raise RedisSettingsError(
                "KEYMINT_REDIS_CLIENT_CERT", "and KEYMINT_REDIS_CLIENT_KEY go together"
            )
        if not parsed.tls:
            for name, value in (
                ("KEYMINT_REDIS_CA_FILE", ca_file),
                ("KEYMINT_REDIS_CLIENT_CERT", client_cert),
            ):
                if value is not None:
                    raise RedisSettingsError(
                        name, f"is for TLS, but KEYMINT_REDIS_URL is {parsed.where}: use rediss://"
                    )
        timeout = _seconds(env, "KEYMINT_REDIS_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS)
        return cls(
            hosts=parsed.hosts,
            db=parsed.db,
            tls=parsed.tls,
            sentinel_master=parsed.sentinel_master,
            credentials_file=_path(env, "KEYMINT_REDIS_CREDENTIALS_FILE"),
            ca_file=ca_file,
            client_cert=client_cert,
            client_key=client_key,
            timeout_seconds=timeout,
        )

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for redis.asyncio.Redis (and Sentinel's connections). Reads the
        credentials file and checks the TLS files now: RedisSettingsError names what is wrong."""
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        for name, path in (
            ("KEYMINT_REDIS_CA_FILE", self.ca_file),
            ("KEYMINT_REDIS_CLIENT_CERT", self.client_cert),
            ("KEYMINT_REDIS_CLIENT_KEY", self.client_key),
        ):
            if path is not None and not path.is_file():
                raise RedisSettingsError(name, f"{path} is not a readable file")
        username, password = read_credentials(self.credentials_file)
        options: dict[str, Any] = {
            "db": self.db,
            "username": username,
            "password": password,
            "socket_timeout": self.timeout_seconds,
            "socket_connect_timeout": self.timeout_seconds,
            "retry": Retry(NoBackoff(), 1),
            "client_name": "keymint",
        }
        if self.tls:
            options.update(_tls_options(self))
        return options


def connect(settings: RedisSettings) -> Redis:
    """A client (a pool, connecting lazily) for `settings`: directly, or through Sentinel.
    RedisSettingsError when the credentials or TLS files cannot be used."""
    from redis.asyncio import Redis
    from redis.asyncio.sentinel import Sentinel

    options = settings.client_options()
    if settings.sentinel_master is None:
        ((host, port),) = settings.hosts
        return Redis(host=host, port=port, **options)
    sentinel_options: dict[str, Any] = {
        "socket_timeout": settings.timeout_seconds,
        "socket_connect_timeout": settings.timeout_seconds,
    }
    if settings.tls:
        sentinel_options.update(_tls_options(settings))
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(settings.hosts), sentinel_kwargs=sentinel_options, **options
    )
    client: Redis = sentinel.master_for(settings.sentinel_master, **options)
    return client


@dataclass(frozen=True, slots=True)
class _ParsedUrl:
    hosts: tuple[tuple[str, int], ...]
    db: int
    tls: bool
    sentinel_master: str | None

    @property
    def where(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.hosts)


def parse_url(url: str) -> _ParsedUrl:
    name = "KEYMINT_REDIS_URL"
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise RedisSettingsError(name, f"the scheme must be one of {', '.join(SCHEMES)}")
    netloc, _, path = rest.partition("/")
    if "@" in netloc:
        raise RedisSettingsError(
            name,
            "holds credentials: put them in the file KEYMINT_REDIS_CREDENTIALS_FILE names "
            "(a URL shows in process listings and logs)",
        )
    if "?" in path or "#" in path:
        raise RedisSettingsError(name, "takes no query or fragment")
    sentinel = scheme.endswith("+sentinel")
    default_port = 26379 if sentinel else 6379
    hosts = tuple(_host_port(item, default_port) for item in netloc.split(",") if item)
    if not hosts:
        raise RedisSettingsError(name, "names no host")
    parts = [p for p in path.split("/") if p]
    master: str | None = None
    if sentinel:
        if not parts:
            raise RedisSettingsError(name, "a Sentinel URL names the master: .../MASTER/DB")
        master = urllib.parse.unquote(parts.pop(0))
    elif len(hosts) != 1:
        raise RedisSettingsError(name, "names several hosts: for Sentinel, use redis+sentinel://")
    if len(parts) > 1:
        raise RedisSettingsError(name, f"path {path!r} is not /DB")
    db_text = parts[0] if parts else "0"
    if not db_text.isdigit():
        raise RedisSettingsError(name, f"database {db_text!r} is not a number")
    return _ParsedUrl(hosts, int(db_text), scheme.startswith("rediss"), master)


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":") or str(default_port)
    else:
        host, sep, port = item.partition(":")
        port = port if sep else str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisSettingsError("KEYMINT_REDIS_URL", f"{item!r} is not HOST:PORT")
    return host, int(port)


def read_credentials(path: Path | None) -> tuple[str | None, str | None]:
    """(username, password) from the credentials file; (None, None) without one."""
    name = "KEYMINT_REDIS_CREDENTIALS_FILE"
    if path is None:
        return None, None
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RedisSettingsError(name, f"cannot read {path}: {exc}") from None
    if mode & stat.S_IROTH:
        raise RedisSettingsError(name, f"{path} is readable by every local user: chmod o-r")
    line = text.strip()
    if not line or "\n" in line:
        raise RedisSettingsError(name, f"{path} must hold one line: USERNAME:PASSWORD or PASSWORD")
    username, sep, password = line.partition(":")
    if not sep:
        return None, line
    if not username or not password:
        raise RedisSettingsError(name, f"{path}: USERNAME:PASSWORD with neither part empty")
    return username, password


def _tls_options(settings: RedisSettings) -> dict[str, Any]:
    return {
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": None if settings.ca_file is None else os.fspath(settings.ca_file),
        "ssl_certfile": None if settings.client_cert is None else os.fspath(settings.client_cert),
        "ssl_keyfile": None if settings.client_key is None else os.fspath(settings.client_key),
    }


def _path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name, "").strip()
    return Path(value) if value else None


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RedisSettingsError(name, f"{raw!r} is not a number") from None
    if not 0 < value <= 60:
        raise RedisSettingsError(name, f"{raw} must be above 0 and at most 60")
    return value


# The names every process agrees on. Signers need only read REVOKED_* and subscribe to EVENTS.
REVOKED_KEYS = {"subject": "keymint:revoked:subject", "jti": "keymint:revoked:jti"}  # ZSET by until
REVOKED_VERSION_KEY = "keymint:revoked:version"  # a fresh random marker on every change
KEYRING_KEY = "keymint:keyring"
KEYRING_VERSION_KEY = "keymint:keyring:version"
BUCKET_PREFIX = "keymint:rate:"
EVENTS_CHANNEL = "keymint:events"  # JSON: {"kind": "subject"|"jti", "value", "until"} or keyring


# The settings above, for the schemas of the processes that read them (signer.settings).
REDIS_SETTINGS = (
    Setting("KEYMINT_REDIS_URL", Kind.TEXT, "rediss://keymint-redis:6379/0"),
    Setting("KEYMINT_REDIS_CREDENTIALS_FILE", Kind.TEXT, "/etc/keymint/redis/credentials"),
    Setting("KEYMINT_REDIS_CA_FILE", Kind.TEXT, "/etc/keymint/redis/ca.crt"),
    Setting("KEYMINT_REDIS_CLIENT_CERT", Kind.TEXT, "/etc/keymint/redis/tls.crt"),
    Setting("KEYMINT_REDIS_CLIENT_KEY", Kind.TEXT, "/etc/keymint/redis/tls.key"),
    Setting("KEYMINT_REDIS_TIMEOUT_SECONDS", Kind.NUMBER, "0.5"),
)
