"""``NO_VALUE``: the one marker for "nothing cached here", distinct from a cached None.

None, 0, ``b""`` and "not found" are legitimate cached values (negative caching), so a
miss cannot be spelt as any of them. dogpile.cache's ``NO_VALUE`` is the model. It is an
enum member so ``mypy`` narrows ``value is NO_VALUE`` checks; compare with ``is``, never
by truth value.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["NO_VALUE", "NoValue"]


class NoValue(enum.Enum):
    """The type of :data:`NO_VALUE` (a single-member enum, for exhaustive narrowing)."""

    NO_VALUE = "NO_VALUE"

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE: Final = NoValue.NO_VALUE
