"""Run inside a fresh interpreter: python -m tests.django.replicaapp.monotonic SCENARIO.

Monotonic reads through the Django database router and middleware (issue 12, defect 1),
in the scenario of tests/replica_helpers.py (the caller prepared the table and the late
read function and delays r2). Reads RS_PORTS (JSON: alias -> port) and prints the
history's summary as one JSON object for tests/django/test_replicas_monotonic.py.

Scenarios:
- ``router``: one causal context per thread; a late ORM read, then a plain one.
- ``middleware``: a browser per thread (Django's test client, cookies kept) that signed
  in (a write: its session keeps a token); a request whose ORM read is late, then a
  request that reads.
- ``atomic``: a read inside ``transaction.atomic()`` (it stays on the primary), then a
  plain read routed to a replica.
- ``hooks``: which statements leave their node unsettled, and what settles it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from readscale.django import replica_settings

PORTS: dict[str, int] = json.loads(os.environ["RS_PORTS"])
DATABASES = {
    alias: {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": port,
    }
    for alias, port in PORTS.items()
}


def late_read() -> tuple[Any, Any]:
    """An ORM read whose snapshot is taken LATE seconds after the router routed it."""
    from django.db.models.expressions import RawSQL

    from tests.django.replicaapp.models import Counter
    from tests.replica_helpers import LATE, LATE_READ_FUNCTION

    row = (
        Counter.objects.filter(id=0)
        .annotate(late=RawSQL(f"{LATE_READ_FUNCTION}(%s)", (LATE,)), port=RawSQL("inet_server_port()", ()))
        .values_list("late", "port")
        .get()
    )
    return row[0], row[1]


def quick_read() -> tuple[Any, Any]:
    from django.db.models.expressions import RawSQL

    from tests.django.replicaapp.models import Counter

    row = Counter.objects.filter(id=0).annotate(port=RawSQL("inet_server_port()", ())).values_list("n", "port").get()
    return row[0], row[1]


def late_view(request: HttpRequest) -> HttpResponse:
    n, port = late_read()
    return JsonResponse({"n": n, "port": port})


def read_view(request: HttpRequest) -> HttpResponse:
    n, port = quick_read()
    return JsonResponse({"n": n, "port": port})


def sign_in_view(request: HttpRequest) -> HttpResponse:
    """Any write starts a session that keeps its token (the middleware's default persist)."""
    from tests.django.replicaapp.models import Counter

    Counter.objects.filter(id=-1).update(n=0)
    return JsonResponse({})


urlpatterns = [path("late", late_view), path("read", read_view), path("sign-in", sign_in_view)]

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    USE_TZ=True,
    INSTALLED_APPS=["tests.django.replicaapp"],
    DATABASES=DATABASES,
    DATABASE_ROUTERS=["readscale.django.ReplicaDatabaseRouter"],
    READSCALE_REPLICA_SETTINGS=replica_settings(
        DATABASES, replicas=["r1", "r2"], wait_budget=1.0, seed=1, max_pool_size=20, poll_interval=0.05
    ),
    READSCALE_TOKEN_SECRET="a django test secret, long enough",
    READSCALE_TOKEN_SECURE=False,
    MIDDLEWARE=["readscale.django.CausalTokenMiddleware"],
    ROOT_URLCONF=__name__,
)
django.setup()

from django.db import connections, transaction  # noqa: E402
from django.test import Client  # noqa: E402

from readscale import causal_context  # noqa: E402
from readscale.django import shared_router  # noqa: E402
from tests.replica_helpers import LATE, Targets, monotonic_sessions_in_threads  # noqa: E402


def hooks() -> dict[str, Any]:
    """A statement on a replica alias marks it; a read on the primary alias marks the
    primary; the commit of a write settles both (its position bounds them)."""
    from tests.django.replicaapp.models import Counter

    router = shared_router()
    out: dict[str, Any] = {}
    with causal_context() as ctx:
        Counter.objects.filter(id=0).exists()  # an app's first query sets Django's routers up
        router.settle()
        with connections["r1"].cursor() as cur:
            cur.execute("SELECT 1")
        out["replica_statement"] = sorted(ctx.unsettled(router))
        router.settle()
        out["after_settle"] = sorted(ctx.unsettled(router))
        with connections["default"].cursor() as cur:
            cur.execute("SELECT 1")
        out["primary_read"] = sorted(ctx.unsettled(router))
        with connections["r2"].cursor() as cur:
            cur.execute("SELECT 1")
        Counter.objects.filter(id=-1).update(n=0)
        out["after_write"] = sorted(ctx.unsettled(router))
    out["settles"] = router.stats().settles - 1
    return out


def scenario(name: str) -> dict[str, Any]:
    if name == "hooks":
        return hooks()
    clients: dict[int, Client] = {}

    def closing(call: Any) -> Any:
        def run(i: int) -> tuple[Any, Any]:
            try:
                return call(i)
            finally:
                connections.close_all()

        return run

    if name == "router":
        first, second, scope = (lambda i: late_read()), (lambda i: quick_read()), causal_context
    elif name == "atomic":

        def inside_atomic(i: int) -> tuple[Any, Any]:
            with transaction.atomic():
                time.sleep(LATE)
                return quick_read()

        first, second, scope = inside_atomic, (lambda i: quick_read()), causal_context
    elif name == "middleware":

        def get(i: int, where: str) -> tuple[Any, Any]:
            browser = clients.get(i)
            if browser is None:
                browser = clients[i] = Client()
                assert browser.get("/sign-in").status_code == 200
            body = browser.get(where).json()
            return body["n"], body["port"]

        first, second, scope = (lambda i: get(i, "/late")), (lambda i: get(i, "/read")), None
    else:
        raise SystemExit(f"unknown scenario {name!r}")
    history = monotonic_sessions_in_threads(
        Targets.from_ports(PORTS), closing(first), closing(second), scope=scope or contextlib.nullcontext
    )
    stats = shared_router().stats()
    return {
        "settles": getattr(stats, "settles", None),  # None before the counter existed
        "reads": len(history.reads),
        "go_backs": len(history.go_backs()),
        "would_go_back": history.would_go_back(),
        "summary": history.summary(),
        "primary_reads": stats.primary_reads,
        "replica_reads": stats.replica_reads,
    }


def main() -> None:
    try:
        out = scenario(sys.argv[1])
    finally:
        if connections:
            connections.close_all()
        shared_router().close()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
