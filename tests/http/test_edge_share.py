"""The edge absorbs the same share of one workload whatever the framework behind it
(issue 13): the bench's measurement, small, with counts asserted."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from readscale.bench.http import edge_shares, edge_workload


@pytest.mark.slow
@pytest.mark.stack
def test_each_frameworks_recommended_stack_gets_the_same_edge_share() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="readscale-test-edge-share-"))
    workdir.chmod(0o755)  # Varnish runs as its own user and must read the VCL there
    requests = 400
    try:
        shares = edge_shares(requests=requests, workdir=workdir, progress=lambda _: None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert set(shares) == {"fastapi", "starlette", "flask", "django"}
    distinct = len({(path, h["accept-language"]) for path, h in edge_workload(requests)})
    # Every repeat of a (page, language) pair is a hit, whatever the User-Agent: nothing
    # but the declared Accept-Language splits the edge's cache.
    expected = (requests - distinct) / requests
    assert shares == dict.fromkeys(shares, expected), shares
