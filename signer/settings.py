"""Settings checked whole: one typed schema per process, from the environment and a config file.

Each process (the gateway, a signer) declares its settings once, as `Setting`s: the name operators
know (the environment variable), its kind and an example of a right value. Values come from the
environment or from a config file (TOML or YAML, named by `--config` or KEYMINT_CONFIG_FILE) whose
keys are those same names; the environment overrides the file (an empty environment variable counts
as unset). A file's values are typed: a string where the schema wants an integer is a problem.

Nothing stops at the first problem. Parsers record each one (`Problems`) and carry on where they
can; the caller raises one error holding all of them, one line each, naming the setting, what is
wrong and an example of a right value. Secret settings are never echoed, from either source.

This module is the machinery; `extauthz.config` and `signer.server` hold the schemas.
"""

from __future__ import annotations

import difflib
import enum
import math
import tomllib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

CONFIG_FILE_VARIABLE = "KEYMINT_CONFIG_FILE"
MAX_CONFIG_FILE_BYTES = 1024 * 1024

T = TypeVar("T")
U = TypeVar("U")


class Kind(enum.Enum):
    """How a setting is written; in a config file, which types it accepts."""

    TEXT = "text"  # a string
    INTEGER = "integer"  # an integer, or a string of one
    NUMBER = "number"  # an integer or a decimal number, or a string of one
    BOOLEAN = "boolean"  # true/false, or a string "true"/"false"
    LIST = "list"  # a list of strings, or one string separated by commas or spaces
    PAIRS = "pairs"  # a table of KEY = "value", a list of "KEY=value", or one string of them


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    kind: Kind
    example: str  # a right value, as it would be written in the environment
    secret: bool = False  # never echoed in a problem


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration; `line()` is what operators read."""

    setting: str
    problem: str
    example: str = ""

    def line(self) -> str:
        text = f"{self.setting}: {self.problem}"
        if self.example:
            text += f" (for example {self.setting}={self.example})"
        return text


def schema_of(settings: Iterable[Setting]) -> dict[str, Setting]:
    schema: dict[str, Setting] = {}
    for setting in settings:
        if setting.name in schema:
            raise ValueError(f"{setting.name} is declared twice")
        schema[setting.name] = setting
    return schema


class Problems:
    """Collects problems; `attempt` runs a parser that raises one of `errors`, records what it
    raised (their `problems`) and gives `fallback` instead, so the next setting is still read."""

    def __init__(
        self, schema: Mapping[str, Setting], errors: tuple[type[Exception], ...] = ()
    ) -> None:
        self._schema = schema
        self._errors = errors
        self._problems: list[Problem] = []

    def add(self, setting: str, problem: str, example: str | None = None) -> None:
        if example is None:
            declared = self._schema.get(setting)
            example = declared.example if declared is not None else ""
        candidate = Problem(setting, problem, example)
        if candidate not in self._problems:
            self._problems.append(candidate)

    def extend(self, problems: Iterable[Problem]) -> None:
        for problem in problems:
            self.add(problem.setting, problem.problem, problem.example or None)

    def attempt(self, parse: Callable[[], T], fallback: U) -> T | U:
        try:
            return parse()
        except self._errors as exc:
            self.extend(problems_of(exc))
            return fallback

    def __bool__(self) -> bool:
        return bool(self._problems)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self._problems)

    def __len__(self) -> int:
        return len(self._problems)

    @property
    def all(self) -> tuple[Problem, ...]:
        return tuple(self._problems)


def problems_of(exc: BaseException) -> tuple[Problem, ...]:
    """The problems an error carries: its `problems`, else one from its `variable`/`setting` and
    `problem`, else one naming nothing but its message."""
    carried = getattr(exc, "problems", None)
    if carried:
        return tuple(carried)
    setting = getattr(exc, "variable", None) or getattr(exc, "setting", None) or "configuration"
    problem = getattr(exc, "problem", None) or str(exc)
    return (Problem(str(setting), str(problem)),)


def render(problems: Collection[Problem]) -> str:
    """All problems, one line each."""
    return "\n".join(problem.line() for problem in problems)


# --- the config file ---------------------------------------------------------------------------


def read_config_file(path: Path) -> tuple[dict[str, object], list[Problem]]:
    """The top-level table of a TOML (.toml) or YAML (.yaml, .yml) file; problems name
    KEYMINT_CONFIG_FILE and say what is wrong with the file itself."""
    example = "/etc/keymint/gateway.toml"

    def refused(problem: str) -> tuple[dict[str, object], list[Problem]]:
        return {}, [Problem(CONFIG_FILE_VARIABLE, f"{path}: {problem}", example)]

    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        return refused("name a .toml, .yaml or .yml file")
    try:
        with path.open("rb") as handle:
            content = handle.read(MAX_CONFIG_FILE_BYTES + 1)
    except OSError as exc:
        return refused(f"cannot be read: {exc.strerror}")
    if len(content) > MAX_CONFIG_FILE_BYTES:
        return refused(f"is larger than {MAX_CONFIG_FILE_BYTES} bytes")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return refused("is not UTF-8 text")
    if suffix == ".toml":
        try:
            document: object = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            return refused(f"is not valid TOML: {exc}")
    else:
        try:
            import yaml
        except ImportError:  # pragma: no cover - a core dependency
            return refused("YAML needs PyYAML (pip install pyyaml), or write TOML")
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            return refused(f"is not valid YAML: {str(exc).splitlines()[0]}")
    if document is None:
        document = {}
    if not isinstance(document, dict):
        return refused("must hold one table of SETTING = value")
    return {str(key): value for key, value in document.items()}, []


def typed_values(
    raw: Mapping[str, object],
    schema: Mapping[str, Setting],
    *,
    source: Path,
    known_elsewhere: Collection[str] = (),
) -> tuple[dict[str, str], list[Problem]]:
    """The file's values written as the environment writes them, each checked against its kind.

    A key no schema declares is a problem (with the nearest known name); a key in
    `known_elsewhere` (another process's setting, in a file both read) is left out quietly."""
    values: dict[str, str] = {}
    problems: list[Problem] = []
    for key, value in raw.items():
        setting = schema.get(key)
        if setting is None:
            if key in known_elsewhere:
                continue
            near = difflib.get_close_matches(key, [*schema, *known_elsewhere], n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            problems.append(Problem(key, f"in {source}: not a keymint setting{hint}"))
            continue
        text = _as_text(setting, value)
        if text is None:
            shown = "a value" if setting.secret else f"{type(value).__name__} {value!r}"
            problems.append(
                Problem(
                    key,
                    f"in {source}: {shown} is not {_KIND_NAMES[setting.kind]}",
                    setting.example,
                )
            )
            continue
        values[key] = text
    return values, problems


_KIND_NAMES = {
    Kind.TEXT: "a string",
    Kind.INTEGER: "an integer",
    Kind.NUMBER: "a number",
    Kind.BOOLEAN: "true or false",
    Kind.LIST: "a list of strings (or one string)",
    Kind.PAIRS: "a table of KEY = value (or a list of KEY=value)",
}


def _as_text(setting: Setting, value: object) -> str | None:
    kind = setting.kind
    if isinstance(value, str):
        return value
    if kind is Kind.BOOLEAN:
        return ("true" if value else "false") if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None  # YAML's `no` is not a number, a list or a name
    if kind is Kind.INTEGER:
        return str(value) if isinstance(value, int) else None
    if kind is Kind.NUMBER:
        if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
            return str(value)
        return None
    if kind is Kind.LIST:
        if isinstance(value, list) and all(isinstance(item, str | int) for item in value):
            return ",".join(str(item) for item in value)
        return None
    if kind is Kind.PAIRS:
        if isinstance(value, dict) and all(isinstance(v, str | int) for v in value.values()):
            return ",".join(f"{k}={v}" for k, v in value.items())
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return ",".join(value)
        return None
    return None


def effective_env(
    env: Mapping[str, str],
    schema: Mapping[str, Setting],
    *,
    config_file: Path | None = None,
    known_elsewhere: Collection[str] = (),
) -> tuple[dict[str, str], list[Problem]]:
    """The environment over the config file (`config_file`, else KEYMINT_CONFIG_FILE's), and the
    file's problems. Without a file, the environment as it is."""
    merged = dict(env)
    if config_file is None:
        named = env.get(CONFIG_FILE_VARIABLE, "").strip()
        config_file = Path(named) if named else None
    if config_file is None:
        return merged, []
    raw, problems = read_config_file(config_file)
    values, value_problems = typed_values(
        raw, schema, source=config_file, known_elsewhere=known_elsewhere
    )
    for name, value in values.items():
        if not env.get(name, "").strip():
            merged[name] = value
    merged[CONFIG_FILE_VARIABLE] = str(config_file)
    return merged, [*problems, *value_problems]


def config_file_setting() -> Setting:
    return Setting(CONFIG_FILE_VARIABLE, Kind.TEXT, "/etc/keymint/gateway.toml")


def host_port(address: str, *, any_port: bool = False) -> tuple[str, int]:
    """Split HOST:PORT or [V6]:PORT into (host, port); ValueError saying what is wrong.
    `any_port`: port 0 (the OS picks) is allowed, as it is for an address to listen on."""
    host, sep, port = address.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    bare = host.removeprefix("[").removesuffix("]") if bracketed else host
    if ":" in bare and not bracketed:
        raise ValueError(f"{address!r} is not HOST:PORT (an IPv6 host in brackets: [::1]:80)")
    if not sep or not bare:
        raise ValueError(f"{address!r} is not HOST:PORT")
    if not port.isdigit():
        raise ValueError(f"{address!r}: port {port!r} is not a number")
    lowest = 0 if any_port else 1
    if not lowest <= int(port) <= 65535:
        raise ValueError(f"{address!r}: port {port} is not between {lowest} and 65535")
    return bare, int(port)


def listen_setting(p: Problems, env: Mapping[str, str], name: str, default: str) -> str:
    """The address setting `name` says to listen on (port 0: the OS picks); a problem recorded in
    `p` (and "" given back) when it is not HOST:PORT."""
    listen = env.get(name, "").strip() or default
    try:
        host_port(listen, any_port=True)
    except ValueError as exc:
        p.add(name, str(exc))
        return ""
    return listen
