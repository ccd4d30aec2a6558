"""Coverage-guided fuzzing of readscale's parsers with atheris (libFuzzer for Python).

    python -m tests.fuzz.atheris_main -runs=200000            # a longer session
    python -m tests.fuzz.atheris_main -max_total_time=600 corpus/   # keep a corpus

``tests/fuzz/test_atheris.py`` runs it briefly (a fixed number of runs, a fixed seed) in
the test suite. A crash writes ``crash-*`` with the input that caused it.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["readscale"]):
    from tests.fuzz.targets import one_input


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
