"""One fuzz target under atheris, in this process: `python -m fuzz.one TARGET [libFuzzer args]`.

The code under test (extauthz, signer, and the targets themselves) is imported inside atheris's
instrumentation, so libFuzzer is guided by its branches. The target's documented refusals are
swallowed here; any other exception propagates, and atheris reports it as a crash.
"""

from __future__ import annotations

import contextlib
import sys

import atheris


def main() -> None:
    name = sys.argv[1]
    with atheris.instrument_imports(include=["extauthz", "signer", "fuzz"]):
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
