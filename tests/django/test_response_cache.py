"""The Django response cache middleware, in process (the served stack is in
tests/browser/test_response_cache.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.http import HttpResponse, StreamingHttpResponse
from django.urls import path

from readscale import Cache
from readscale._core.http import HttpPolicy
from readscale._sync.backends.memory import MemoryBackend
from readscale.django import http_policy


@http_policy(HttpPolicy.public(0, edge_max_age=60))
def two_cookies(request: Any) -> HttpResponse:
    response = HttpResponse("hi", headers={"cache-control": "public, max-age=60"})
    response.set_cookie("a", "1")
    response.set_cookie("b", "2", httponly=True)
    return response


made: list[str] = []


@http_policy(HttpPolicy.public(0, edge_max_age=60))
def stream(request: Any) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for n in range(3):
            made.append(str(n))
            yield b"x"

    return StreamingHttpResponse(chunks(), headers={"cache-control": "public, max-age=60"})


urlpatterns = [path("two-cookies", two_cookies), path("stream", stream)]


def test_a_passed_through_response_keeps_every_cookie() -> None:
    """A response that sets cookies is not stored; the browser must still get all of them,
    in ``response.cookies`` (where Django's other middleware look for them)."""
    from tests.http.stacks.django_app import configure

    configure()
    from django.test import Client, override_settings

    cache = Cache(MemoryBackend())
    with override_settings(
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["readscale.django.ResponseCacheMiddleware"],
        READSCALE_RESPONSE_CACHE=cache,
    ):
        response = Client().get("/two-cookies")
    assert response.status_code == 200 and response.content == b"hi"
    assert sorted(response.cookies) == ["a", "b"]
    assert response.cookies["a"].value == "1" and response.cookies["b"]["httponly"]
    assert "set-cookie" not in response.headers, "each cookie is sent once, from response.cookies"


def test_a_streaming_response_streams_and_is_not_stored() -> None:
    """A streaming response goes back as it is: nothing is made before the client reads."""
    from tests.http.stacks.django_app import configure

    configure()
    from django.test import Client, override_settings

    from readscale._sync.http.response_cache import ResponseCache

    responses = ResponseCache(Cache(MemoryBackend()))
    with override_settings(
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["readscale.django.ResponseCacheMiddleware"],
        READSCALE_RESPONSE_CACHE=responses,
    ):
        for _ in range(2):
            made.clear()
            response = Client().get("/stream")
            assert response.streaming and made == []
            assert b"".join(response.streaming_content) == b"xxx" and made == ["0", "1", "2"]
    assert responses.stats.stored == 0 and responses.stats.passes == 2
