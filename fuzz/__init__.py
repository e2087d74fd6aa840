"""Coverage-guided fuzzing of every parser a caller, a gateway or a ceremony driver can reach.

    python -m fuzz                      # every target, 100,000 iterations each (`make fuzz`)
    python -m fuzz --runs 3000          # the quick subset `make test` runs
    python -m fuzz --targets xfcc,jwt_identity --runs 1000000
    python -m fuzz.seeds                # rewrite the seed inputs in fuzz/seeds/<target>/

Each target (fuzz/targets.py, which lists them with their documented refusals) runs in a process
of its own under atheris (libFuzzer), starting from its seeds; a crash is any exception that is
not one of its documented refusals, an oracle's assertion, a hang over 30 s, or more than 4 GiB of
memory. The runner's last line is JSON: {"targets": {name: {"iterations": N, "crashes": C}}}.
Crashing inputs are kept in fuzz/crashes/<target>/.

This package imports nothing at import time, so that `fuzz.one` can instrument what it loads.
"""
