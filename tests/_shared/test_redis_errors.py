"""Which AttributeError/TypeError a Redis backend may read as a lost connection."""

from __future__ import annotations

import pytest

from readscale._shared.redis_errors import closed_transport_race

WRITER_GONE = "AttributeError(\"'NoneType' object has no attribute 'writelines'\")"


def raised_in(filename: str, error: str) -> BaseException:
    code = compile(f"raise {error}", filename, "exec")
    try:
        exec(code, {})  # raises from a frame that claims ``filename``
    except (AttributeError, TypeError) as exc:
        return exc
    raise AssertionError("nothing raised")


@pytest.mark.parametrize(
    ("filename", "error", "race"),
    [
        (
            "/venv/redis/asyncio/connection.py",
            "AttributeError(\"'NoneType' object has no attribute 'writelines'\")",
            True,
        ),
        ("/py/lib/asyncio/selector_events.py", "TypeError(\"'NoneType' object is not callable\")", True),
        ("/venv/redis/asyncio/connection.py", "AttributeError(\"'Foo' object has no attribute 'bar'\")", False),
        ("/app/service.py", WRITER_GONE, False),
        ("/app/service.py", "TypeError('unsupported operand')", False),
    ],
)
def test_only_a_write_on_a_closed_connection_counts(filename: str, error: str, race: bool) -> None:
    assert closed_transport_race(raised_in(filename, error)) is race


def test_other_errors_never_count() -> None:
    assert closed_transport_race(ValueError("NoneType")) is False
