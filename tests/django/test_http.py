"""The Django integration, in process: the same rules as tests/starlette/test_http.py."""

from __future__ import annotations


def django_client():  # type: ignore[no-untyped-def]
    from tests.http.stacks.django_app import configure

    configure()  # the recommended stack, sessions on (Django's settings are process-wide)
    from django.test import Client

    return Client()


def test_django_same_rules() -> None:
    client = django_client()
    r = client.get("/lang", headers={"accept-language": "it"})
    assert r.content == b"it"
    assert r["Cache-Control"] == "public, max-age=60" and r["Vary"] == "Accept-Language"
    assert r["xkey"] == "lang"
    assert client.get("/lang", headers={"if-none-match": r["ETag"], "accept-language": "it"}).status_code == 304
    assert client.get("/lang", headers={"if-none-match": "bad"}).status_code == 400
    cookie = client.get("/lang", headers={"cookie": "csrftoken=abcdefghijklmnopqrstuvwxyz012345; _ga=GA1.1"})
    assert cookie["Cache-Control"] == "public, max-age=60", "sessions on, an anonymous reader's page stays public"
    me = client.get("/me", headers={"cookie": "sessionid=abc"})
    assert me["Cache-Control"] == "private, max-age=0" and "Cookie" in me["Vary"]
    assert client.get("/plain")["Cache-Control"] == "private, no-cache"
    v = client.get("/v")
    again = client.get("/v", headers={"if-none-match": v["ETag"]})
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == v["ETag"]
