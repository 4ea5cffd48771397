"""Run the kit's coroutines on an event loop of its own, in a thread of its own.

The kit never borrows the event loop of whatever async pytest plugin a project has (anyio's,
pytest-asyncio in strict or auto mode, ...): each conformance test and each state-machine case
starts the loop it was asked for in a fresh thread. A fresh thread has no running loop, no
cached "current async library" and an empty context, so a plugin's loop, an anyio test runner
kept alive by an async fixture, or pytest-asyncio claiming every coroutine cannot put a trio
test on asyncio (or the reverse) -- the failure that used to surface as errors deep inside the
user's backend.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

__all__ = ("LOOPS", "loop_and_options", "missing_loop", "run_on_own_loop")

_T = TypeVar("_T")

LOOPS = ("asyncio", "trio")
"""The event loops the kit can run on (anyio's backends)."""


def loop_and_options(anyio_backend: object) -> tuple[str, dict[str, Any]]:
    """Split an ``anyio_backend`` value (``"trio"`` or ``("asyncio", {...})``, as anyio's pytest
    plugin accepts) into the loop's name and its options.

    :raises ValueError: the value names no loop the kit knows.
    """
    name: object = anyio_backend
    options: object = {}
    if isinstance(anyio_backend, tuple) and len(anyio_backend) == 2:
        name, options = anyio_backend
    if name not in LOOPS or not isinstance(options, dict):
        raise ValueError(
            f"anyio_backend must be one of {LOOPS} or a (name, options) tuple, "
            f"not {anyio_backend!r}"
        )
    assert isinstance(name, str)
    return name, options


def missing_loop(name: str) -> str | None:
    """Why the loop *name* cannot run in this environment, or ``None`` when it can.

    Asked only when a test is about to run on that loop, so importing it costs nothing extra.
    """
    if name != "trio":
        return None
    try:
        importlib.import_module("trio")
    except ImportError:
        return (
            "trio is not installed, so the trio half of the arendezvous test kit cannot run "
            "here (the asyncio half does): pip install 'arendezvous[testing]', or leave "
            "'trio' out of your anyio_backend fixture"
        )
    return None


def run_on_own_loop(
    function: Callable[..., Awaitable[_T]], *args: object, anyio_backend: object
) -> _T:
    """Run ``await function(*args)`` on a new *anyio_backend* loop in a new thread; return its
    result or raise its exception.

    The thread is a daemon, so an interrupted test run does not wait for it at exit.
    """
    name, options = loop_and_options(anyio_backend)
    outcome: list[_T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(anyio.run(function, *args, backend=name, backend_options=options))
        except BaseException as exc:  # re-raised in the calling thread, whatever it is
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"arendezvous-testing-{name}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        error = failure.pop()
        try:
            raise error
        finally:
            del error  # the traceback holds this frame: break the cycle
    return outcome[0]
