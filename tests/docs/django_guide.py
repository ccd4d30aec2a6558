"""docs/guides/django.md's two blocks as one Django process: run in a fresh interpreter
(Django's settings are process-wide) by tests/docs/test_snippets.py.

``python -m tests.docs.django_guide`` with RS_PORTS (JSON: primary, r1, r2) and
RS_REDIS_URL in the environment; prints one JSON object of what a session saw.
"""

from __future__ import annotations

import json
import os
import sys
import types
from typing import Any

import django
from django.conf import settings
from django.test import Client

from readscale.django import shared_router
from tests.docs.test_snippets import run_sync

SETTINGS = "docs/guides/django.md#settings-replicas-the-causal-token-http-caching"
VIEWS = "docs/guides/django.md#the-cache-and-the-replicas-in-a-view"


def main() -> None:
    ports = json.loads(os.environ["RS_PORTS"])
    ns = run_sync(SETTINGS, {"PRIMARY_PORT": ports["primary"], "R1_PORT": ports["r1"], "R2_PORT": ports["r2"]})
    settings.configure(
        **{name: value for name, value in ns.items() if name.isupper()},
        ROOT_URLCONF="docs_django_views",
        ALLOWED_HOSTS=["*"],
        SECRET_KEY="the docs' Django guide: tests only",
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",  # no session table here
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()
    views = run_sync(VIEWS, {"REDIS_URL": os.environ["RS_REDIS_URL"]})
    urlconf = types.ModuleType("docs_django_views")
    urlconf.urlpatterns = views["urlpatterns"]  # type: ignore[attr-defined]
    sys.modules["docs_django_views"] = urlconf
    client = Client()
    seen: list[dict[str, Any]] = []
    try:
        for method, url in (("get", "/items/1"), ("post", "/items/1/price?price=9"), ("get", "/items/1")):
            response = getattr(client, method)(url)
            seen.append(
                {
                    "status": response.status_code,
                    "json": response.json() if response.status_code == 200 else response.content.decode()[:2000],
                    "cache_control": response.get("Cache-Control", ""),
                    "set_cookie": "readscale_token" in response.cookies,
                }
            )
    finally:
        views["cache"].close()
        shared_router().close()  # its observer thread would keep the process alive
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
