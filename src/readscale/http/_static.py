"""Fingerprinted static assets: a deploy busts every cache without a purge.

:class:`AssetManifest` hashes each file under a folder and names it
``name.<hash>.ext``; references between files (CSS ``url(...)`` and ``@import``) are
rewritten to the hashed names first, so a changed image changes the hash of the CSS
that uses it too. Templates call ``manifest.url("css/app.css")``.

:class:`StaticAssets` is an ASGI app serving the manifest: a hashed name is served
``public, max-age=31536000, immutable`` with a strong ETag; the logical (unhashed)
name is served ``public, no-cache`` so it is always revalidated; anything else is 404.
Files are read once, at build time (assets are small and a deploy rebuilds them).
"""

from __future__ import annotations

import hashlib
import mimetypes
import posixpath
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from readscale._core.http import (
    ONE_YEAR,
    EntityTag,
    NotModified,
    Validators,
    evaluate,
    parse_conditionals,
    strong_etag,
)
from readscale.errors import ConfigurationError, HeaderError
from readscale.http._engine import bad_request

_CSS_REF = re.compile(r"""(url\(\s*['"]?|@import\s+['"])([^'")\s]+)""")
IMMUTABLE: str = f"public, max-age={ONE_YEAR}, immutable"
REVALIDATE: str = "public, no-cache"


@dataclass(frozen=True, slots=True)
class Asset:
    logical: str
    hashed: str
    body: bytes
    etag: EntityTag
    content_type: str


class AssetManifest:
    """Logical name → fingerprinted asset, for one folder."""

    def __init__(self, assets: dict[str, Asset], prefix: str) -> None:
        self.assets = assets
        self.prefix = prefix
        self.by_hashed = {a.hashed: a for a in assets.values()}

    @classmethod
    def build(cls, directory: str | Path, *, prefix: str = "/static/", hash_length: int = 12) -> AssetManifest:
        root = Path(directory)
        if not root.is_dir():
            raise ConfigurationError(f"static folder {root} does not exist")
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ConfigurationError(f"static prefix must start and end with '/', got {prefix!r}")
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        hashed: dict[str, str] = {}
        bodies: dict[str, bytes] = {}
        # Files without references first; then CSS, rewritten, repeatedly until stable
        # (a CSS importing a CSS needs the imported one's hash first).
        pending = dict(files)
        for name, body in files.items():
            if not name.endswith(".css"):
                hashed[name] = _fingerprint(name, body, hash_length)
                bodies[name] = body
                del pending[name]
        for _ in range(len(pending) + 1):
            progressed = False
            for name, body in list(pending.items()):
                refs = [_resolve(name, m.group(2)) for m in _CSS_REF.finditer(body.decode("utf-8", "replace"))]
                if any(ref in pending and ref != name for ref in refs):
                    continue
                text = _CSS_REF.sub(_rewriter(name, hashed), body.decode())
                bodies[name] = text.encode()
                hashed[name] = _fingerprint(name, bodies[name], hash_length)
                del pending[name]
                progressed = True
            if not progressed:
                break
        if pending:
            raise ConfigurationError(f"circular CSS references between {', '.join(sorted(pending))}")
        assets = {
            name: Asset(
                name,
                hashed[name],
                bodies[name],
                strong_etag(bodies[name]),
                mimetypes.guess_type(name)[0] or "application/octet-stream",
            )
            for name in files
        }
        return cls(assets, prefix)

    def url(self, logical: str) -> str:
        """The fingerprinted URL of ``logical`` (for templates)."""
        try:
            return self.prefix + self.assets[logical.lstrip("/")].hashed
        except KeyError:
            raise ConfigurationError(f"no static asset named {logical!r} under {self.prefix}") from None

    def manifest(self) -> dict[str, str]:
        """Logical → hashed names (write it as JSON for other tools)."""
        return {name: a.hashed for name, a in self.assets.items()}

    def lookup(self, path: str) -> tuple[Asset, bool] | None:
        """(asset, is_hashed_name) for a request path under the prefix."""
        if not path.startswith(self.prefix):
            return None
        name = path[len(self.prefix) :]
        if name in self.by_hashed:
            return self.by_hashed[name], True
        if name in self.assets:
            return self.assets[name], False
        return None


def _fingerprint(name: str, body: bytes, length: int) -> str:
    digest = hashlib.blake2b(body, digest_size=16).hexdigest()[:length]
    stem, dot, ext = name.rpartition(".")
    if not dot or "/" in ext:
        return f"{name}.{digest}"
    return f"{stem}.{digest}.{ext}"


def _resolve(base: str, ref: str) -> str:
    if ref.startswith(("http:", "https:", "data:", "//", "#")):
        return ""
    ref = ref.split("?", 1)[0].split("#", 1)[0]
    return posixpath.normpath(posixpath.join(posixpath.dirname(base), ref)).lstrip("/")


def _rewriter(base: str, hashed: dict[str, str]) -> Callable[[re.Match[str]], str]:
    def sub(match: re.Match[str]) -> str:
        return match.group(1) + _rewrite(base, match.group(2), hashed)

    return sub


def _rewrite(base: str, ref: str, hashed: dict[str, str]) -> str:
    target = _resolve(base, ref)
    if target not in hashed:
        return ref
    new = hashed[target]
    return posixpath.relpath(new, posixpath.dirname(base) or ".")


Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class StaticAssets:
    """ASGI app serving an :class:`AssetManifest` (mount it at the manifest's prefix)."""

    def __init__(self, manifest: AssetManifest) -> None:
        self.manifest = manifest

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Send) -> None:
        if scope["type"] != "http":
            raise ConfigurationError("StaticAssets serves HTTP only")
        # Starlette >= 0.33 keeps the full path under a Mount; older servers strip root_path.
        path = scope["path"]
        if not path.startswith(self.manifest.prefix):
            path = scope.get("root_path", "") + path
        status, headers, body = self.respond(scope["method"], path, _header_getter(scope))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})

    def respond(
        self, method: str, path: str, get: Callable[[str], str | None]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, fields, body) for one request: usable from any framework."""
        if method not in ("GET", "HEAD"):
            return 405, [("allow", "GET, HEAD"), ("cache-control", "no-store"), ("content-length", "0")], b""
        found = self.manifest.lookup(path)
        if found is None:
            return 404, [("cache-control", "no-store"), ("content-length", "0")], b""
        asset, is_hashed = found
        headers = [("cache-control", IMMUTABLE if is_hashed else REVALIDATE), ("etag", asset.etag.render())]
        try:
            cond = parse_conditionals(get)
        except HeaderError as exc:
            return bad_request(exc)
        if isinstance(evaluate(method, cond, Validators(asset.etag)), NotModified):
            return 304, headers, b""
        headers += [("content-type", asset.content_type), ("content-length", str(len(asset.body)))]
        return 200, headers, asset.body


def _header_getter(scope: Scope) -> Callable[[str], str | None]:
    def get(name: str) -> str | None:
        key = name.encode()
        values = [v.decode("latin-1") for k, v in scope["headers"] if k == key]
        return ", ".join(values) if values else None

    return get
