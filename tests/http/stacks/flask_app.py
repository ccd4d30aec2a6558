"""Flask, with sessions (a secret_key), composed as docs/http.md says."""

from __future__ import annotations

from flask import Flask, request, session, url_for

# --- snippet: flask ---
from readscale.flask import CausalTokenMiddleware, HttpCacheMiddleware, check_not_modified, http_policy
from readscale.http import HttpPolicy, HttpSettings
from tests.http.stacks._repo import SECRET, repo, signer

app = Flask(__name__)
app.secret_key = SECRET  # sessions on: Werkzeug walks every request field to parse cookies


@app.get("/greeting")
@http_policy(HttpPolicy.public(60, edge_max_age=600, vary=("accept-language",)))
def greeting() -> tuple[str, dict[str, str]]:
    check_not_modified(etag_from=repo.version)  # a 304 before rendering, one per language
    lang, text = repo.greeting(request.headers.get("Accept-Language"))
    return text, {"Content-Language": lang}


@app.get("/account")
@http_policy(HttpPolicy.private(0))  # per user: varies on Cookie and Authorization, its ETag too
def account() -> str:
    return f"account of {session.get('user', 'nobody')}"


# The HTTP layer outermost: it sees every Set-Cookie, the token's and the session's.
app.wsgi_app = HttpCacheMiddleware(  # type: ignore[method-assign]
    CausalTokenMiddleware(app.wsgi_app, signer=signer),  # secure="auto": Secure over https only
    settings=HttpSettings(edge="varnish"),
)
# --- end snippet ---


@app.get("/catalog")
@http_policy(HttpPolicy.public(60))
def catalog() -> str:
    return f"catalog: {repo.read()}"


@app.get("/link")
@http_policy(HttpPolicy.public(60))
def link() -> str:
    return url_for("catalog", _external=True)


@app.post("/login")
def login() -> str:
    session["user"] = request.args.get("user", "alice")
    return "signed in"


@app.post("/logout")
def logout() -> str:
    session.clear()
    return "signed out"


@app.post("/write/<value>")
def write(value: str) -> str:
    repo.write(value)
    return "written"


@app.get("/read")
def read() -> str:
    return repo.read()


# Public routes whose page depends on who asks: readscale must keep them out of shared caches.
@app.get("/theme")
@http_policy(HttpPolicy.public(60))
def theme() -> str:
    return f"theme {request.cookies.get('theme', 'light')}"


@app.get("/hello")
@http_policy(HttpPolicy.public(60))
def hello() -> str:
    return f"hello {session.get('user', 'nobody')}"


@app.get("/signed")
@http_policy(HttpPolicy.public(60))
def signed() -> str:
    return "signed" if "authorization" in request.headers else "anonymous"


@app.get("/has-cookie")
@http_policy(HttpPolicy.public(60))
def has_cookie() -> str:
    return "cookie" if "cookie" in request.headers else "none"
