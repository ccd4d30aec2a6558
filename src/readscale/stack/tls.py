"""Throwaway TLS material for the local stack: a CA and a server certificate for loopback.

Made with the ``openssl`` command (present wherever the servers are), so that the TLS
paths of clients are tested for real. Never use these files outside the stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from readscale.errors import MissingBinaryError
from readscale.stack import _proc


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(folder: Path, *, days: int = 2) -> TlsFiles:
    """A CA and a certificate for 127.0.0.1 / localhost / ::1 signed by it, in ``folder``."""
    openssl = _find_openssl()
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    ext = folder / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    run = _proc.run
    run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
         "-days", str(days), "-subj", "/CN=readscale-stack-ca"])  # fmt: skip
    run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", "/CN=127.0.0.1"])  # fmt: skip
    run([openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
         "-out", str(cert), "-days", str(days), "-extfile", str(ext)])  # fmt: skip
    for path in (ca_key, key):
        path.chmod(0o600)
    return TlsFiles(ca=ca, cert=cert, key=key)


def _find_openssl() -> str:
    import shutil

    found = shutil.which("openssl")
    if not found:
        raise MissingBinaryError("openssl", "openssl")
    return found
