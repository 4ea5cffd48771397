"""Fork while other threads hold given locks: the child must not inherit them held."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any


def fork_with_locks_held(locks: list[Any], child: Callable[[], None]) -> int:
    """Fork while a thread holds every lock of *locks*; run *child* in the child, which SIGALRM
    ends if it hangs (10 s); return the child's exit code (0: *child* returned)."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    try:
        pid = os.fork()
        if pid == 0:  # the child: the holder thread does not exist here
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(10)
            code = 1
            try:
                child()
                code = 0
            finally:
                os._exit(code)
    finally:
        release.set()
        holder.join(30)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
