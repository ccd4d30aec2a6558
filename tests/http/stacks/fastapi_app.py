"""FastAPI, with sessions (Starlette's SessionMiddleware), composed as docs/http.md says."""

from __future__ import annotations

from fastapi import Cookie, FastAPI
from fastapi.responses import PlainTextResponse
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request

# --- snippet: fastapi ---
from readscale.http import HttpPolicy, HttpSettings
from readscale.starlette import CausalTokenMiddleware, HttpCacheMiddleware, check_not_modified, http_policy
from tests.http.stacks._repo import SECRET, repo, signer

app = FastAPI()


@app.get("/greeting", response_class=PlainTextResponse)
@http_policy(HttpPolicy.public(60, edge_max_age=600, vary=("accept-language",)))
async def greeting(request: Request) -> PlainTextResponse:
    check_not_modified(request, etag_from=repo.version)  # a 304 before rendering, one per language
    lang, text = repo.greeting(request.headers.get("accept-language"))
    return PlainTextResponse(text, headers={"content-language": lang})


@app.get("/account", response_class=PlainTextResponse)
@http_policy(HttpPolicy.private(0))  # per user: varies on Cookie and Authorization, its ETag too
async def account(request: Request) -> str:
    return f"account of {request.session.get('user', 'nobody')}"


app.add_middleware(SessionMiddleware, secret_key=SECRET)
app.add_middleware(CausalTokenMiddleware, signer=signer)  # secure="auto": Secure over https only
# Added last, so outermost: it sees every Set-Cookie. FastAPI's dependency solver and the
# sessions read Cookie on every request: readscale tells that plumbing from a handler's read.
app.add_middleware(HttpCacheMiddleware, settings=HttpSettings(edge="varnish"))
# --- end snippet ---


@app.get("/catalog", response_class=PlainTextResponse)
@http_policy(HttpPolicy.public(60))
async def catalog() -> str:
    return f"catalog: {repo.read()}"


@app.get("/link", response_class=PlainTextResponse)
@http_policy(HttpPolicy.public(60))
async def link(request: Request) -> str:
    return str(request.url_for("catalog"))


@app.post("/login", response_class=PlainTextResponse)
async def login(request: Request, user: str = "alice") -> str:
    request.session["user"] = user
    return "signed in"


@app.post("/logout", response_class=PlainTextResponse)
async def logout(request: Request) -> str:
    request.session.clear()
    return "signed out"


@app.post("/write/{value}", response_class=PlainTextResponse)
async def write(value: str) -> str:
    repo.write(value)
    return "written"


@app.get("/read", response_class=PlainTextResponse)
async def read() -> str:
    return repo.read()


# Public routes whose page depends on who asks: readscale must keep them out of shared caches.
@app.get("/theme", response_class=PlainTextResponse)
@http_policy(HttpPolicy.public(60))
async def theme(request: Request) -> str:
    return f"theme {request.cookies.get('theme', 'light')}"


@app.get("/theme-param", response_class=PlainTextResponse)
@http_policy(HttpPolicy.public(60))
async def theme_param(theme: str = Cookie("light")) -> str:
    return f"theme {theme}"


@app.get("/hello", response_class=PlainTextResponse)
@http_policy(HttpPolicy.public(60))
async def hello(request: Request) -> str:
    return f"hello {request.session.get('user', 'nobody')}"


@app.get("/signed", response_class=PlainTextResponse)
@http_policy(HttpPolicy.public(60))
async def signed(request: Request) -> str:
    return "signed" if "authorization" in request.headers else "anonymous"


@app.get("/has-cookie", response_class=PlainTextResponse)
@http_policy(HttpPolicy.public(60))
async def has_cookie(request: Request) -> str:
    return "cookie" if "cookie" in request.headers else "none"
