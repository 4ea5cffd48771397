"""``with obj:`` for the package's blocking objects that own resources: one mixin, not a copy of
``__enter__``/``__exit__`` in each of them."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

__all__ = ("ClosesOnExit",)

_Self = TypeVar("_Self", bound="ClosesOnExit")


class ClosesOnExit:
    """A mixin: ``with obj:`` gives *obj* and calls ``obj.close()`` when the block ends, however
    it ends (exceptions propagate unchanged)."""

    def close(self) -> None:
        """Release what the object owns (subclasses say what)."""
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
