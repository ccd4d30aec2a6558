"""Run inside a fresh interpreter (Django settings are process-wide): python -m tests.django.replicaapp.run.

Reads the stack's ports from RS_PORTS (JSON: alias -> port) and prints one JSON object of
observations for tests/django/test_replicas.py to assert on.
"""

from __future__ import annotations

import json
import os
import sys
import time

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


def write(request: HttpRequest, value: str) -> HttpResponse:
    from tests.django.replicaapp.models import Item

    Item.objects.filter(id=1).update(value=value)
    return JsonResponse({"wrote": value})


def read(request: HttpRequest) -> HttpResponse:
    from tests.django.replicaapp.models import Item

    item = Item.objects.filter(id=1).first()
    return JsonResponse({"value": None if item is None else item.value})


urlpatterns = [path("write/<str:value>", write), path("read", read)]

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    USE_TZ=True,
    INSTALLED_APPS=["tests.django.replicaapp"],
    DATABASES=DATABASES,
    DATABASE_ROUTERS=["readscale.django.ReplicaDatabaseRouter"],
    READSCALE_REPLICA_SETTINGS=replica_settings(DATABASES, replicas=["r1", "r2"], wait_budget=0.05, seed=1),
    READSCALE_TOKEN_SECRET="a django test secret, long enough",
    READSCALE_TOKEN_SECURE=False,
    # Replacing a bad token with a live one after a read is what "advance" stores; the
    # default ("session") only clears it (tests/http/test_stacks.py covers the default).
    READSCALE_TOKEN_PERSIST="advance",
    MIDDLEWARE=["readscale.django.CausalTokenMiddleware"],
    ROOT_URLCONF=__name__,
)
django.setup()

from django.db import connections, router, transaction  # noqa: E402
from django.test import Client  # noqa: E402

from readscale import TokenSigner, causal_context  # noqa: E402
from readscale.django import shared_router  # noqa: E402
from readscale.replicas import CausalToken  # noqa: E402
from tests.django.replicaapp.models import Item  # noqa: E402


def replay(alias: str, paused: bool) -> None:
    with connections[alias].cursor() as cur:
        cur.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")


def caught_up() -> None:
    token = shared_router().default_context.token
    for _ in range(500):
        shared_router().poll()
        if all(s.replay_lsn is not None and token and s.replay_lsn >= token.lsn for s in shared_router().status()[1:]):
            return
    raise SystemExit("replicas never caught up")


def bad_tokens() -> dict[str, dict[str, object]]:
    """Every kind of bad token, as a cookie and as a header: what the response was."""
    signer = TokenSigner(settings.READSCALE_TOKEN_SECRET)
    with connections["default"].cursor() as cur:
        cur.execute("SELECT system_identifier FROM pg_control_system()")
        live = int(cur.fetchone()[0]) % (1 << 64)
    now = time.time()
    genuine = signer.dumps(CausalToken(live, 1, 0x5000), now=now)
    cases = {
        "tampered": genuine.replace(".5000.", ".5001."),
        "expired": signer.dumps(CausalToken(live, 1, 0x5000), now=now - 30 * 86400),
        "other_secret": TokenSigner("another secret, just as long!!").dumps(CausalToken(live, 1, 0x5000), now=now),
        "other_cluster": signer.dumps(CausalToken(42, 1, 0xFFFFFFFF), now=now),
        "other_timeline": signer.dumps(CausalToken(live, 7, 0xFFFFFFFF), now=now),
        "garbage": "rs1.\u00e9;\\x" * 30,
    }
    seen: dict[str, dict[str, object]] = {}
    for name, token in cases.items():
        browser = Client()
        browser.cookies["readscale_token"] = token
        by_cookie = browser.get("/read")
        by_header = Client().get("/read", headers={"Readscale-Token": token})
        stored = by_cookie.cookies["readscale_token"].value if "readscale_token" in by_cookie.cookies else None
        answered = by_header.get("Readscale-Token")
        carried = [signer.loads(t, now=time.time()) for t in (stored, answered)]
        seen[name] = {
            "statuses": [by_cookie.status_code, by_header.status_code],
            "values": [by_cookie.json()["value"], by_header.json()["value"]],
            "replaced_with_live": [c is not None and c.token.system_identifier == live for c in carried],
        }
    return seen


def main() -> None:
    out: dict[str, object] = {}
    with connections["default"].schema_editor() as editor:
        editor.execute("DROP TABLE IF EXISTS django_probe")
        editor.create_model(Item)
    Item.objects.create(id=1, value="initial")
    caught_up()
    replay("r1", True)
    replay("r2", True)
    try:
        with causal_context() as ctx:
            Item.objects.filter(id=1).update(value="autocommit")
            out["token_after_autocommit_write"] = ctx.token is not None
            out["read_after_autocommit_write"] = Item.objects.get(id=1).value
            before = ctx.token
            with transaction.atomic():
                Item.objects.filter(id=1).update(value="atomic")
                out["read_inside_atomic"] = Item.objects.get(id=1).value
                out["token_moved_before_commit"] = ctx.token != before
            out["token_moved_after_commit"] = ctx.token != before
            out["read_after_atomic"] = Item.objects.get(id=1).value
        with causal_context():
            out["stranger_reads"] = Item.objects.get(id=1).value
        out["migrate_on_replica"] = router.allow_migrate("r1", "replicaapp")
        out["migrate_on_primary"] = router.allow_migrate("default", "replicaapp")

        client = Client()
        client.get("/write/browser")
        out["browser_read"] = client.get("/read").json()["value"]
        out["stranger_http_read"] = Client().get("/read").json()["value"]
        forged = Client()
        bad = "rs1.1.1.ffff.-.1800000000.AAAAAAAAAAAAAAAAAAAAAA"
        forged.cookies["readscale_token"] = bad
        response = forged.get("/read")
        out["forged_status"] = response.status_code
        out["forged_value_read"] = response.json()["value"]
        replaced = response.cookies["readscale_token"].value
        out["forged_cookie_replaced"] = replaced not in ("", bad) and replaced.startswith("rs1.")
        out["bad_tokens"] = bad_tokens()
        stats = shared_router().stats()
        out["primary_reads"] = stats.primary_reads
        out["replica_reads"] = stats.replica_reads
    finally:
        replay("r1", False)
        replay("r2", False)
        shared_router().close()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
