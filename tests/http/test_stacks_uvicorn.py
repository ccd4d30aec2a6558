"""The four example apps behind real uvicorn, as deployed: uvicorn's default proxy-headers
step takes the scheme from X-Forwarded-Proto before any middleware runs (defect 9 of
issue 13), so a public page whose links follow the scheme must vary on that field."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from readscale.testing.http import AppServer

TARGETS = {
    "fastapi": ("tests.http.stacks.fastapi_app:app", ()),
    "starlette": ("tests.http.stacks.starlette_app:app", ()),
    "flask": ("tests.http.stacks.flask_app:app", ("--interface", "wsgi")),
    "django": ("tests.http.stacks.django_app:application", ()),
}
COOKIE = {"cookie": "_ga=GA1.1.42; theme=dark", "user-agent": "Mozilla/5.0", "accept-language": "en"}


@pytest.mark.slow
@pytest.mark.parametrize("framework", list(TARGETS))
def test_behind_uvicorn_a_forwarded_scheme_is_varied_on_and_anonymous_pages_stay_public(
    framework: str, readscale_app_server_factory: Callable[..., AppServer]
) -> None:
    target, extra = TARGETS[framework]
    server = readscale_app_server_factory(target, extra_args=extra)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        https = c.get("/link", headers={"x-forwarded-proto": "https"})
        plain = c.get("/link")
        anonymous = c.get("/catalog", headers=COOKIE)
        written = c.post("/write/uvicorn")
        own = c.get("/read")
    assert https.text.startswith("https://"), https.text
    assert https.headers["cache-control"] == "public, max-age=60"
    assert "X-Forwarded-Proto" in https.headers["vary"], "the scheme came from this field"
    assert https.headers["etag"] != plain.headers["etag"]
    assert plain.text.startswith("http://") and "X-Forwarded-Proto" not in plain.headers.get("vary", "")
    assert anonymous.headers["cache-control"] == "public, max-age=60" and "set-cookie" not in anonymous.headers
    assert "Secure" not in written.headers["set-cookie"], "plain http: a Secure cookie would be dropped"
    assert own.text == "uvicorn", "read-your-writes over plain http, through a real server"
