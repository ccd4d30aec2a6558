"""In-process store (the L1 tier). A simple bounded LRU with TTL; the tuned W-TinyLFU
store replaces this module (branch ``l1``)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Final


class _NoValue:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_VALUE"

    def __bool__(self) -> bool:
        return False


NO_VALUE: Final = _NoValue()


class MemoryStore:
    def __init__(
        self,
        max_entries: int = 10_000,
        max_bytes: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._data: OrderedDict[str, tuple[Any, float, int]] = OrderedDict()
        self.weight = 0

    def get(self, key: str) -> Any:
        item = self._data.get(key)
        if item is None:
            return NO_VALUE
        if item[1] <= self._clock():
            self.delete(key)
            return NO_VALUE
        return item[0]

    def set(self, key: str, value: Any, ttl: float | None, size: int = 1) -> None:
        self.delete(key)
        deadline = float("inf") if ttl is None else self._clock() + ttl
        self._data[key] = (value, deadline, size)
        self.weight += size
        while len(self._data) > self.max_entries or (self.max_bytes is not None and self.weight > self.max_bytes):
            _, (_, _, old) = self._data.popitem(last=False)
            self.weight -= old

    def delete(self, key: str) -> bool:
        item = self._data.pop(key, None)
        if item is None:
            return False
        self.weight -= item[2]
        return True

    def delete_many(self, keys: Iterable[str]) -> int:
        return sum(self.delete(k) for k in keys)

    def clear(self) -> None:
        self._data.clear()
        self.weight = 0

    def __len__(self) -> int:
        return len(self._data)
