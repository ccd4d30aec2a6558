"""The Django example app's views (the docs' Django snippet shows the settings and a view)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

# --- snippet: django-views ---
from readscale.django import check_not_modified, http_policy
from readscale.http import HttpPolicy
from tests.django import urls as integration_urls
from tests.http.stacks._repo import repo


@http_policy(HttpPolicy.public(60, edge_max_age=600, vary=("accept-language",)))
def greeting(request: HttpRequest) -> HttpResponse:
    if (not_modified := check_not_modified(request, etag_from=repo.version)) is not None:
        return not_modified  # a 304 before rendering, one per language
    lang, text = repo.greeting(request.headers.get("accept-language"))
    return HttpResponse(text, headers={"content-language": lang})


@http_policy(HttpPolicy.private(0))  # per user: varies on Cookie and Authorization, its ETag too
def account(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"account of {request.session.get('user', 'nobody')}")


# --- end snippet ---


@http_policy(HttpPolicy.public(60))
def catalog(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"catalog: {repo.read()}")


@http_policy(HttpPolicy.public(60))
def link(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.build_absolute_uri("/catalog"))


@csrf_exempt
def login(request: HttpRequest) -> HttpResponse:
    request.session["user"] = request.GET.get("user", "alice")
    return HttpResponse("signed in")


@csrf_exempt
def logout(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    return HttpResponse("signed out")


@csrf_exempt
def write(request: HttpRequest, value: str) -> HttpResponse:
    repo.write(value)
    return HttpResponse("written")


def read(request: HttpRequest) -> HttpResponse:
    return HttpResponse(repo.read())


# Public routes whose page depends on who asks: readscale must keep them out of shared caches.
@http_policy(HttpPolicy.public(60))
def theme(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"theme {request.COOKIES.get('theme', 'light')}")


@http_policy(HttpPolicy.public(60))
def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"hello {request.session.get('user', 'nobody')}")


@http_policy(HttpPolicy.public(60))
def signed(request: HttpRequest) -> HttpResponse:
    return HttpResponse("signed" if "authorization" in request.headers else "anonymous")


@http_policy(HttpPolicy.public(60))
def has_cookie(request: HttpRequest) -> HttpResponse:
    return HttpResponse("cookie" if "cookie" in request.headers else "none")


urlpatterns = [
    path("theme", theme),
    path("hello", hello),
    path("signed", signed),
    path("has-cookie", has_cookie),
    path("greeting", greeting),
    path("account", account),
    path("catalog", catalog),
    path("link", link),
    path("login", login),
    path("logout", logout),
    path("write/<str:value>", write),
    path("read", read),
    *integration_urls.urlpatterns,
]
