"""Turn a conformance class's ``async def test_*`` methods into plain pytest tests.

Each test becomes a synchronous function that pytest calls with its fixtures and parameters; it
starts the event loop named by the ``anyio_backend`` fixture in a thread of its own (see
:mod:`._loops`) and awaits the method there. No async pytest plugin ever sees a coroutine of
the kit, so none can run it on the wrong loop: the kit behaves the same with anyio's plugin
alone and with pytest-asyncio in strict or auto mode, and a subclass marked
``@pytest.mark.asyncio`` changes nothing.

Two arguments are supplied by the kit, inside the test's loop, rather than by pytest:

``backend``
    an open handle on the test's run;
``open_backend``
    ``await open_backend(run_id=None)``: another handle (``None``: the test's run).

Every handle is closed when the test ends. Any other argument is a pytest fixture or parameter.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Protocol

import anyio
import pytest

from .._backend import AsyncRendezvousBackend
from ._loops import missing_loop, run_on_own_loop

__all__ = (
    "KIT_ARGUMENTS",
    "KitTestClass",
    "KitTests",
    "as_pytest_test",
    "convert_test_methods",
)

KIT_ARGUMENTS = ("backend", "open_backend")
"""Arguments of a kit test that the kit supplies inside the test's event loop."""

# pytest-asyncio warns once per test when a synchronous test carries its asyncio mark (a project
# marking its subclass, or a module, @pytest.mark.asyncio). The mark cannot change how a kit test
# runs, so the warning would only bury the results under dozens of identical lines.
_IGNORE_ASYNCIO_MARK = pytest.mark.filterwarnings(
    "ignore:The test .* is marked with '@pytest.mark.asyncio' but it is not an async function"
)


class KitTestClass(Protocol):
    """What :func:`as_pytest_test` needs from the class whose tests it runs."""

    async def _run_kit_test(
        self, body: Callable[..., Awaitable[None]], run_id: str, arguments: dict[str, Any]
    ) -> None:
        """Open the kit's arguments, await ``body(self, **arguments)``, close every handle."""


def as_pytest_test(body: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """The pytest test that runs the async method *body* on the kit's own loop."""
    parameters = list(inspect.signature(body).parameters.values())
    own = parameters[1:]  # after self
    wanted = {parameter.name for parameter in own}
    visible = [parameter for parameter in own if parameter.name not in KIT_ARGUMENTS]
    for name in ("anyio_backend", "run_id"):
        if name not in wanted:
            visible.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(body)
    def test(self: KitTestClass, **arguments: Any) -> None:
        anyio_backend = arguments["anyio_backend"]
        run_id = arguments["run_id"]
        for name in ("anyio_backend", "run_id"):
            if name not in wanted:
                del arguments[name]
        name = anyio_backend[0] if isinstance(anyio_backend, tuple) else anyio_backend
        reason = missing_loop(str(name))
        if reason is not None:
            pytest.skip(reason)
        run_on_own_loop(self._run_kit_test, body, run_id, arguments, anyio_backend=anyio_backend)

    # pytest reads the fixtures a test wants from its signature; the kit's own arguments are
    # not fixtures, and anyio_backend and run_id always are.
    test.__signature__ = inspect.Signature([parameters[0], *visible])  # type: ignore[attr-defined]
    marked: Callable[..., None] = _IGNORE_ASYNCIO_MARK(test)
    return marked


def convert_test_methods(cls: type) -> None:
    """Replace each ``async def test*`` defined on *cls* itself by its pytest test."""
    for name, value in list(vars(cls).items()):
        if name.startswith("test") and inspect.iscoroutinefunction(value):
            setattr(cls, name, as_pytest_test(value))


class KitTests:
    """The base of the kit's test classes: the hook a subclass implements (:meth:`make_backend`),
    the test's run id, and the runner that opens the kit's arguments on the test's own loop and
    closes every handle after it. Every ``async def test_*`` of a subclass becomes a pytest test.
    """

    #: How long a test waits for something that should happen promptly (seconds).
    timeout: ClassVar[float] = 10.0
    #: How long one whole test may take before it fails as hung (seconds).
    deadline: ClassVar[float] = 120.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        convert_test_methods(cls)

    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        """Return a new, open handle on the run *run_id* (each call a separate handle).

        Awaited on the test's own event loop, once per handle the test needs.
        """
        raise NotImplementedError(
            f"subclasses of {type(self).__name__} implement make_backend()"
        )

    @pytest.fixture
    def run_id(self) -> str:
        """A fresh run id per test, so tests never see each other's state."""
        return f"conformance-{uuid.uuid4().hex}"

    async def _run_kit_test(
        self, body: Callable[..., Awaitable[None]], run_id: str, arguments: dict[str, Any]
    ) -> None:
        """Await ``body(self, **arguments)`` with the kit's arguments, then close every handle."""
        handles: list[AsyncRendezvousBackend] = []

        async def open_handle(other_run_id: str | None = None) -> AsyncRendezvousBackend:
            handle = await self.make_backend(other_run_id or run_id)
            handles.append(handle)
            return handle

        wanted = inspect.signature(body).parameters
        finished = False
        try:
            with anyio.move_on_after(self.deadline) as scope:
                if "open_backend" in wanted:
                    arguments["open_backend"] = open_handle
                if "backend" in wanted:
                    arguments["backend"] = await open_handle()
                await body(self, **arguments)
            if scope.cancelled_caught:
                raise AssertionError(
                    f"{body.__name__} did not finish within {self.deadline} s "
                    f"({type(self).__name__}.deadline): a call on the backend hangs"
                )
            finished = True
        finally:
            with anyio.CancelScope(shield=True):
                for handle in handles:
                    try:
                        await handle.aclose()
                    except Exception:
                        if finished:
                            raise
                        # the test's own failure says more than a failed clean-up after it
