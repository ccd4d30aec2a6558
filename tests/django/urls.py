"""URLs of the Django app the integration tests drive."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from readscale.django import add_tags, check_not_modified, http_policy
from readscale.http import HttpPolicy

PUBLIC = HttpPolicy.public(60, edge_max_age=300)
LANG = HttpPolicy.public(60, edge_max_age=300, vary=("accept-language",))


@http_policy(LANG)
def lang(request: HttpRequest) -> HttpResponse:
    add_tags(request, "lang")
    return HttpResponse(request.headers.get("accept-language", "en"))


@http_policy(HttpPolicy.private(0))
def me(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.COOKIES.get("sessionid", "anonymous"))


def plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse("plain")


@http_policy(PUBLIC)
def versioned(request: HttpRequest) -> HttpResponse:
    if (early := check_not_modified(request, etag_from=11)) is not None:
        return early
    return HttpResponse("rendered")


urlpatterns = [path("lang", lang), path("me", me), path("plain", plain), path("v", versioned)]
