"""One fuzz target under atheris, in this process: `python -m fuzz.one TARGET [libFuzzer args]`.

The code under test is imported inside atheris's instrumentation, so libFuzzer is guided by its
branches. The target's documented refusals are swallowed here; any other exception propagates,
and atheris reports it as a crash.

Instrumenting is most of a short run's cost (about 7 s of a 10 s start for all of keymint, spent
rewriting bytecode), so a target whose code lies in a few modules has only those instrumented
(`FOLLOWED`); the others follow all of extauthz, signer and fuzz.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("extauthz", "signer", "fuzz")
# The modules (and what is below them) each narrow target feeds its input to.
FOLLOWED: dict[str, tuple[str, ...]] = {
    "xfcc": ("extauthz.identity", "fuzz.targets"),
    "token_form": ("extauthz.server.token_exchange", "fuzz.targets"),
    "frost_encoding": ("signer.frost", "signer.ceremony", "fuzz.targets"),
    "ceremony": ("signer.frost", "signer.ceremony", "fuzz"),
    "jwt_signer": (
        "signer.token",
        "signer.endorsement",
        "signer.endorsement_guard",
        "signer.guard",
        "fuzz.targets",
    ),
    "canary": ("fuzz.targets",),  # the runner's own check: it crashes on purpose
}


def modules() -> list[str]:
    """Every module of PACKAGES, named from the files (nothing is imported to list them)."""
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def not_followed(followed: Sequence[str]) -> list[str]:
    """The modules of PACKAGES outside `followed` (atheris includes whole top-level packages and
    excludes single modules by name)."""
    return [
        name
        for name in modules()
        if not any(name == f or name.startswith(f + ".") for f in followed)
    ]


def main() -> None:
    name = sys.argv[1]
    followed = FOLLOWED.get(name)
    exclude = not_followed(followed) if followed is not None else []
    with atheris.instrument_imports(include=list(PACKAGES), exclude=exclude):
        from fuzz import targets
    target = {**targets.TARGETS, **targets.HIDDEN}[name]()
    refusals = target.refusals

    def one_input(data: bytes) -> None:
        with contextlib.suppress(*refusals):
            target.run(data)

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
