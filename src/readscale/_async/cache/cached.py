"""The typed ``@cached`` decorator: read-through caching of a function by a key template.

    @cache.cached("user:{user_id}:profile", policy=PROFILE)
    async def load_profile(user_id: int) -> Profile: ...

The key is built from the call's arguments (bound to the signature, defaults applied);
every template field must be a parameter, checked when the function is decorated. The
return annotation is the decode type, so the function returns a ``Profile`` from the
cache too, not a dict.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from readscale._core.cache.keys import format_key, template_fields
from readscale._core.cache.policy import CachePolicy
from readscale.codecs import Codec
from readscale.errors import ConfigurationError

if TYPE_CHECKING:
    from readscale._async.cache.cache import AsyncCache

P = ParamSpec("P")
T = TypeVar("T")


def _return_type(fn: Callable[..., Any]) -> Any:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: decode untyped
        return Any
    hint = hints.get("return", Any)
    origin = typing.get_origin(hint)
    if origin is not None and origin in (Awaitable, typing.Coroutine):
        args = typing.get_args(hint)
        return args[-1] if args else Any
    return hint


class AsyncCachedFunction(Generic[P, T]):
    """A function whose results are cached under a key built from its arguments."""

    def __init__(
        self,
        cache: AsyncCache,
        fn: Callable[P, Awaitable[T]],
        template: str,
        policy: CachePolicy | None,
        codec: Codec | None,
    ) -> None:
        self._cache = cache
        self._fn = fn
        self._template = template
        self._policy = policy
        self._signature = inspect.signature(fn)
        self._fields = template_fields(template)
        missing = [f for f in self._fields if f not in self._signature.parameters]
        if missing:
            raise ConfigurationError(
                f"key template {template!r} uses {', '.join(missing)}, which {fn.__qualname__} does not take"
            )
        self._codec = (codec or cache.codec).typed(_return_type(fn))
        functools.update_wrapper(self, fn)

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The cache key of a call with these arguments."""
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return format_key(self._template, {name: bound.arguments[name] for name in self._fields})

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        key = self.key(*args, **kwargs)

        async def load() -> T:
            return await self._fn(*args, **kwargs)

        return await self._cache.get_or_load(key, load, policy=self._policy, codec=self._codec)

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Invalidate the cached result of a call with these arguments, as
        :meth:`AsyncCache.invalidate` does: entry and fill rights removed, a tombstone,
        every process's L1 copy dropped over the bus. The change's position is unknown
        here, so fills of this key read the primary while the tombstone stands: use
        :meth:`invalidate_at` when you know it. True if an entry existed."""
        return await self._cache.invalidate(self.key(*args, **kwargs), policy=self._policy) > 0

    async def invalidate_at(self, lsn: int | None, /, *args: P.args, **kwargs: P.kwargs) -> bool:
        """:meth:`invalidate` with the change's WAL position ``lsn`` (e.g.
        ``router.context.token.lsn`` after ``router.write()``): fills then read any
        replica that has replayed it."""
        return await self._cache.invalidate(self.key(*args, **kwargs), policy=self._policy, lsn=lsn) > 0

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call the function now and cache its result. This is a read, not a write: it runs
        as a fill (a ticket taken before the call, the fill's floor and staleness bound),
        so a recomputation from a lagging replica cannot replace a newer entry."""

        async def load() -> T:
            return await self._fn(*args, **kwargs)

        return await self._cache.refill(self.key(*args, **kwargs), load, policy=self._policy, codec=self._codec)

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return functools.partial(self.__call__, instance)  # type: ignore[arg-type]
