"""The Django application of a consistency service process: its settings (replica
router, causal-token middleware, this module as the URLconf), the row's model, and the
views ``GET /dj/r`` and ``POST /dj/w`` over the process's :class:`Service`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from readscale.bench.consistency.config import ServiceConfig, pg_parts
from readscale.bench.consistency.served import SERVED, note_loaded, read_context

if TYPE_CHECKING:
    from readscale.bench.consistency.service import Service

__all__ = ["configure_django", "django_views", "urlpatterns"]

urlpatterns: list[Any] = []  # Django's URLconf (filled once Django is configured)


def configure_django(config: ServiceConfig) -> Any:
    """Django's settings, its router and middleware, and the row's model (settings are
    process-wide: this runs once, before anything imports the ORM)."""
    import django
    from django.conf import settings

    from readscale.django import replica_settings

    databases = {}
    for alias, dsn in {"default": config.primary, **config.replicas}.items():
        parts = pg_parts(dsn)
        databases[alias] = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": parts["dbname"],
            "USER": parts["user"],
            "HOST": parts["host"],
            "PORT": parts["port"],
        }
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        INSTALLED_APPS=["readscale.bench"],
        DATABASES=databases,
        DATABASE_ROUTERS=["readscale.django.ReplicaDatabaseRouter"],
        READSCALE_REPLICA_SETTINGS=replica_settings(
            databases, replicas=list(config.replicas), wait_budget=config.wait_budget, max_pool_size=4
        ),
        READSCALE_TOKEN_SECRET=config.secret,
        READSCALE_TOKEN_SECURE=False,
        MIDDLEWARE=["readscale.django.CausalTokenMiddleware"],
        ROOT_URLCONF=__name__,
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.db import models

    class Item(models.Model):  # type: ignore[misc]
        id = models.IntegerField(primary_key=True)
        version = models.BigIntegerField()

        class Meta:
            app_label = "bench"
            db_table = config.table
            managed = False

    return Item


def django_views(service: Service, item: Any) -> list[Any]:
    """The views of ``/dj/``: reads with the ORM or the sync cache, writes with the ORM's
    connection, invalidating through the sync cache."""
    from django.db import connections, transaction
    from django.http import HttpRequest, JsonResponse
    from django.urls import path

    from readscale._shared.replicas.causal_context import current_context
    from readscale.errors import CacheUnavailableError, ReadscaleError

    config = service.config

    def position() -> int | None:
        context = current_context()
        token = context.token if context is not None else None
        return None if token is None else token.lsn

    def orm_version(key: int) -> int:
        note_loaded()
        version = item.objects.filter(id=key).values_list("version", flat=True).first()
        assert version is not None
        return int(version)

    def read(request: HttpRequest) -> JsonResponse:
        key = int(request.GET["k"])
        api = request.GET.get("api", "django")
        served: dict[str, Any] = {}
        reset = SERVED.set(served)
        try:
            with read_context(config.sabotage):
                if api == "dj_cache":
                    version = int(service.sync_cache.get_or_load(f"item:{key}", lambda: orm_version(key)))
                else:
                    version = item.objects.filter(id=key).values_list("version", flat=True).first()
        except ReadscaleError as exc:
            return JsonResponse({"error": f"{type(exc).__name__}: {exc}"}, status=503)
        finally:
            SERVED.reset(reset)
        return JsonResponse({"v": version, "loaded": bool(served.get("loaded")), "pos": position(),
                             "proc": config.name})  # fmt: skip

    def write(request: HttpRequest) -> JsonResponse:
        key = int(request.GET["k"])
        invalidate = request.GET.get("inv", "app") == "app"
        try:
            if request.GET.get("orm") == "1":  # the ORM, in a transaction (the position is learned on commit)
                with transaction.atomic():
                    row = item.objects.select_for_update().get(id=key)
                    row.version += 1
                    row.save(update_fields=["version"])
                    version = int(row.version)
            else:  # raw SQL on the primary alias, autocommit
                with connections["default"].cursor() as cursor:
                    update = f"UPDATE {config.table} SET version = version + 1 WHERE id = %s RETURNING version"
                    cursor.execute(update, [key])
                    version = int(cursor.fetchone()[0])
        except ReadscaleError as exc:
            return JsonResponse({"error": f"{type(exc).__name__}: {exc}"}, status=503)
        out: dict[str, Any] = {"v": version, "inv": False, "pos": position(), "proc": config.name}
        if invalidate:
            keys = (f"item:{key}", f"pitem:{key}", f"citem:{key}")
            try:
                if "tombstone" in config.sabotage:  # the textbook delete: no lease, no tombstone
                    service.sync_cache.delete_many(keys)
                else:
                    service.sync_cache.invalidate(*keys, lsn=position())
                service.sync_cache.invalidate_tags(f"t:{key}")
                out["inv"] = True
            except CacheUnavailableError as exc:
                out["error"] = str(exc)
        return JsonResponse(out)

    from django.views.decorators.csrf import csrf_exempt

    return [path("dj/r", read), path("dj/w", csrf_exempt(write))]
