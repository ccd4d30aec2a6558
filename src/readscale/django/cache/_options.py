"""What a ``CACHES`` entry's ``OPTIONS`` mean for readscale's Django cache backends, and
the one readscale :class:`~readscale.Cache` per process and configuration they share.

Django makes one backend object per thread (``django.core.cache.caches`` is thread
local) and a new one each time a test overrides ``CACHES``. The in-process tier, the
connection pools and the invalidation bus are per process, so every backend object of
one configuration uses one shared cache, built on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.crypto import salted_hmac

from readscale import Cache, InvalidationBus, MemoryStore
from readscale._core.cache.policy import OnMiss
from readscale.codecs import Codec, JsonCodec, MsgpackCodec, SignedPickleCodec
from readscale.settings import RedisSettings

#: The readscale prefix of every key a Django cache stores (``OPTIONS["PREFIX"]``).
DEFAULT_PREFIX = "rs:dj:"

SERIALIZERS = ("pickle", "json", "msgpack")

_KNOWN = frozenset(
    {"SERIALIZER", "SIGNING_KEY", "PREFIX", "L1_MAX_ENTRIES", "ON_MISS", "LOADER_SOURCE", "CLIENT", "BUS"}
)


@dataclass(frozen=True)
class Options:
    """The parsed ``OPTIONS`` of one ``CACHES`` entry (see the docs page "Django cache")."""

    serializer: str
    signing_key: str | None
    prefix: str
    l1_max_entries: int
    on_miss: OnMiss
    loader_source: str
    client: tuple[tuple[str, Any], ...]
    bus: bool


def parse_options(alias_backend: str, raw: Mapping[str, Any] | None) -> Options:
    """Read ``OPTIONS``; anything unknown or malformed is an ``ImproperlyConfigured`` that
    names the option and what it takes."""
    options = dict(raw or {})
    unknown = sorted(set(options) - _KNOWN)
    if unknown:
        raise ImproperlyConfigured(
            f"{alias_backend}: unknown OPTIONS {unknown}; readscale takes {sorted(_KNOWN)} "
            "(redis-py or memcached client settings go in OPTIONS['CLIENT'])"
        )
    serializer = options.get("SERIALIZER")
    if serializer not in SERIALIZERS:
        raise ImproperlyConfigured(
            f"{alias_backend}: OPTIONS['SERIALIZER'] must be named, one of {list(SERIALIZERS)} (got "
            f"{serializer!r}). 'pickle' stores any picklable object, as Django's cache contract "
            "expects (cache_page, cached sessions, django-cachalot), signed with a key derived from "
            "SECRET_KEY so that someone who can write to the cache server cannot make the app "
            "unpickle their bytes; 'json' / 'msgpack' store no pickle at all, and refuse other values"
        )
    l1 = options.get("L1_MAX_ENTRIES", 0)
    if not isinstance(l1, int) or isinstance(l1, bool) or l1 < 0:
        raise ImproperlyConfigured(f"{alias_backend}: OPTIONS['L1_MAX_ENTRIES'] is an int >= 0, got {l1!r}")
    on_miss = options.get("ON_MISS", "wait")
    try:
        on_miss_value = OnMiss(on_miss) if isinstance(on_miss, str) else OnMiss(on_miss.value)
    except (ValueError, AttributeError):
        raise ImproperlyConfigured(
            f"{alias_backend}: OPTIONS['ON_MISS'] is one of {[m.value for m in OnMiss]}, got {on_miss!r}"
        ) from None
    loader_source = options.get("LOADER_SOURCE", "declared")
    if loader_source not in ("declared", "primary"):
        raise ImproperlyConfigured(
            f"{alias_backend}: OPTIONS['LOADER_SOURCE'] is 'declared' or 'primary', got {loader_source!r}"
        )
    client = options.get("CLIENT", {})
    if not isinstance(client, Mapping):
        raise ImproperlyConfigured(f"{alias_backend}: OPTIONS['CLIENT'] is a dict, got {type(client).__name__}")
    prefix = options.get("PREFIX", DEFAULT_PREFIX)
    if not isinstance(prefix, str) or not prefix:
        raise ImproperlyConfigured(f"{alias_backend}: OPTIONS['PREFIX'] is a non-empty str, got {prefix!r}")
    signing_key = options.get("SIGNING_KEY")
    if signing_key is not None and not isinstance(signing_key, str):
        raise ImproperlyConfigured(f"{alias_backend}: OPTIONS['SIGNING_KEY'] is a str")
    return Options(
        serializer=serializer,
        signing_key=signing_key,
        prefix=prefix,
        l1_max_entries=l1,
        on_miss=on_miss_value,
        loader_source=loader_source,
        client=tuple(sorted(client.items())),
        bus=bool(options.get("BUS", l1 > 0)),
    )


def make_codec(alias_backend: str, options: Options) -> Codec:
    """The codec ``OPTIONS['SERIALIZER']`` names. Pickle is always signed: with
    ``SIGNING_KEY``, or a key derived from ``SECRET_KEY`` (every process of the site has it;
    a rotated ``SECRET_KEY`` turns old entries into misses, never into errors)."""
    if options.serializer == "json":
        return JsonCodec()
    if options.serializer == "msgpack":
        return MsgpackCodec()
    secret = options.signing_key
    if secret is None:
        if not django_settings.SECRET_KEY:
            raise ImproperlyConfigured(f"{alias_backend}: 'pickle' is signed with SECRET_KEY, which is empty")
        secret = salted_hmac("readscale.django.cache", "pickle", algorithm="sha256").hexdigest()
    return SignedPickleCodec(secret)


_shared: dict[tuple[Any, ...], Cache] = {}
_shared_lock = threading.Lock()


def shared_cache(kind: str, servers: tuple[str, ...], options: Options, build_backend: Any) -> Cache:
    """The one readscale cache of this process for ``(kind, servers, options)``."""
    key = (kind, servers, options)
    with _shared_lock:
        cache = _shared.get(key)
        if cache is None:
            backend = build_backend(servers, dict(options.client))
            bus = None
            if options.bus and kind in ("redis", "redis-cluster"):
                bus = InvalidationBus(RedisSettings(url=servers[0]))
            cache = Cache(
                backend,
                l1=MemoryStore(options.l1_max_entries) if options.l1_max_entries else None,
                bus=bus,
                prefix=options.prefix,
                loader_source=options.loader_source,  # type: ignore[arg-type]
                name=f"django:{kind}",
            )
            _shared[key] = cache
        return cache
