"""The WSGI (Flask) integration, in process: the same rules as tests/starlette/test_http.py."""

from __future__ import annotations

from readscale.http import HttpPolicy

PUBLIC = HttpPolicy.public(60, edge_max_age=300)
LANG = HttpPolicy.public(60, edge_max_age=300, vary=("accept-language",))


def flask_client():  # type: ignore[no-untyped-def]
    from flask import Flask, request

    import readscale.flask as rs_flask
    from readscale.flask import HttpCacheMiddleware as WsgiMiddleware

    app = Flask("readscale-test")

    @app.get("/lang")
    @rs_flask.http_policy(LANG)
    def flask_lang() -> str:
        return request.headers.get("Accept-Language", "en")

    @app.get("/login")
    @rs_flask.http_policy(PUBLIC)
    def flask_login():  # type: ignore[no-untyped-def]
        from flask import make_response

        response = make_response("hi")
        response.set_cookie("session", "x")
        return response

    @app.get("/none")
    def flask_none() -> str:
        return "no policy"

    @app.get("/v")
    @rs_flask.http_policy(PUBLIC)
    def flask_versioned() -> str:
        rs_flask.add_tags("v")
        rs_flask.check_not_modified(etag_from=3)
        return "rendered"

    app.wsgi_app = WsgiMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app.test_client()


def test_flask_same_rules() -> None:
    client = flask_client()
    r = client.get("/lang", headers={"Accept-Language": "de"})
    assert r.text == "de" and r.headers["Vary"] == "Accept-Language"
    assert r.headers["Cache-Control"] == "public, max-age=60" and r.headers["CDN-Cache-Control"] == "max-age=300"
    assert client.get("/lang", headers={"If-None-Match": r.headers["ETag"], "Accept-Language": "de"}).status_code == 304
    login = client.get("/login")
    assert login.headers["Cache-Control"] == "private, no-cache" and "Set-Cookie" in login.headers
    assert client.get("/none").headers["Cache-Control"] == "private, no-cache"
    assert client.get("/lang", headers={"If-None-Match": "nope"}).status_code == 400
    v = client.get("/v")
    assert v.text == "rendered" and v.headers["xkey"] == "v"
    again = client.get("/v", headers={"If-None-Match": v.headers["ETag"]})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == v.headers["ETag"]
