"""Fingerprinted assets, purgers (batching, retries, after-commit queue) and prewarming."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest

from readscale.errors import ConfigurationError, PurgeError
from readscale.http import AssetManifest
from readscale.http.purge import (
    AsyncRecordingPurger,
    CloudflarePurger,
    FastlyPurger,
    PurgeQueue,
    RecordingPurger,
    RetryPolicy,
    VarnishPurger,
    prewarm,
)
from readscale.starlette import StaticAssets
from tests.http.conftest import Edge

IMMUTABLE = "public, max-age=31536000, immutable"  # a hashed asset: one year, never revalidated


def build_assets(root: Path) -> AssetManifest:
    (root / "img").mkdir()
    (root / "css").mkdir()
    (root / "img" / "logo.png").write_bytes(b"\x89PNG logo v1")
    (root / "css" / "base.css").write_text("body { color: red }")
    (root / "css" / "app.css").write_text('@import "base.css";\n.logo { background: url(../img/logo.png) }')
    return AssetManifest.build(root, prefix="/static/")


def test_fingerprints_change_with_content_and_references(tmp_path: Path) -> None:
    manifest = build_assets(tmp_path)
    app_css = manifest.url("css/app.css")
    assert app_css.startswith("/static/css/app.") and app_css.endswith(".css")
    body = manifest.assets["css/app.css"].body.decode()
    assert Path(manifest.url("img/logo.png")).name in body  # reference rewritten to the hashed name
    assert Path(manifest.url("css/base.css")).name in body
    (tmp_path / "img" / "logo.png").write_bytes(b"\x89PNG logo v2")
    rebuilt = AssetManifest.build(tmp_path, prefix="/static/")
    assert rebuilt.url("img/logo.png") != manifest.url("img/logo.png")
    assert rebuilt.url("css/app.css") != app_css  # a changed image busts the CSS that uses it
    assert rebuilt.url("css/base.css") == manifest.url("css/base.css")
    with pytest.raises(ConfigurationError):
        manifest.url("missing.js")


@pytest.mark.anyio
async def test_static_assets_are_immutable_and_validated(tmp_path: Path) -> None:
    manifest = build_assets(tmp_path)
    transport = httpx.ASGITransport(app=StaticAssets(manifest))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        hashed = await client.get(manifest.url("img/logo.png"))
        assert hashed.status_code == 200 and hashed.headers["cache-control"] == IMMUTABLE
        assert hashed.headers["content-type"] == "image/png"
        logical = await client.get("/static/img/logo.png")
        assert logical.headers["cache-control"] == "public, no-cache"
        again = await client.get(manifest.url("img/logo.png"), headers={"if-none-match": hashed.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert (await client.get("/static/nope.js")).status_code == 404
        assert (await client.get("/static/x", headers={"if-none-match": "bad"})).status_code in (400, 404)


def test_purge_queue_sends_after_commit_deduplicated_and_forgets_on_rollback() -> None:
    recorder = RecordingPurger()
    queue = PurgeQueue(recorder)
    queue.add_tags("product:1", "catalog")
    queue.add_tags("catalog")
    queue.discard()  # rollback: nothing goes out
    assert recorder.tag_purges == []
    queue.add_tags("product:1", "catalog", "product:1")
    queue.add_urls("http://shop.test/")
    queue.flush()  # after commit
    assert recorder.tag_purges == [(("product:1", "catalog"), True)]
    assert recorder.url_purges == [("http://shop.test/",)]
    assert queue.pending == ([], [])
    assert queue.stats.tags == 2


@pytest.mark.anyio
async def test_an_invalidation_source_can_drive_purges_by_tag() -> None:
    recorder = AsyncRecordingPurger()
    await recorder.purge_tags(["user:7", "a tag with spaces"])
    assert recorder.tags[0] == "user:7" and recorder.tags[1].startswith("h-")


def _mock(handler):  # type: ignore[no-untyped-def]
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_fastly_batches_256_keys_soft_and_retries_on_429() -> None:
    seen: list[httpx.Request] = []
    replies = iter([429, 200, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = next(replies)
        return httpx.Response(status, headers={"retry-after": "0"} if status == 429 else {})

    purger = FastlyPurger("svc", "token", client=_mock(handler), rng=random.Random(1))
    purger.purge_tags([f"k{i}" for i in range(300)])
    assert [len(r.headers["surrogate-key"].split()) for r in seen] == [256, 256, 44]
    assert all(r.headers["fastly-soft-purge"] == "1" and r.headers["fastly-key"] == "token" for r in seen)
    assert purger.stats.retries == 1 and purger.stats.requests == 3


def test_cloudflare_gives_up_on_4xx_and_after_its_retries_on_5xx() -> None:
    calls = {"n": 0}

    def forbidden(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(403)

    with pytest.raises(PurgeError):
        CloudflarePurger("zone", "t", client=_mock(forbidden)).purge_tags(["a"])
    assert calls["n"] == 1  # not retried

    def down(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(503)

    purger = CloudflarePurger(
        "zone", "t", client=_mock(down), retry=RetryPolicy(attempts=3, base=0.001), rng=random.Random(2)
    )
    with pytest.raises(PurgeError):
        purger.purge_urls(["https://a.test/x"])
    assert calls["n"] == 4 and purger.stats.failures == 1


def test_a_failed_flush_keeps_the_purges_for_the_next_one() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500)

    failing = VarnishPurger("http://127.0.0.1:9", client=_mock(down), retry=RetryPolicy(attempts=1))
    queue = PurgeQueue(failing)
    queue.add_tags("t")
    with pytest.raises(PurgeError):
        queue.flush()
    assert queue.pending == (["t"], [])


@pytest.mark.stack
def test_url_purge_and_prewarm_through_the_edge(edge: Edge) -> None:
    with edge.client() as client:
        client.get("/page/5")
        assert client.get("/page/5").headers["x-cache"] == "HIT"
        purger = VarnishPurger(edge.url)
        purger.purge_urls([f"{edge.url}/page/5"])
        warmed = prewarm([f"{edge.url}/page/5"], client=client)
        purger.close()
        after = client.get("/page/5")
    assert warmed.ok == 1
    assert after.headers["x-cache"] == "HIT"
    assert edge.backend_hits("/page/5") == 2


@pytest.mark.stack
def test_cdn_cache_control_governs_over_a_browser_no_cache(edge: Edge) -> None:
    with edge.client() as client:
        first = client.get("/html")
        second = client.get("/html")
    assert first.headers["cache-control"] == "public, no-cache"
    assert second.headers["x-cache"] == "HIT"
    assert edge.backend_hits("/html") == 1


def test_after_commit_sends_on_success_and_forgets_on_error() -> None:
    recorder = RecordingPurger()
    queue = PurgeQueue(recorder)

    def failing_transaction() -> None:
        with queue.after_commit():
            queue.add_tags("rolled-back")
            raise RuntimeError("the transaction failed")

    with pytest.raises(RuntimeError):
        failing_transaction()
    assert recorder.tag_purges == [] and queue.pending == ([], [])
    with queue.after_commit():
        queue.add_tags("committed")
    assert recorder.tags == ["committed"]
