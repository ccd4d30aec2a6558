"""A slow disk for a stack's Redis, and what a host crash would have left of its AOF.

Tests and benches of write-behind's durability need what no healthy machine shows: a
disk whose fsync takes hundreds of milliseconds (so Redis, with ``appendfsync
everysec``, postpones its AOF writes and still replies), and the power loss of a host
(so only what was fsynced survives). ``fsync_shim.c``, beside this file, is an
LD_PRELOAD shim for redis-server that delays every ``fsync``/``fdatasync`` by a delay
read from a control file at each call, and logs each completed fsync with the size the
file had when it began. It is compiled with the system's gcc on first use::

    disk = SlowDisk(root)                              # builds the shim once
    node = stack.start_redis(aof=True, environment=disk.environment)
    disk.set_delay(200)                                # ms per fsync, from now on
    stack.kill("redis"); disk.lose_unsynced(node.dir)  # a host crash: unsynced bytes go
    disk.fsyncs()                                      # how many fsyncs Redis made

The host-crash model: each AOF increment file (``*.incr.aof``) is cut back to the size
its last fsync covered (0 if it was never fsynced). Redis loads a cut tail as it loads
a torn one (``aof-load-truncated yes``). The base file and the manifest are written to a
temporary file, fsynced and renamed before use, so they are left as they are.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from readscale.errors import StackError

SHIM_SOURCE = Path(__file__).with_name("fsync_shim.c")


def build_shim(folder: Path) -> Path:
    """Compile ``fsync_shim.c`` into ``folder`` (once per source version); the library."""
    source = SHIM_SOURCE.read_bytes()
    library = folder / f"fsync-shim-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if library.exists():
        return library
    gcc = shutil.which("gcc")
    if gcc is None:
        raise StackError("the slow-disk shim needs gcc (Debian: apt-get install gcc libc6-dev)")
    folder.mkdir(parents=True, exist_ok=True)
    partial = library.with_suffix(".tmp")
    proc = subprocess.run(
        [gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-o", str(partial), str(SHIM_SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise StackError(f"gcc could not build {SHIM_SOURCE.name}: {proc.stderr.strip()}")
    partial.chmod(0o755)
    partial.replace(library)
    return library


class SlowDisk:
    """The shim's files under ``root``: the library, its control file, its fsync log."""

    def __init__(self, root: Path, *, delay_ms: int = 0) -> None:
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        self.root = root
        self.library = build_shim(root)
        self.control = root / "fsync-delay-ms"
        self.log = root / "fsyncs.log"
        self.set_delay(delay_ms)

    @property
    def environment(self) -> dict[str, str]:
        """For ``Stack.start_redis(environment=...)``."""
        return {
            "LD_PRELOAD": str(self.library),
            "READSCALE_FSYNC_CONTROL": str(self.control),
            "READSCALE_FSYNC_LOG": str(self.log),
        }

    def set_delay(self, ms: int) -> None:
        """Every fsync from now on takes ``ms`` milliseconds more."""
        partial = self.control.with_suffix(".tmp")
        partial.write_text(str(max(0, int(ms))))
        partial.chmod(0o644)
        partial.replace(self.control)  # a reader sees the old or the new value, whole

    def _lines(self) -> list[tuple[int, str]]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            size, _, path = line.partition(" ")
            if size.isdigit() and path:
                out.append((int(size), path))
        return out

    def fsyncs(self) -> int:
        """Fsyncs completed so far (by the server and its children)."""
        return len(self._lines())

    def synced_sizes(self) -> dict[str, int]:
        """Path -> bytes its last completed fsync made durable."""
        sizes: dict[str, int] = {}
        for size, path in self._lines():
            sizes[path] = size
        return sizes

    def lose_unsynced(self, redis_dir: Path) -> int:
        """After the server was killed: cut each AOF increment file back to what its last
        fsync covered, as a power loss would; the bytes cut."""
        synced = self.synced_sizes()
        cut = 0
        for aof in sorted(Path(redis_dir).rglob("*.incr.aof")):
            keep = synced.get(str(aof.resolve()), 0)
            size = aof.stat().st_size
            if size > keep:
                with aof.open("r+b") as fh:
                    fh.truncate(keep)
                cut += size - keep
        return cut


__all__ = ["SHIM_SOURCE", "SlowDisk", "build_shim"]
