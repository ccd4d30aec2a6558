"""Starlette, with sessions (Starlette's SessionMiddleware), composed as docs/http.md says."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

# --- snippet: starlette ---
from readscale.http import HttpPolicy, HttpSettings
from readscale.starlette import CausalTokenMiddleware, HttpCacheMiddleware, check_not_modified, http_policy
from tests.http.stacks._repo import SECRET, repo, signer


@http_policy(HttpPolicy.public(60, edge_max_age=600, vary=("accept-language",)))
async def greeting(request: Request) -> PlainTextResponse:
    check_not_modified(request, etag_from=repo.version)  # a 304 before rendering, one per language
    lang, text = repo.greeting(request.headers.get("accept-language"))
    return PlainTextResponse(text, headers={"content-language": lang})


@http_policy(HttpPolicy.private(0))  # per user: varies on Cookie and Authorization, its ETag too
async def account(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"account of {request.session.get('user', 'nobody')}")


app = Starlette(routes=[Route("/greeting", greeting), Route("/account", account)])
app.add_middleware(SessionMiddleware, secret_key=SECRET)
app.add_middleware(CausalTokenMiddleware, signer=signer)  # secure="auto": Secure over https only
# Added last, so outermost: it sees every Set-Cookie. Starlette's sessions read Cookie on
# every request: readscale tells that plumbing from a handler's read.
app.add_middleware(HttpCacheMiddleware, settings=HttpSettings(edge="varnish"))
# --- end snippet ---


@http_policy(HttpPolicy.public(60))
async def catalog(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"catalog: {repo.read()}")


@http_policy(HttpPolicy.public(60))
async def link(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(request.url_for("catalog")))


async def login(request: Request) -> PlainTextResponse:
    request.session["user"] = request.query_params.get("user", "alice")
    return PlainTextResponse("signed in")


async def logout(request: Request) -> PlainTextResponse:
    request.session.clear()
    return PlainTextResponse("signed out")


async def write(request: Request) -> PlainTextResponse:
    repo.write(request.path_params["value"])
    return PlainTextResponse("written")


async def read(request: Request) -> PlainTextResponse:
    return PlainTextResponse(repo.read())


# Public routes whose page depends on who asks: readscale must keep them out of shared caches.
@http_policy(HttpPolicy.public(60))
async def theme(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"theme {request.cookies.get('theme', 'light')}")


@http_policy(HttpPolicy.public(60))
async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello {request.session.get('user', 'nobody')}")


@http_policy(HttpPolicy.public(60))
async def signed(request: Request) -> PlainTextResponse:
    return PlainTextResponse("signed" if "authorization" in request.headers else "anonymous")


@http_policy(HttpPolicy.public(60))
async def has_cookie(request: Request) -> PlainTextResponse:
    return PlainTextResponse("cookie" if "cookie" in request.headers else "none")


app.router.routes.extend(
    [
        Route("/theme", theme),
        Route("/hello", hello),
        Route("/signed", signed),
        Route("/has-cookie", has_cookie),
        Route("/catalog", catalog, name="catalog"),
        Route("/link", link),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/write/{value}", write, methods=["POST"]),
        Route("/read", read),
    ]
)
