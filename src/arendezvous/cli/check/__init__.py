"""``arendezvous check``: a Jepsen-style run of racing clients against a real store, under faults.

Clients do random reads and compare-and-swap writes (latest, stale, ``None`` and garbage tokens)
on a few fresh runs; the harness injects faults; every call is recorded
(:mod:`arendezvous.testing.history`) and the history is checked for linearizability
(:mod:`arendezvous.testing.linearizability`). The summary gives the operations, their outcomes,
the faults injected and the verdict, with the explanation of a violation. Exit status: 0 the
history is linearizable, 1 a violation, 2 no verdict (the checker's budget ran out, a worker
crashed, nothing succeeded) or a usage error.

Faults:

``none``
    clients are tasks of this process (any URL, ``memory://`` included).
``kill-server``
    for a server the harness starts itself (``--start redis|etcd|postgresql|seaweedfs``, on
    127.0.0.1 in a temp dir; SeaweedFS is an S3 store): SIGKILL it at random points of the run,
    keep it down a moment, start it again on the same port and data. Calls in flight fail or
    become unknown; clients wait for the restart and go on.
``kill-writer``
    clients are OS processes (``python -m arendezvous.cli.check._worker``), each recording to its
    own file; at random points the harness SIGKILLs one the moment it starts a write (or, now and
    then, one doing whatever it does), and starts a replacement with the rest of its operations.
    The killed process's pending call is unknown. Works on every store shared by processes
    (``file://`` above all); not on ``memory://``.

Every loop is bounded: by ``--ops`` and by ``--time-limit`` seconds (calls still running a grace
period later are cancelled or their process killed, and count as unknown).

The package holds one module per job: the options (``_options``), the servers it starts
(``_servers``) and kills (``_server_faults``), the fault schedule and record (``_faults``), the
operation budget (``_budget``), progress (``_progress``), a client's workload (``_workload``),
handles (``_handles``) and token codec (``_tokens``), clients as tasks (``_tasks``) or as worker
processes (``_worker``) run by the writer killer (``_writer_killer``), the report (``_report``),
the runner (``_run``) and the arguments (``_command``).
"""

from __future__ import annotations

from ._command import add_check_command, main
from ._handles import Opener
from ._options import FAULTS, CheckOptions, Faults, UsageError
from ._run import run_check
from ._tokens import DecodedToken, StoreTokenCodec

__all__ = (
    "FAULTS",
    "CheckOptions",
    "DecodedToken",
    "Faults",
    "Opener",
    "StoreTokenCodec",
    "UsageError",
    "add_check_command",
    "main",
    "run_check",
)
