"""Django, with sessions (SessionMiddleware, CSRF), composed as docs/http.md says.

``configure()`` sets the process's Django settings (once; Django's are process-wide)
and ``application`` is the ASGI app for uvicorn. The URL patterns include those of
tests/django/urls.py, so every Django test in a process shares one configuration.
"""

from __future__ import annotations

from typing import Any

# --- snippet: django-settings ---
from readscale.http import HttpSettings
from tests.http.stacks._repo import SECRET, repo

MIDDLEWARE = [
    "readscale.django.HttpCacheMiddleware",  # first: outermost, sees every Set-Cookie
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "readscale.django.CausalTokenMiddleware",  # READSCALE_TOKEN_SECURE: "auto" by default
]
# CommonMiddleware reads User-Agent on every request (Django's cookie reads, sessions and CSRF, are
# recognised). A view that touches the session gets Django's own Vary: Cookie: private to its user.
READSCALE_HTTP = HttpSettings(edge="varnish", framework_reads={"user-agent"})
READSCALE_TOKEN_SECRET = SECRET  # from the environment in a real deployment
# --- end snippet ---


def configure() -> None:
    import django
    from django.conf import settings

    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        ROOT_URLCONF="tests.http.stacks.django_urls",
        MIDDLEWARE=MIDDLEWARE,
        READSCALE_HTTP=READSCALE_HTTP,
        READSCALE_TOKEN_SECRET=READSCALE_TOKEN_SECRET,
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",  # no database in these apps
        ALLOWED_HOSTS=["*"],
        SECRET_KEY=SECRET,
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()


def application_factory() -> Any:
    configure()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def __getattr__(name: str) -> Any:
    if name == "application":  # uvicorn tests.http.stacks.django_app:application
        return application_factory()
    raise AttributeError(name)


__all__ = ["configure", "repo"]
