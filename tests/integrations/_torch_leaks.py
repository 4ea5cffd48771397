"""Run by ``test_torch_leaks.py`` in a fresh process: what the documented torch patterns leave.

``python _torch_leaks.py DOCS URL OUTPUT`` runs torch's own handler first (over torch's own
``HashStore``, with a ``TCPStore`` client of the round's server), so that whatever torch allocates
once per process (libuv's pipes, its logging) is there before anything is counted. Then, for each
case, it counts the process's threads (``/proc/self/task`` and ``threading.enumerate()``) and open
descriptors (``/proc/self/fd``, with what each points at) before the case, while its round is
held, and after it (see :func:`settled`), and writes the counts to OUTPUT as JSON for the test
to compare.

The cases:

* ``handler``: the python block of DOCS (``docs/torch.md``) under "torch's handler on an
  arendezvous store", run as written but with its Redis URL replaced by URL;
* ``plugin-arendezvous``, ``plugin-torch``: the torchrun handler from code, on each engine, used
  as a context manager.

Each case runs in a namespace of its own that is dropped afterwards, as a script's globals are
at its end; nothing calls the garbage collector, so an object that only a collection would
finalise counts as left behind.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch._C._distributed_c10d import HashStore, TCPStore
from torch.distributed.elastic.rendezvous import api as torch_api
from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import C10dRendezvousBackend
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import DynamicRendezvousHandler

from arendezvous.integrations.torch import ArendezvousHandler

DOCUMENTED_URL = "redis://127.0.0.1:6379/0"
HANDLER_SECTION = "## torch's handler on an arendezvous store"
SETTLE_SECONDS = 10.0

Snapshot = dict[str, Any]


def snapshot() -> Snapshot:
    """The process's threads and open descriptors, now."""
    descriptors: dict[str, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            descriptors[name] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # the descriptor listdir itself had open
            continue
    return {
        "tasks": len(os.listdir("/proc/self/task")),
        "threads": sorted(thread.name for thread in threading.enumerate()),
        "descriptors": descriptors,
    }


def settled(before: Snapshot) -> Snapshot:
    """A snapshot once the kernel has let go of the threads that have ended.

    ``Thread.join()`` (and ``pthread_join``) return as the thread finishes, a moment before the
    kernel removes its entry from ``/proc/self/task``, and nothing signals that removal. So the
    task count alone is read again until it is back to *before*'s, for at most
    ``SETTLE_SECONDS``; a thread left running never leaves, and fails the comparison. Python's
    threads and the descriptors are taken as they are at once.
    """
    now = snapshot()
    deadline = time.monotonic() + SETTLE_SECONDS
    while now["tasks"] > before["tasks"] and time.monotonic() < deadline:
        time.sleep(0.01)
        now["tasks"] = len(os.listdir("/proc/self/task"))
    return now


def documented_block(docs: Path) -> str:
    """The first python block after the handler section's heading."""
    text = docs.read_text(encoding="utf-8")
    start = text.index(HANDLER_SECTION)
    match = re.compile(r"^```python\n(.*?)^```", re.S | re.M).search(text, start)
    assert match is not None, f"no python block under {HANDLER_SECTION!r}"
    return match.group(1)


def torch_alone() -> None:
    """torch's handler over torch's own backend: torch's once-per-process allocations."""
    store = HashStore()
    handler = DynamicRendezvousHandler.from_backend(
        run_id="torch-alone", store=store, backend=C10dRendezvousBackend(store, "torch-alone"),
        min_nodes=1, max_nodes=1,
    )
    try:
        info = handler.next_rendezvous()
        bootstrap = info.bootstrap_store_info
        assert bootstrap is not None
        client = TCPStore(bootstrap.master_addr, bootstrap.master_port, is_master=False)
        client.set("k", "v")
        assert client.get("k") == b"v"
    finally:
        handler.shutdown()


PLUGIN = """
from torch.distributed.elastic.rendezvous import api
from arendezvous.integrations.torch import create_handler

params = api.RendezvousParameters("arendezvous", URL, RUN_ID, 1, 1, "127.0.0.1", engine=ENGINE)
with create_handler(params) as handler:
    info = handler.next_rendezvous()
    info.store.set("greeting", b"hello")
    assert info.store.get("greeting") == b"hello"
"""


def measured(code: str) -> dict[str, Snapshot]:
    """Run *code* in a namespace of its own; snapshots before, once its round is held, after."""
    counts = {"before": snapshot()}
    original: dict[type, Callable[[Any], torch_api.RendezvousInfo]] = {
        cls: cls.next_rendezvous for cls in (DynamicRendezvousHandler, ArendezvousHandler)
    }

    def recording(cls: type) -> Callable[[Any], torch_api.RendezvousInfo]:
        def next_rendezvous(self: Any) -> torch_api.RendezvousInfo:
            info: torch_api.RendezvousInfo = original[cls](self)
            counts.setdefault("during", snapshot())
            return info

        return next_rendezvous

    for cls in original:
        setattr(cls, "next_rendezvous", recording(cls))  # noqa: B010
    try:
        namespace: dict[str, Any] = {"__name__": "__main__"}
        exec(compile(code, "<case>", "exec"), namespace)
        namespace.clear()
        del namespace
    finally:
        for cls, method in original.items():
            setattr(cls, "next_rendezvous", method)  # noqa: B010
    counts["after"] = settled(counts["before"])
    return counts


def main() -> None:
    docs, url, output = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    torch_alone()
    block = documented_block(docs)
    assert DOCUMENTED_URL in block, f"the documented block no longer uses {DOCUMENTED_URL}"
    cases = {"handler": block.replace(DOCUMENTED_URL, url)}
    for engine in ("arendezvous", "torch"):
        cases[f"plugin-{engine}"] = (
            f"URL, RUN_ID, ENGINE = {url!r}, {'plugin-' + engine!r}, {engine!r}\n" + PLUGIN
        )
    results = {name: measured(code) for name, code in cases.items()}
    output.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
