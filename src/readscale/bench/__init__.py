"""Benchmarks: scenarios measured side by side in one run, printed as a table and JSON.

Every bench prints one JSON object with ``--json``::

    {"bench": "<name>", "machine": {...}, "params": {...},
     "results": [{"name": "<metric>", "value": <number>, "unit": "<unit>"}, ...]}

Benchmarks live apart from the tests: tests assert counts, benchmarks measure time.
"""

from readscale.bench.harness import (
    BENCHES,
    BenchReport,
    Metric,
    Rounds,
    machine_info,
    measure_rounds,
)

__all__ = ["BENCHES", "BenchReport", "Metric", "Rounds", "machine_info", "measure_rounds"]
