"""The public write-behind surface: ``readscale.writebehind`` re-exports, lazy PostgreSQL
writers, and the backpressure error's fields."""

from __future__ import annotations

import subprocess
import sys

import pytest

import readscale.writebehind as wb
from readscale.errors import ReadscaleError, WriteQueueFullError


def test_every_public_name_resolves() -> None:
    for name in wb.__all__:
        assert getattr(wb, name) is not None, name
    assert wb.PostgresWriter.__module__ == "readscale._sync.writebehind.postgres"
    assert wb.AsyncPostgresWriter.__module__ == "readscale._async.writebehind.postgres"
    with pytest.raises(AttributeError):
        _ = wb.NoSuchThing  # type: ignore[attr-defined]


def test_the_postgres_writers_load_only_when_asked_for() -> None:
    code = "import sys, readscale.writebehind; print('psycopg' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_a_full_queue_error_carries_its_fields() -> None:
    exc = WriteQueueFullError("orders", 1000, 1000, 2.5)
    assert isinstance(exc, ReadscaleError)
    assert (exc.queue, exc.length, exc.limit, exc.waited) == ("orders", 1000, 1000, 2.5)
    assert "after waiting 2.50s" in str(exc)
    assert "not stored" in str(exc)
