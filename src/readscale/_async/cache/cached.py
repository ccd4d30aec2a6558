"""The typed ``@cached`` decorator: read-through caching of a function by a key template.

    @cache.cached("user:{user_id}:profile", policy=PROFILE)
    async def load_profile(user_id: int) -> Profile: ...

The key is built from the call's arguments (bound to the signature, defaults applied);
every template field must be a parameter, checked when the function is decorated. The
return annotation is the decode type, so the function returns a ``Profile`` from the
cache too, not a dict (``readscale.codecs``: dataclasses, msgspec Structs, attrs classes,
pydantic models, ``dict[int, str]``, sets, tuples...).

On a method the decorated function is a descriptor: ``obj.load`` is an
:class:`AsyncBoundCachedFunction` whose call, ``key``, ``invalidate``, ``invalidate_at``
and ``refresh`` take the arguments after ``self`` (left out of the key unless the
template names it). On a classmethod, put ``@cache.cached`` above ``@classmethod``:
``Model.load`` is then bound to the class. Both keep their types under ``mypy --strict``
(``tests/cache/test_cached_types.py``).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from readscale._core.cache.keys import format_key, template_fields
from readscale._core.cache.policy import CachePolicy
from readscale.codecs import Codec
from readscale.errors import ConfigurationError

if TYPE_CHECKING:
    from readscale._async.cache.cache import AsyncCache

P = ParamSpec("P")
Q = ParamSpec("Q")
S = TypeVar("S")
T = TypeVar("T")
C = TypeVar("C")


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

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Self: ...

    @overload
    def __get__(
        self: AsyncCachedFunction[Concatenate[S, Q], T], instance: S, owner: type | None = None
    ) -> AsyncBoundCachedFunction[Q, T]: ...

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return AsyncBoundCachedFunction(self, instance)


class AsyncCachedClassMethod(Generic[C, P, T]):
    """``@cache.cached`` over ``@classmethod``: reached through the class or an instance, the
    function bound to the class (as a classmethod binds ``cls``), with its helpers.

    Typed for mypy, which shows the decorator a classmethod as a plain function whose first
    parameter is ``type[C]``: a cached *function* taking ``type[C]`` first is typed as this
    too (it is an :class:`AsyncCachedFunction` at run time), so its call and helpers take
    ``cls`` explicitly when not reached through a class, as they do here."""

    def __init__(self, function: AsyncCachedFunction[Any, T]) -> None:
        self._function = function
        self.__wrapped__ = function
        self.__doc__ = function.__doc__

    def __get__(self, instance: object, owner: type | None = None) -> AsyncBoundCachedFunction[P, T]:
        return AsyncBoundCachedFunction(self._function, owner if owner is not None else type(instance))

    def key(self, cls: type[C], /, *args: P.args, **kwargs: P.kwargs) -> str:
        return self._function.key(cls, *args, **kwargs)

    async def __call__(self, cls: type[C], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._function(cls, *args, **kwargs)

    async def invalidate(self, cls: type[C], /, *args: P.args, **kwargs: P.kwargs) -> bool:
        return await self._function.invalidate(cls, *args, **kwargs)

    async def invalidate_at(self, lsn: int | None, cls: type[C], /, *args: P.args, **kwargs: P.kwargs) -> bool:
        return await self._function.invalidate_at(lsn, cls, *args, **kwargs)

    async def refresh(self, cls: type[C], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._function.refresh(cls, *args, **kwargs)


class AsyncCachedDecorator:
    """What ``AsyncCache.cached(template)`` returns: decorates a function, a method or a
    classmethod (typed for each)."""

    def __init__(self, cache: AsyncCache, template: str, policy: CachePolicy | None, codec: Codec | None) -> None:
        self._args = (cache, template, policy, codec)

    @overload
    def __call__(self, fn: classmethod[C, P, Awaitable[T]]) -> AsyncCachedClassMethod[C, P, T]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[type[C], P], Awaitable[T]]) -> AsyncCachedClassMethod[C, P, T]: ...

    @overload
    def __call__(self, fn: Callable[P, Awaitable[T]]) -> AsyncCachedFunction[P, T]: ...

    def __call__(self, fn: Any) -> Any:
        cache, template, policy, codec = self._args
        if isinstance(fn, classmethod):
            return AsyncCachedClassMethod(AsyncCachedFunction(cache, fn.__func__, template, policy, codec))
        return AsyncCachedFunction(cache, fn, template, policy, codec)


class AsyncBoundCachedFunction(Generic[P, T]):
    """A cached method bound to its instance (or, under ``@classmethod``, its class): the
    function's call and helpers with ``self`` given."""

    __slots__ = ("__self__", "_function")

    def __init__(self, function: AsyncCachedFunction[Any, T], instance: object) -> None:
        self._function = function
        self.__self__ = instance

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The cache key of a call with these arguments."""
        return self._function.key(self.__self__, *args, **kwargs)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._function(self.__self__, *args, **kwargs)

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """:meth:`AsyncCachedFunction.invalidate` of this call."""
        return await self._function.invalidate(self.__self__, *args, **kwargs)

    async def invalidate_at(self, lsn: int | None, /, *args: P.args, **kwargs: P.kwargs) -> bool:
        """:meth:`AsyncCachedFunction.invalidate_at` of this call."""
        return await self._function.invalidate_at(lsn, self.__self__, *args, **kwargs)

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> T:
        """:meth:`AsyncCachedFunction.refresh` of this call."""
        return await self._function.refresh(self.__self__, *args, **kwargs)
