"""A batch writer for the CLI test's ``--writer``: appends each batch as one JSON line
to the file named by ``$READSCALE_TEST_WRITER_OUT`` (newest version per key wins)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from readscale.writebehind import FailureKind, WriteRecord


class FileWriter:
    def __init__(self) -> None:
        self.path = Path(os.environ["READSCALE_TEST_WRITER_OUT"])

    async def write_batch(self, records: Sequence[WriteRecord]) -> int:
        with self.path.open("a") as out:
            out.write(json.dumps([[r.key, r.version, r.value] for r in records]) + "\n")
        return len(records)

    def failure_kind(self, exc: Exception) -> FailureKind:
        return FailureKind.TRANSIENT
