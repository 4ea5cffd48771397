"""Locks that a child made by ``os.fork()`` gets back unlocked.

``fork()`` copies only the thread that calls it. A :class:`threading.Lock` that another thread
held at that instant (a file handle's thread lock during a write, a memory store's lock during a
compare-and-swap, a change notifier's lock during a wake-up) is copied held, and no thread of the
child will ever release it: the child's first call that takes it hangs forever. The objects of
this package that a child may go on using register their locks with :func:`renew_in_child`; in
the child, before anything else runs, each is replaced by a new, unlocked lock.

What such a lock guarded may have been left half-changed by the parent thread that held it; the
owners keep their guarded state valid between single steps (each one atomic under the GIL) or
check it again in the child (the file backend reopens its lock file there).
"""

from __future__ import annotations

import os
import threading
import weakref

__all__ = ("renew_in_child",)

_owners: weakref.WeakKeyDictionary[object, tuple[str, ...]] = weakref.WeakKeyDictionary()
_owners_lock = threading.Lock()


def renew_in_child(owner: object, *names: str) -> None:
    """Give *owner* a new, unlocked :class:`threading.Lock` in each attribute of *names* in every
    child forked while *owner* lives (a module, for module-level locks, or any object that can be
    weakly referenced)."""
    with _owners_lock:
        _owners[owner] = _owners.get(owner, ()) + names


def _after_fork_in_child() -> None:
    # Only this thread exists: nothing can take a lock while they are replaced.
    global _owners_lock
    _owners_lock = threading.Lock()
    for owner, names in list(_owners.items()):
        for name in names:
            setattr(owner, name, threading.Lock())


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
